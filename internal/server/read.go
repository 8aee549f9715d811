package server

import (
	"context"

	"google.golang.org/grpc"

	"github.com/startgate/startgate/internal/prefetch"
	pb "github.com/startgate/startgate/proto/startgate/v1"
)

// watchBuffer bounds what a slow watcher can make the gate hold; beyond
// it the gate drops events for that watcher and reports how many.
const watchBuffer = 256

func (s *Server) Status(context.Context, *pb.StatusRequest) (*pb.StatusResponse, error) {
	return statusToProto(s.gate.Status(), s.gate.Cores()), nil
}

// ListQueue answers in one message: 10,000 waiters are about 1 MB, well
// inside the default 4 MB message limit, and one message is far cheaper
// than a stream of 10,000.
func (s *Server) ListQueue(context.Context, *pb.ListQueueRequest) (*pb.ListQueueResponse, error) {
	q := s.gate.Queue()
	out := &pb.ListQueueResponse{Waiters: make([]*pb.Waiter, len(q))}
	for i, w := range q {
		out.Waiters[i] = waiterToProto(w)
	}
	return out, nil
}

func (s *Server) ListLeases(context.Context, *pb.ListLeasesRequest) (*pb.ListLeasesResponse, error) {
	ls := s.gate.Leases()
	out := &pb.ListLeasesResponse{Leases: make([]*pb.Lease, len(ls))}
	for i, l := range ls {
		out.Leases[i] = leaseToProto(l)
	}
	return out, nil
}

func (s *Server) Watch(_ *pb.WatchRequest, stream grpc.ServerStreamingServer[pb.Event]) error {
	events, unsubscribe := s.gate.Subscribe(watchBuffer)
	defer unsubscribe()
	// Prefetch's events come on a channel of their own; nil (prefetch off,
	// or its manager stopped) never delivers.
	var pfEvents <-chan prefetch.Event
	if sub, ok := s.prefetch.(prefetchSubscriber); ok {
		var cancel func()
		pfEvents, cancel = sub.Subscribe(watchBuffer)
		defer cancel()
	}
	// Headers go out once the subscriptions are in place, so a client that
	// waits for them (stream.Header()) misses no event after that.
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	ctx := stream.Context()
	for {
		select {
		case e, ok := <-events:
			if !ok {
				return nil // the gate closed
			}
			if err := stream.Send(eventToProto(e)); err != nil {
				return err
			}
		case e, ok := <-pfEvents:
			if !ok {
				pfEvents = nil // the manager stopped; the gate's events go on
				continue
			}
			if err := stream.Send(prefetchEventToProto(e)); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		case <-s.stopping:
			return nil
		}
	}
}
