package server

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/startgate/startgate/internal/admission"
	pb "github.com/startgate/startgate/proto/startgate/v1"
)

type manyClient = pb.Startgate_AcquireManyClient

func openMany(t *testing.T, ctx context.Context, h *harness) manyClient {
	t.Helper()
	s, err := h.client.AcquireMany(ctx)
	if err != nil {
		t.Fatalf("AcquireMany: %v", err)
	}
	return s
}

func sendMany(t *testing.T, s manyClient, req *pb.AcquireManyRequest) {
	t.Helper()
	if err := s.Send(req); err != nil {
		t.Fatalf("Send(%v): %v", req, err)
	}
}

func startTag(tag uint64, class pb.Class, desc string) *pb.AcquireManyRequest {
	return &pb.AcquireManyRequest{Msg: &pb.AcquireManyRequest_Start{Start: &pb.AcquireManyStart{
		Tag: tag, Class: class, Tenant: "ci", Description: desc}}}
}

func releaseTag(tag uint64) *pb.AcquireManyRequest {
	return &pb.AcquireManyRequest{Msg: &pb.AcquireManyRequest_Release{Release: &pb.AcquireManyRelease{Tag: tag}}}
}

func cancelTag(tag uint64) *pb.AcquireManyRequest {
	return &pb.AcquireManyRequest{Msg: &pb.AcquireManyRequest_Cancel{Cancel: &pb.AcquireManyCancel{Tag: tag}}}
}

// recvKind receives until a message of the wanted kind arrives for tag,
// skipping queued answers (which may precede a grant that raced them).
func recvKind(t *testing.T, s manyClient, tag uint64, kind string) *pb.AcquireManyResponse {
	t.Helper()
	for {
		m, err := s.Recv()
		if err != nil {
			t.Fatalf("Recv: %v, want %s for tag %d", err, kind, tag)
		}
		if m.GetQueued() != nil && kind != "queued" {
			continue
		}
		if m.Tag != tag || manyKind(m) != kind {
			t.Fatalf("Recv: got %v, want %s for tag %d", m, kind, tag)
		}
		return m
	}
}

func manyKind(m *pb.AcquireManyResponse) string {
	switch m.Msg.(type) {
	case *pb.AcquireManyResponse_Queued:
		return "queued"
	case *pb.AcquireManyResponse_Granted:
		return "granted"
	case *pb.AcquireManyResponse_Released:
		return "released"
	case *pb.AcquireManyResponse_Expired:
		return "expired"
	case *pb.AcquireManyResponse_Error:
		return "error"
	}
	return "empty"
}

