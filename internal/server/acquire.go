package server

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/startgate/startgate/internal/admission"
	pb "github.com/startgate/startgate/proto/startgate/v1"
)

const (
	maxTenant      = 253 // a DNS subdomain, the longest Kubernetes namespace-like name
	maxDescription = 1024
)

func requestFromProto(m *pb.AcquireStart) (admission.Request, error) {
	return requestFromFields(m.Class, m.Tenant, m.Description, m.Hold)
}

// requestFromFields checks the fields Acquire and AcquireMany share.
func requestFromFields(class pb.Class, tenant, description string, holdpb *durationpb.Duration) (admission.Request, error) {
	c, ok := classFromProto(class)
	if !ok {
		return admission.Request{}, invalid("class", "unknown class %d", class)
	}
	if len(tenant) > maxTenant {
		return admission.Request{}, invalid("tenant", "%d bytes, at most %d", len(tenant), maxTenant)
	}
	if len(description) > maxDescription {
		return admission.Request{}, invalid("description", "%d bytes, at most %d", len(description), maxDescription)
	}
	var hold time.Duration
	if holdpb != nil {
		if err := holdpb.CheckValid(); err != nil {
			return admission.Request{}, invalid("hold", "%v", err)
		}
		hold = holdpb.AsDuration()
		if hold < 0 {
			return admission.Request{}, invalid("hold", "negative duration %v", hold)
		}
	}
	return admission.Request{Class: c, Tenant: tenant, Description: description, Hold: hold}, nil
}

// Acquire holds a slot for the life of the stream. The handler calls the
// gate itself, so an uncontended grant costs no extra goroutine hand-off;
// a reader goroutine turns client messages (release, half-close, a dead
// stream) into clientDone, withdrawing a waiting request by cancelling
// its context.
// The reader ends once the handler has returned and gRPC has cancelled
// the stream's context.
func (s *Server) Acquire(stream grpc.BidiStreamingServer[pb.AcquireRequest, pb.AcquireResponse]) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return invalid("start", "stream closed before the first message")
	}
	if err != nil {
		return err
	}
	start := first.GetStart()
	if start == nil {
		return invalid("start", "the first message must carry start")
	}
	req, err := requestFromProto(start)
	if err != nil {
		return err
	}

	acqCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	clientDone := make(chan struct{})
	go func() {
		defer close(clientDone)
		defer cancel()
		for {
			m, err := stream.Recv()
			if err != nil || m.GetRelease() != nil {
				return
			}
			// A second start is ignored: one stream, one slot.
		}
	}()

	// OnQueued runs on this goroutine before the gate blocks, so the
	// handler is the only sender on the stream.
	req.OnQueued = func(w admission.WaiterInfo) {
		_ = stream.Send(&pb.AcquireResponse{Msg: &pb.AcquireResponse_Queued{Queued: &pb.Queued{
			Class: ClassToProto(w.Class), Position: int32(w.Position), QueueLength: int32(s.gate.Status().Queued),
			Enqueued: ts(w.Enqueued), WaiterId: w.ID,
		}}})
	}
	lease, err := s.gate.Acquire(acqCtx, req)
	if err != nil {
		select {
		case <-clientDone:
			if ctx.Err() == nil {
				return status.Error(codes.Canceled, "server: request withdrawn before it was granted")
			}
		default:
		}
		return err
	}

	grantedAt := time.Now()
	info := lease.Info()
	if err := stream.Send(&pb.AcquireResponse{Msg: &pb.AcquireResponse_Granted{Granted: &pb.Granted{
		LeaseId: info.ID,
		Reason:  string(info.Reason),
		Waited:  dur(info.Waited),
		Granted: ts(info.Granted),
		Expires: ts(info.Expires),
	}}}); err != nil {
		lease.Release()
		return err
	}

	select {
	case <-clientDone:
		lease.Release()
	case <-lease.Done():
	}
	held := dur(time.Since(grantedAt))
	var msg *pb.AcquireResponse
	if reason := lease.EndReason(); reason == admission.ReleaseExpired {
		msg = &pb.AcquireResponse{Msg: &pb.AcquireResponse_Expired{Expired: &pb.Expired{LeaseId: info.ID, Held: held}}}
	} else {
		msg = &pb.AcquireResponse{Msg: &pb.AcquireResponse_Released{Released: &pb.Released{LeaseId: info.ID, Reason: string(reason), Held: held}}}
	}
	// The client may be gone already (that is how this lease ended):
	// nothing is left to tell it.
	_ = stream.Send(msg)
	return nil
}
