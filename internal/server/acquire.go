package server

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/startgate/startgate/internal/admission"
	pb "github.com/startgate/startgate/proto/startgate/v1"
)

const (
	maxTenant      = 253 // a DNS subdomain, the longest Kubernetes namespace-like name
	maxDescription = 1024
)

// queuedAfter is how long Acquire may take before the caller is told it
// is queued. The gate grants synchronously when it has capacity (a few
// microseconds); see queuedNotice.
const queuedAfter = 2 * time.Millisecond

func requestFromProto(m *pb.AcquireStart) (admission.Request, error) {
	c, ok := classFromProto(m.Class)
	if !ok {
		return admission.Request{}, invalid("class", "unknown class %d", m.Class)
	}
	if len(m.Tenant) > maxTenant {
		return admission.Request{}, invalid("tenant", "%d bytes, at most %d", len(m.Tenant), maxTenant)
	}
	if len(m.Description) > maxDescription {
		return admission.Request{}, invalid("description", "%d bytes, at most %d", len(m.Description), maxDescription)
	}
	var hold time.Duration
	if m.Hold != nil {
		if err := m.Hold.CheckValid(); err != nil {
			return admission.Request{}, invalid("hold", "%v", err)
		}
		hold = m.Hold.AsDuration()
		if hold < 0 {
			return admission.Request{}, invalid("hold", "negative duration %v", hold)
		}
	}
	return admission.Request{Class: c, Tenant: m.Tenant, Description: m.Description, Hold: hold}, nil
}

// Acquire holds a slot for the life of the stream. The handler calls the
// gate itself, so an uncontended grant costs no extra goroutine hand-off;
// a reader goroutine turns client messages (release, half-close, a dead
// stream) into clientDone, withdrawing a waiting request by cancelling
// its context, and a timer tells a caller that waits that it is queued.
// Sends are serialised by a mutex, since the timer's goroutine sends too.
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

	n := &queuedNotice{s: s, stream: stream, class: req.Class}
	n.mu.Lock()
	n.mu.timer = time.AfterFunc(queuedAfter, n.fire)
	n.mu.Unlock()
	lease, err := s.gate.Acquire(acqCtx, req)
	n.decide()
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

// queuedNotice sends "queued" from a timer while the handler waits in the
// gate. The gate's contract has no hook for "this request was queued",
// so a request still undecided after queuedAfter, with a non-empty
// queue, is reported queued.
type queuedNotice struct {
	s      *Server
	stream grpc.BidiStreamingServer[pb.AcquireRequest, pb.AcquireResponse]
	class  admission.Class

	mu struct {
		sync.Mutex
		timer   *time.Timer
		decided bool // the handler has its answer: no more sends here
	}
}

func (n *queuedNotice) fire() {
	// Status before the lock: it takes the gate's lock, and the handler
	// may hold n.mu while the gate decides.
	q := n.s.queuedInfo(n.class)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.decided {
		return
	}
	if q.QueueLength == 0 {
		// Not in the queue yet (or just granted): a slow scheduler, not
		// a wait. Look again later.
		n.mu.timer.Reset(queuedAfter)
		return
	}
	// A failed send means the stream is going; the reader sees that too.
	_ = n.stream.Send(&pb.AcquireResponse{Msg: &pb.AcquireResponse_Queued{Queued: q}})
}

// decide stops the notice; after it returns nothing sends but the
// handler.
func (n *queuedNotice) decide() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.mu.decided = true
	n.mu.timer.Stop()
}

func (s *Server) queuedInfo(c admission.Class) *pb.Queued {
	st := s.gate.Status()
	pos := 0
	for k := admission.Critical; k <= c; k++ {
		pos += st.QueuedByClass[k]
	}
	return &pb.Queued{Class: ClassToProto(c), Position: int32(pos), QueueLength: int32(st.Queued), Enqueued: ts(time.Now())}
}