// Tags queue at a paused gate, then with one slot in flight are granted
// in arrival order, each once the one before is released by tag.
func TestAcquireManyQueuedGrantedInOrder(t *testing.T) {
	h := newHarness(t, false, func(p *admission.Policy) { p.FixedInFlight = 1 })
	h.gate.Pause()
	s := openMany(t, ctxT(t), h)
	const n = 5
	for tag := uint64(1); tag <= n; tag++ {
		sendMany(t, s, startTag(tag, pb.Class_CLASS_NORMAL, "job"))
		q := recvKind(t, s, tag, "queued").GetQueued()
		if q.Position != int32(tag) || q.QueueLength != int32(tag) || q.Class != pb.Class_CLASS_NORMAL {
			t.Errorf("tag %d queued = %v, want position and length %d, class normal", tag, q, tag)
		}
	}
	h.gate.Resume()
	g := recvKind(t, s, 1, "granted").GetGranted()
	for tag := uint64(1); tag <= n; tag++ {
		if g.Reason != "granted" {
			t.Errorf("tag %d granted = %v, want reason granted", tag, g)
		}
		if st := h.gate.Status(); st.InFlight != 1 || st.Queued != n-int(tag) {
			t.Errorf("after tag %d granted: in flight %d, queued %d; want 1 and %d", tag, st.InFlight, st.Queued, n-int(tag))
		}
		sendMany(t, s, releaseTag(tag))
		// The release and the next grant race to the stream.
		var released *pb.Released
		var next *pb.Granted
		for released == nil || (next == nil && tag < n) {
			m, err := s.Recv()
			switch {
			case err != nil:
				t.Fatalf("Recv after releasing tag %d: %v", tag, err)
			case m.Tag == tag && m.GetReleased() != nil:
				released = m.GetReleased()
			case m.Tag == tag+1 && m.GetGranted() != nil:
				next = m.GetGranted()
			default:
				t.Fatalf("Recv after releasing tag %d: got %v, want its released and tag %d granted", tag, m, tag+1)
			}
		}
		if released.LeaseId != g.LeaseId || released.Reason != "released" {
			t.Errorf("tag %d released = %v, want lease %d, reason released", tag, released, g.LeaseId)
		}
		if next != nil && next.LeaseId <= g.LeaseId {
			t.Errorf("tag %d granted lease %d, want one after tag %d's %d", tag+1, next.LeaseId, tag, g.LeaseId)
		}
		g = next
	}
	if st := h.gate.Status(); st.InFlight != 0 || st.Queued != 0 {
		t.Errorf("after all released: in flight %d, queued %d; want 0 and 0", st.InFlight, st.Queued)
	}
	// A tag is reusable once its last answer came.
	sendMany(t, s, startTag(1, pb.Class_CLASS_HIGH, "again"))
	recvKind(t, s, 1, "granted")
	s.CloseSend()
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("Recv after CloseSend = %v, want EOF", err)
	}
}

func TestAcquireManyCancel(t *testing.T) {
	h := newHarness(t, false, nil)
	h.gate.Pause()
	s := openMany(t, ctxT(t), h)
	sendMany(t, s, startTag(7, pb.Class_CLASS_LOW, "withdrawn"))
	sendMany(t, s, startTag(8, pb.Class_CLASS_LOW, "stays"))
	recvKind(t, s, 7, "queued")
	recvKind(t, s, 8, "queued")
	sendMany(t, s, cancelTag(7))
	e := recvKind(t, s, 7, "error").GetError()
	if codes.Code(e.Code) != codes.Canceled {
		t.Errorf("cancel answer = %v, want code Canceled", e)
	}
	if q := h.gate.Queue(); len(q) != 1 || q[0].Description != "stays" {
		t.Errorf("queue after cancel = %+v, want only the waiter of tag 8", q)
	}
	// Cancel of a tag granted meanwhile releases it.
	h.gate.Resume()
	recvKind(t, s, 8, "granted")
	sendMany(t, s, cancelTag(8))
	recvKind(t, s, 8, "released")
	if st := h.gate.Status(); st.InFlight != 0 || st.Queued != 0 {
		t.Errorf("in flight %d, queued %d; want 0 and 0", st.InFlight, st.Queued)
	}
}

