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

// AcquireMany serves many tagged slots on one stream. The handler is the
// stream's only reader and the only goroutine while nothing is decided: a
// waiting tag is a gate.AcquireFunc entry, not a blocked goroutine, which
// is what lets 10,000 waiters fit in a small daemon. Decisions arrive on
// the gate's callback goroutines, which answer on the stream themselves;
// a held lease has one watcher goroutine to report its end, bounded by
// the in-flight limit (a lease's Done channel is the only signal of an
// operator's Release or the hold cap that the gate offers).
//
// When the stream ends every waiting tag is withdrawn and every held
// lease released, and the handler waits for the callbacks and watchers
// before it returns, so none touches the stream after.
func (s *Server) AcquireMany(stream grpc.BidiStreamingServer[pb.AcquireManyRequest, pb.AcquireManyResponse]) error {
	m := &manyStream{gate: s.gate, stream: stream, peers: s.peers, uid: peerUID(stream.Context())}
	m.mu.tags = make(map[uint64]*manyTag)
	if d, ok := stream.Context().Deadline(); ok {
		m.deadline = d
	}
	defer m.end()
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch msg := req.Msg.(type) {
		case *pb.AcquireManyRequest_Start:
			m.start(msg.Start)
		case *pb.AcquireManyRequest_Release:
			m.release(msg.Release.GetTag(), false)
		case *pb.AcquireManyRequest_Cancel:
			m.release(msg.Cancel.GetTag(), true)
		default:
			m.reply(errorResponse(0, invalid("msg", "empty message: set start, release or cancel")))
		}
	}
}

// manyStream is one AcquireMany stream's state.
type manyStream struct {
	gate   *admission.Gate
	stream grpc.BidiStreamingServer[pb.AcquireManyRequest, pb.AcquireManyResponse]
	// peers counts the caller's (uid's) live tags against its cap.
	peers *peers
	uid   uint32
	// deadline is the stream's gRPC deadline, zero if none: a start
	// without a deadline of its own gets it.
	deadline time.Time
	// wg counts the gate's callbacks still to run and the lease
	// watchers: the goroutines other than the handler that may send.
	wg sync.WaitGroup

	// Lock order: send, then mu. send is held across stream.Send and
	// across the state change the message reports, so that the answers
	// about a tag leave in the order its state changed. mu is never held
	// across a Send, so a client slow to read stalls senders, not the
	// bookkeeping. Calling the gate under either is safe: the gate never
	// calls back synchronously.
	send sync.Mutex
	mu   struct {
		sync.Mutex
		tags map[uint64]*manyTag // the live tags
		// closed: the stream is ending; answer nothing more, and
		// release what is granted from now on.
		closed bool
	}
}

// manyTag is one live tag. Its fields are guarded by manyStream.mu.
type manyTag struct {
	tag uint64
	// cancel withdraws the waiter; set once AcquireFunc returned.
	cancel func() bool
	// decided: the gate's callback has run.
	decided bool
	// withdrawn: the client cancelled it; a lease that arrives anyway
	// goes straight back.
	withdrawn bool
	lease     *admission.Lease // once granted
	// unwait gives the tag back to the caller's count of live tags; it
	// may be called more than once.
	unwait func()
}

func (m *manyStream) start(st *pb.AcquireManyStart) {
	tag := st.GetTag()
	if tag == 0 {
		m.reply(errorResponse(0, invalid("tag", "must not be 0")))
		return
	}
	req, err := requestFromFields(st.Class, st.Tenant, st.Description, st.Hold)
	if err != nil {
		m.reply(errorResponse(tag, err))
		return
	}
	switch {
	case st.Deadline != nil:
		if err := st.Deadline.CheckValid(); err != nil {
			m.reply(errorResponse(tag, invalid("deadline", "%v", err)))
			return
		}
		req.Deadline = st.Deadline.AsTime()
	default:
		req.Deadline = m.deadline
	}

	unwait, err := m.peers.waiter(m.uid)
	if err != nil {
		m.reply(errorResponse(tag, err))
		return
	}
	t := &manyTag{tag: tag, unwait: unwait}
	m.mu.Lock()
	if _, live := m.mu.tags[tag]; live {
		m.mu.Unlock()
		unwait()
		m.reply(errorResponse(tag, status.Errorf(codes.AlreadyExists, "server: tag %d is live already", tag)))
		return
	}
	m.mu.tags[tag] = t
	m.mu.Unlock()

	m.wg.Add(1)
	q, cancel := m.gate.AcquireFunc(req, func(l *admission.Lease, err error) {
		defer m.wg.Done()
		m.decided(t, l, err)
	})

	m.send.Lock()
	defer m.send.Unlock()
	m.mu.Lock()
	t.cancel = cancel
	decided := t.decided
	m.mu.Unlock()
	if decided || q.ID == 0 {
		return // the callback has answered, or is on its way with the decision
	}
	m.sendLocked(&pb.AcquireManyResponse{Tag: tag, Msg: &pb.AcquireManyResponse_Queued{Queued: &pb.Queued{
		Class: ClassToProto(req.Class), Position: int32(q.Position), QueueLength: int32(m.gate.Status().Queued),
		Enqueued: ts(q.Enqueued), WaiterId: q.ID,
	}}})
}