// A bad message gets an error for its tag; the stream and the tags it
// holds go on.
func TestAcquireManyErrorsKeepTheStream(t *testing.T) {
	h := newHarness(t, false, nil)
	h.gate.Pause()
	s := openMany(t, ctxT(t), h)
	sendMany(t, s, startTag(1, pb.Class_CLASS_NORMAL, "live"))
	recvKind(t, s, 1, "queued")
	start := func(st *pb.AcquireManyStart) *pb.AcquireManyRequest {
		return &pb.AcquireManyRequest{Msg: &pb.AcquireManyRequest_Start{Start: st}}
	}
	for _, tc := range []struct {
		name string
		req  *pb.AcquireManyRequest
		tag  uint64
		code codes.Code
		says string
	}{
		{"duplicate tag", startTag(1, pb.Class_CLASS_NORMAL, "again"), 1, codes.AlreadyExists, "live"},
		{"tag 0", startTag(0, pb.Class_CLASS_NORMAL, ""), 0, codes.InvalidArgument, "tag"},
		{"unknown class", start(&pb.AcquireManyStart{Tag: 2, Class: 99}), 2, codes.InvalidArgument, "class"},
		{"long tenant", start(&pb.AcquireManyStart{Tag: 2, Tenant: strings.Repeat("t", 254)}), 2, codes.InvalidArgument, "tenant"},
		{"long description", start(&pb.AcquireManyStart{Tag: 2, Description: strings.Repeat("d", 1025)}), 2, codes.InvalidArgument, "description"},
		{"negative hold", start(&pb.AcquireManyStart{Tag: 2, Hold: durationpb.New(-time.Second)}), 2, codes.InvalidArgument, "hold"},
		{"bad deadline", start(&pb.AcquireManyStart{Tag: 2, Deadline: &timestamppb.Timestamp{Nanos: -1}}), 2, codes.InvalidArgument, "deadline"},
		{"empty message", &pb.AcquireManyRequest{}, 0, codes.InvalidArgument, "msg"},
		{"release unknown", releaseTag(3), 3, codes.NotFound, "not live"},
		{"cancel unknown", cancelTag(3), 3, codes.NotFound, "not live"},
		{"release waiting", releaseTag(1), 1, codes.FailedPrecondition, "cancel"},
	} {
		sendMany(t, s, tc.req)
		m, err := s.Recv()
		if err != nil {
			t.Fatalf("%s: Recv: %v, want an error message", tc.name, err)
		}
		e := m.GetError()
		if e == nil || m.Tag != tc.tag || codes.Code(e.Code) != tc.code || !strings.Contains(e.Message, tc.says) {
			t.Errorf("%s: got %v, want an error for tag %d, code %v, saying %q", tc.name, m, tc.tag, tc.code, tc.says)
		}
	}
	h.gate.Resume()
	recvKind(t, s, 1, "granted")
}

// When the stream goes, whichever way, every waiting tag leaves the
// queue and every held slot is released.
func TestAcquireManyStreamEndFreesAll(t *testing.T) {
	const held, waiting = 5, 100
	for _, tc := range []struct {
		name string
		end  func(cancel context.CancelFunc, h *harness, s manyClient)
	}{
		{"cancel", func(cancel context.CancelFunc, _ *harness, _ manyClient) { cancel() }},
		{"connection-closed", func(_ context.CancelFunc, h *harness, _ manyClient) { h.conn.Close() }},
		{"close-send", func(_ context.CancelFunc, _ *harness, s manyClient) { s.CloseSend() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, false, func(p *admission.Policy) { p.FixedInFlight = held })
			events, unsub := h.gate.Subscribe(4 * (held + waiting))
			defer unsub()
			ctx, cancel := context.WithCancel(ctxT(t))
			defer cancel()
			s := openMany(t, ctx, h)
			go func() {
				// Drain answers so that the server never blocks on Send.
				for {
					if _, err := s.Recv(); err != nil {
						return
					}
				}
			}()
			for tag := uint64(1); tag <= held+waiting; tag++ {
				sendMany(t, s, startTag(tag, pb.Class_CLASS_NORMAL, "batch"))
			}
			for got := 0; got < waiting; got++ {
				waitEvent(t, events, admission.EventQueued)
			}
			if st := h.gate.Status(); st.InFlight != held || st.Queued != waiting {
				t.Fatalf("before the stream ends: in flight %d, queued %d; want %d and %d", st.InFlight, st.Queued, held, waiting)
			}
			tc.end(cancel, h, s)
			for got := 0; got < waiting; got++ {
				waitEvent(t, events, admission.EventCancelled)
			}
			for got := 0; got < held; got++ {
				waitEvent(t, events, admission.EventReleased)
			}
			if st := h.gate.Status(); st.InFlight != 0 || st.Queued != 0 {
				t.Errorf("after the stream ended: in flight %d, queued %d; want 0 and 0", st.InFlight, st.Queued)
			}
		})
	}
}

func TestAcquireManyExpires(t *testing.T) {
	h := newHarness(t, false, nil)
	s := openMany(t, ctxT(t), h)
	sendMany(t, s, &pb.AcquireManyRequest{Msg: &pb.AcquireManyRequest_Start{Start: &pb.AcquireManyStart{
		Tag: 4, Hold: durationpb.New(time.Second)}}})
	g := recvKind(t, s, 4, "granted").GetGranted()
	h.clock.Step(2 * time.Second)
	if e := recvKind(t, s, 4, "expired").GetExpired(); e.LeaseId != g.LeaseId {
		t.Errorf("expired = %v, want lease %d", e, g.LeaseId)
	}
	// The tag is free again.
	sendMany(t, s, startTag(4, pb.Class_CLASS_NORMAL, ""))
	recvKind(t, s, 4, "granted")
}

// A tag's own deadline is the gate's deadline for it: at a paused gate
// it is admitted (or refused) once the deadline comes within the margin.
func TestAcquireManyDeadline(t *testing.T) {
	for _, tc := range []struct {
		name   string
		refuse bool
	}{{"admit", false}, {"refuse", true}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, false, func(p *admission.Policy) {
				p.DeadlineMargin = time.Second
				p.DeadlineRefuse = tc.refuse
			})
			h.gate.Pause()
			s := openMany(t, ctxT(t), h)
			deadline := h.clock.Now().Add(5 * time.Second)
			sendMany(t, s, &pb.AcquireManyRequest{Msg: &pb.AcquireManyRequest_Start{Start: &pb.AcquireManyStart{
				Tag: 9, Deadline: timestamppb.New(deadline)}}})
			sendMany(t, s, startTag(10, pb.Class_CLASS_NORMAL, "no deadline"))
			recvKind(t, s, 9, "queued")
			recvKind(t, s, 10, "queued")
			h.clock.Step(3 * time.Second)
			if q := h.gate.Status().Queued; q != 2 {
				t.Fatalf("queued 2s before the deadline = %d, want 2", q)
			}
			h.clock.Step(time.Second)
			if tc.refuse {
				e := recvKind(t, s, 9, "error").GetError()
				if codes.Code(e.Code) != codes.DeadlineExceeded {
					t.Errorf("refused = %v, want DeadlineExceeded", e)
				}
			} else if g := recvKind(t, s, 9, "granted").GetGranted(); g.Reason != "deadline" {
				t.Errorf("granted = %v, want reason deadline", g)
			}
			if q := h.gate.Queue(); len(q) != 1 || q[0].Description != "no deadline" {
				t.Errorf("queue = %+v, want only tag 10's waiter", q)
			}
		})
	}
}

// Shutdown: a waiting tag gets Unavailable, a held one released with
// reason shutdown, a new start Unavailable.
func TestAcquireManyShutdown(t *testing.T) {
	h := newHarness(t, false, func(p *admission.Policy) { p.FixedInFlight = 1 })
	s := openMany(t, ctxT(t), h)
	sendMany(t, s, startTag(1, pb.Class_CLASS_NORMAL, "held"))
	recvKind(t, s, 1, "granted")
	sendMany(t, s, startTag(2, pb.Class_CLASS_NORMAL, "waiting"))
	recvKind(t, s, 2, "queued")
	h.gate.Close()
	got := map[uint64]*pb.AcquireManyResponse{}
	for len(got) < 2 {
		m, err := s.Recv()
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		got[m.Tag] = m
	}
	if r := got[1].GetReleased(); r == nil || r.Reason != "shutdown" {
		t.Errorf("held tag at shutdown: %v, want released, reason shutdown", got[1])
	}
	if e := got[2].GetError(); e == nil || codes.Code(e.Code) != codes.Unavailable {
		t.Errorf("waiting tag at shutdown: %v, want error Unavailable", got[2])
	}
	sendMany(t, s, startTag(3, pb.Class_CLASS_NORMAL, "late"))
	if e := recvKind(t, s, 3, "error").GetError(); codes.Code(e.Code) != codes.Unavailable {
		t.Errorf("start after shutdown: %v, want Unavailable", e)
	}
	s.CloseSend()
}