// decided is the gate's callback for t, on a goroutine of its own.
func (m *manyStream) decided(t *manyTag, l *admission.Lease, err error) {
	m.send.Lock()
	defer m.send.Unlock()
	m.mu.Lock()
	t.decided = true
	if m.mu.closed {
		m.mu.Unlock()
		// Nobody is left to hold it.
		if l != nil {
			l.Release()
		}
		return
	}
	if l != nil && t.withdrawn {
		// The grant and the client's cancel crossed.
		l.Release()
		l, err = nil, context.Canceled
	}
	if err != nil {
		delete(m.mu.tags, t.tag)
		m.mu.Unlock()
		t.unwait()
		if errors.Is(err, context.Canceled) {
			err = status.Error(codes.Canceled, "server: withdrawn by cancel")
		}
		m.sendLocked(errorResponse(t.tag, err))
		return
	}
	t.lease = l
	grantedAt := time.Now()
	m.wg.Add(1)
	m.mu.Unlock()
	go m.watch(t, l, grantedAt)
	info := l.Info()
	m.sendLocked(&pb.AcquireManyResponse{Tag: t.tag, Msg: &pb.AcquireManyResponse_Granted{Granted: &pb.Granted{
		LeaseId: info.ID, Reason: string(info.Reason), Waited: dur(info.Waited),
		Granted: ts(info.Granted), Expires: ts(info.Expires),
	}}})
}

// watch reports the end of t's lease: released (by this stream, an
// operator or shutdown) or expired.
func (m *manyStream) watch(t *manyTag, l *admission.Lease, grantedAt time.Time) {
	defer m.wg.Done()
	<-l.Done()
	reason := l.EndReason()
	held := dur(time.Since(grantedAt))
	m.send.Lock()
	defer m.send.Unlock()
	m.mu.Lock()
	closed := m.mu.closed
	if !closed {
		delete(m.mu.tags, t.tag)
	}
	m.mu.Unlock()
	t.unwait()
	if closed {
		return
	}
	id := l.ID()
	msg := &pb.AcquireManyResponse{Tag: t.tag}
	if reason == admission.ReleaseExpired {
		msg.Msg = &pb.AcquireManyResponse_Expired{Expired: &pb.Expired{LeaseId: id, Held: held}}
	} else {
		msg.Msg = &pb.AcquireManyResponse_Released{Released: &pb.Released{LeaseId: id, Reason: string(reason), Held: held}}
	}
	m.sendLocked(msg)
}

// release handles release (cancel false) and cancel of tag. The answer
// that ends the tag comes from the watcher or the callback.
func (m *manyStream) release(tag uint64, cancel bool) {
	m.mu.Lock()
	t := m.mu.tags[tag]
	switch {
	case t == nil:
		m.mu.Unlock()
		m.reply(errorResponse(tag, status.Errorf(codes.NotFound, "server: tag %d is not live", tag)))
	case t.lease != nil:
		l := t.lease
		m.mu.Unlock()
		l.Release()
	case !cancel:
		m.mu.Unlock()
		m.reply(errorResponse(tag, status.Errorf(codes.FailedPrecondition,
			"server: tag %d is not granted yet: cancel withdraws a waiting tag", tag)))
	case t.withdrawn:
		m.mu.Unlock() // cancelled twice: the first one's answer is on its way
	default:
		t.withdrawn = true
		withdraw := t.cancel
		m.mu.Unlock()
		// false means the callback is on its way; it sees withdrawn.
		withdraw()
	}
}

// end withdraws and releases everything the stream still has and waits
// for the goroutines that might send. Waiters go first: a slot released
// before them would be granted to one of them, only to come straight
// back.
func (m *manyStream) end() {
	m.mu.Lock()
	m.mu.closed = true
	tags := m.mu.tags
	m.mu.tags = nil
	var held []*admission.Lease
	var waiting []func() bool
	for _, t := range tags {
		t.unwait()
		// A callback that ran before closed was set has stored its
		// lease; one that runs after releases what it brings.
		switch {
		case t.lease != nil:
			held = append(held, t.lease)
		case t.cancel != nil:
			waiting = append(waiting, t.cancel)
		}
	}
	m.mu.Unlock()
	for _, withdraw := range waiting {
		withdraw()
	}
	for _, l := range held {
		l.Release()
	}
	m.wg.Wait()
}

func (m *manyStream) reply(msg *pb.AcquireManyResponse) {
	m.send.Lock()
	defer m.send.Unlock()
	m.sendLocked(msg)
}

// sendLocked sends with m.send held. An error means the stream is gone,
// and the handler's Recv fails too: that is where it is handled.
func (m *manyStream) sendLocked(msg *pb.AcquireManyResponse) {
	_ = m.stream.Send(msg)
}

// errorResponse is err as a TagError, its code as toStatus maps it.
func errorResponse(tag uint64, err error) *pb.AcquireManyResponse {
	st := status.Convert(toStatus(err))
	return &pb.AcquireManyResponse{Tag: tag, Msg: &pb.AcquireManyResponse_Error{Error: &pb.TagError{
		Code: int32(st.Code()), Message: st.Message(),
	}}}
}
