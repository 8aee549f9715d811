package server

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"k8s.io/utils/clock"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/startgate/startgate/internal/admission"
	pb "github.com/startgate/startgate/proto/startgate/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitFor bounds every wait in these tests: nothing sleeps to assert.
const waitFor = 10 * time.Second

type harness struct {
	gate   *admission.Gate
	clock  *testingclock.FakeClock
	srv    *Server
	conn   *grpc.ClientConn
	client pb.StartgateClient
	sock   string
}

// newHarness serves a real gate over a real unix socket. The gate's clock
// is manual (leases expire only when a test advances it) unless real is
// set; pressure is nil, so the static limits apply.
func newHarness(t testing.TB, real bool, policy func(p *admission.Policy), opts ...func(*Config)) *harness {
	t.Helper()
	p := admission.DefaultPolicy()
	// Rate pinned high so that the token bucket never decides a test.
	p.FixedRate = 1e6
	p.Burst = 1000
	if policy != nil {
		policy(&p)
	}
	h := &harness{}
	var clk clock.WithTickerAndDelayedExecution = clock.RealClock{}
	if !real {
		h.clock = testingclock.NewFakeClock(time.Now())
		clk = h.clock
	}
	g, err := admission.New(admission.Config{Clock: clk, Policy: p, Cores: 2})
	if err != nil {
		t.Fatalf("admission.New: %v", err)
	}
	h.gate = g
	cfg := Config{Gate: g, Logger: zap.NewNop(), AdminGID: -1}
	for _, o := range opts {
		o(&cfg)
	}
	h.srv, err = New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.sock = filepath.Join(t.TempDir(), "sg.sock")
	lis, err := net.Listen("unix", h.sock)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- h.srv.Serve(lis) }()
	h.conn, err = grpc.NewClient("unix://"+h.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	h.client = pb.NewStartgateClient(h.conn)
	t.Cleanup(func() {
		h.conn.Close()
		g.Close()
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		h.srv.Stop(ctx)
		if err := <-served; err != nil {
			t.Errorf("Serve returned %v after Stop, want nil", err)
		}
	})
	return h
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

func start(class pb.Class, tenant, desc string) *pb.AcquireRequest {
	return &pb.AcquireRequest{Msg: &pb.AcquireRequest_Start{Start: &pb.AcquireStart{Class: class, Tenant: tenant, Description: desc}}}
}

func recvGranted(t *testing.T, s pb.Startgate_AcquireClient) *pb.Granted {
	t.Helper()
	m, err := s.Recv()
	if err != nil {
		t.Fatalf("Recv: %v, want granted", err)
	}
	g := m.GetGranted()
	if g == nil {
		t.Fatalf("Recv: got %v, want granted", m)
	}
	return g
}

// waitEvent waits for an event of type typ on a gate subscription.
func waitEvent(t *testing.T, events <-chan admission.Event, typ admission.EventType) admission.Event {
	t.Helper()
	timeout := time.After(waitFor)
	for {
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatalf("subscription closed waiting for %s", typ)
			}
			if e.Type == typ {
				return e
			}
		case <-timeout:
			t.Fatalf("no %s event within %v", typ, waitFor)
		}
	}
}

func inFlight(t *testing.T, h *harness) int32 {
	t.Helper()
	st, err := h.client.Status(ctxT(t), &pb.StatusRequest{})
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	return st.InFlight
}

func TestAcquireGrantReleaseByCloseSend(t *testing.T) {
	for _, tc := range []struct {
		name   string
		class  pb.Class
		reason string
		closer func(s pb.Startgate_AcquireClient) error
	}{
		{"close-send", pb.Class_CLASS_NORMAL, "granted", func(s pb.Startgate_AcquireClient) error { return s.CloseSend() }},
		{"release-message", pb.Class_CLASS_LOW, "granted", func(s pb.Startgate_AcquireClient) error {
			return s.Send(&pb.AcquireRequest{Msg: &pb.AcquireRequest_Release{Release: &pb.AcquireRelease{}}})
		}},
		{"critical-bypass", pb.Class_CLASS_CRITICAL, "bypass", func(s pb.Startgate_AcquireClient) error { return s.CloseSend() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, false, nil)
			s, err := h.client.Acquire(ctxT(t))
			if err != nil {
				t.Fatalf("Acquire: %v", err)
			}
			if err := s.Send(start(tc.class, "ns1", "create container web")); err != nil {
				t.Fatalf("Send: %v", err)
			}
			g := recvGranted(t, s)
			if g.LeaseId == 0 || g.Reason != tc.reason || g.Expires == nil {
				t.Errorf("granted = %v, want a lease id, reason %q and an expiry", g, tc.reason)
			}
			if got := inFlight(t, h); got != 1 {
				t.Errorf("in_flight while held = %d, want 1", got)
			}
			ls, err := h.client.ListLeases(ctxT(t), &pb.ListLeasesRequest{})
			if err != nil || len(ls.Leases) != 1 || ls.Leases[0].Tenant != "ns1" {
				t.Errorf("ListLeases = %v, %v; want one lease of tenant ns1", ls, err)
			}
			if err := tc.closer(s); err != nil {
				t.Fatalf("release: %v", err)
			}
			m, err := s.Recv()
			if err != nil || m.GetReleased() == nil || m.GetReleased().LeaseId != g.LeaseId || m.GetReleased().Reason != "released" {
				t.Fatalf("after release Recv = %v, %v; want released of lease %d", m, err, g.LeaseId)
			}
			if _, err := s.Recv(); !errors.Is(err, io.EOF) {
				t.Fatalf("final Recv = %v, want EOF", err)
			}
			if got := inFlight(t, h); got != 0 {
				t.Errorf("in_flight after release = %d, want 0", got)
			}
		})
	}
}

func TestReleaseWhenClientGoes(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(cancel context.CancelFunc, h *harness)
	}{
		{"cancel", func(cancel context.CancelFunc, _ *harness) { cancel() }},
		{"connection-closed", func(_ context.CancelFunc, h *harness) { h.conn.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, false, nil)
			events, unsub := h.gate.Subscribe(64)
			defer unsub()
			ctx, cancel := context.WithCancel(ctxT(t))
			defer cancel()
			s, err := h.client.Acquire(ctx)
			if err != nil {
				t.Fatalf("Acquire: %v", err)
			}
			if err := s.Send(start(pb.Class_CLASS_HIGH, "", "x")); err != nil {
				t.Fatalf("Send: %v", err)
			}
			recvGranted(t, s)
			tc.end(cancel, h)
			waitEvent(t, events, admission.EventReleased)
			if got := h.gate.Status().InFlight; got != 0 {
				t.Errorf("in_flight after the client went = %d, want 0", got)
			}
		})
	}
}

func TestQueuedThenGrantedAfterResume(t *testing.T) {
	h := newHarness(t, false, nil)
	if _, err := h.client.Pause(ctxT(t), &pb.PauseRequest{}); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	s, err := h.client.Acquire(ctxT(t))
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if err := s.Send(start(pb.Class_CLASS_LOW, "t", "queued one")); err != nil {
		t.Fatalf("Send: %v", err)
	}
	m, err := s.Recv()
	if err != nil || m.GetQueued() == nil {
		t.Fatalf("Recv = %v, %v; want queued", m, err)
	}
	if q := m.GetQueued(); q.Position != 1 || q.QueueLength != 1 || q.Class != pb.Class_CLASS_LOW {
		t.Errorf("queued = %v, want position 1 of 1, class low", q)
	}
	lq, err := h.client.ListQueue(ctxT(t), &pb.ListQueueRequest{})
	if err != nil || len(lq.Waiters) != 1 || lq.Waiters[0].Description != "queued one" || lq.Waiters[0].Position != 1 {
		t.Errorf("ListQueue = %v, %v; want the one waiter", lq, err)
	}
	st, err := h.client.Status(ctxT(t), &pb.StatusRequest{})
	if err != nil || !st.Paused || st.QueueLength != 1 || st.QueuedByClass[admission.Low].Count != 1 {
		t.Errorf("Status = %v, %v; want paused with one low waiter", st, err)
	}
	if _, err := h.client.Resume(ctxT(t), &pb.ResumeRequest{}); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	recvGranted(t, s)
	s.CloseSend()
	for {
		if _, err := s.Recv(); err != nil {
			break
		}
	}
}

func TestWithdrawWhileQueued(t *testing.T) {
	h := newHarness(t, false, nil)
	h.gate.Pause()
	events, unsub := h.gate.Subscribe(64)
	defer unsub()
	s, err := h.client.Acquire(ctxT(t))
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	s.Send(start(pb.Class_CLASS_NORMAL, "", ""))
	waitEvent(t, events, admission.EventQueued)
	s.CloseSend()
	for {
		m, err := s.Recv()
		if err == nil && m.GetQueued() != nil {
			continue
		}
		if status.Code(err) != codes.Canceled {
			t.Fatalf("Recv after withdrawing = %v, %v; want Canceled", m, err)
		}
		break
	}
	waitEvent(t, events, admission.EventCancelled)
	if got := h.gate.Status().Queued; got != 0 {
		t.Errorf("queued after withdrawal = %d, want 0", got)
	}
}

func TestAcquireInvalid(t *testing.T) {
	h := newHarness(t, false, nil)
	for _, tc := range []struct {
		name  string
		req   *pb.AcquireRequest
		field string
	}{
		{"unknown class", &pb.AcquireRequest{Msg: &pb.AcquireRequest_Start{Start: &pb.AcquireStart{Class: 99}}}, "class"},
		{"long tenant", &pb.AcquireRequest{Msg: &pb.AcquireRequest_Start{Start: &pb.AcquireStart{Tenant: strings.Repeat("t", 254)}}}, "tenant"},
		{"long description", &pb.AcquireRequest{Msg: &pb.AcquireRequest_Start{Start: &pb.AcquireStart{Description: strings.Repeat("d", 1025)}}}, "description"},
		{"negative hold", &pb.AcquireRequest{Msg: &pb.AcquireRequest_Start{Start: &pb.AcquireStart{Hold: durationpb.New(-time.Second)}}}, "hold"},
		{"release first", &pb.AcquireRequest{Msg: &pb.AcquireRequest_Release{Release: &pb.AcquireRelease{}}}, "start"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := h.client.Acquire(ctxT(t))
			if err != nil {
				t.Fatalf("Acquire: %v", err)
			}
			s.Send(tc.req)
			_, err = s.Recv()
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.field) {
				t.Errorf("got %v, want InvalidArgument naming %q", err, tc.field)
			}
		})
	}
}

func TestQueueFull(t *testing.T) {
	h := newHarness(t, false, func(p *admission.Policy) { p.MaxQueue = 1 })
	h.gate.Pause()
	first, err := h.client.Acquire(ctxT(t))
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	first.Send(start(pb.Class_CLASS_NORMAL, "", "first"))
	if m, err := first.Recv(); err != nil || m.GetQueued() == nil {
		t.Fatalf("first Recv = %v, %v; want queued", m, err)
	}
	second, err := h.client.Acquire(ctxT(t))
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	second.Send(start(pb.Class_CLASS_NORMAL, "", "second"))
	_, err = second.Recv()
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "queue full") || !strings.Contains(err.Error(), "1 waiters") {
		t.Errorf("second Recv = %v, want ResourceExhausted saying the queue is full at 1", err)
	}
}

func TestAdminCalls(t *testing.T) {
	h := newHarness(t, false, nil)
	ctx := ctxT(t)

	if _, err := h.client.Release(ctx, &pb.ReleaseRequest{LeaseId: 12345}); status.Code(err) != codes.NotFound {
		t.Errorf("Release(unknown) = %v, want NotFound", err)
	}
	if _, err := h.client.Release(ctx, &pb.ReleaseRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("Release(0) = %v, want InvalidArgument", err)
	}

	// Release by ID ends a stream's lease: the holder hears released.
	s, _ := h.client.Acquire(ctx)
	s.Send(start(pb.Class_CLASS_NORMAL, "", ""))
	g := recvGranted(t, s)
	if _, err := h.client.Release(ctx, &pb.ReleaseRequest{LeaseId: g.LeaseId}); err != nil {
		t.Fatalf("Release(%d): %v", g.LeaseId, err)
	}
	if m, err := s.Recv(); err != nil || m.GetReleased() == nil {
		t.Errorf("holder Recv after admin release = %v, %v; want released", m, err)
	}

	in, rate, q := int32(3), 42.0, int32(77)
	resp, err := h.client.SetPolicy(ctx, &pb.SetPolicyRequest{
		InFlight: &in, Rate: &rate, MaxQueue: &q,
		DeadlineMargin: durationpb.New(3 * time.Second), OnDeadline: pb.OnDeadline_ON_DEADLINE_REFUSE,
	})
	if err != nil {
		t.Fatalf("SetPolicy: %v", err)
	}
	if p := resp.Policy; p.FixedInFlight != 3 || p.FixedRate != 42 || p.MaxQueue != 77 ||
		p.DeadlineMargin.AsDuration() != 3*time.Second || p.OnDeadline != pb.OnDeadline_ON_DEADLINE_REFUSE {
		t.Errorf("SetPolicy returned %v, want the fields set", p)
	}
	st, _ := h.client.Status(ctx, &pb.StatusRequest{})
	if st.InFlightLimit != 3 || st.Rate != 42 || st.ControllerState != "manual" {
		t.Errorf("Status after SetPolicy: limit %d rate %v state %q, want 3, 42, manual", st.InFlightLimit, st.Rate, st.ControllerState)
	}
	resp, err = h.client.SetPolicy(ctx, &pb.SetPolicyRequest{Auto: true})
	if err != nil || resp.Policy.FixedInFlight != 0 || resp.Policy.FixedRate != 0 {
		t.Errorf("SetPolicy(auto) = %v, %v; want both unpinned", resp, err)
	}
	bad := -0.5
	_, err = h.client.SetPolicy(ctx, &pb.SetPolicyRequest{CpuTarget: &bad})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "cpu") {
		t.Errorf("SetPolicy(cpu_target -0.5) = %v, want InvalidArgument naming cpu", err)
	}
	// Values that would overflow or freeze the gate are refused, naming
	// the field and its range.
	tiny, huge := 1e-300, 1e300
	for _, tc := range []struct {
		req  *pb.SetPolicyRequest
		want string
	}{
		{&pb.SetPolicyRequest{Rate: &tiny}, "limits.rate: 1e-300 out of range"},
		{&pb.SetPolicyRequest{MaxInFlightPerCore: &huge}, "limits.max_inflight_per_core: 1e+300 out of range (0, 64]"},
		{&pb.SetPolicyRequest{Aging: durationpb.New(900000 * time.Hour)}, "aging: 900000h0m0s out of range [1ms, 1h0m0s]"},
	} {
		_, err = h.client.SetPolicy(ctx, tc.req)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("SetPolicy(%v) = %v, want InvalidArgument containing %q", tc.req, err, tc.want)
		}
	}
	if p := h.gate.Status().Policy; p.MaxQueue != 77 {
		t.Errorf("policy changed by a refused update: max_queue %d, want 77", p.MaxQueue)
	}

	// Drain with a lease held waits until the call's deadline.
	s2, _ := h.client.Acquire(ctx)
	s2.Send(start(pb.Class_CLASS_CRITICAL, "", ""))
	recvGranted(t, s2)
	dctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := h.client.Drain(dctx, &pb.DrainRequest{}); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("Drain with a lease held = %v, want DeadlineExceeded", err)
	}
	s2.CloseSend()
	if _, err := h.client.Drain(ctx, &pb.DrainRequest{}); err != nil {
		t.Errorf("Drain after release = %v, want nil", err)
	}
	st, _ = h.client.Status(ctx, &pb.StatusRequest{})
	if !st.Paused || !st.Draining || st.InFlight != 0 {
		t.Errorf("Status after drain: paused %v draining %v in_flight %d; want true true 0", st.Paused, st.Draining, st.InFlight)
	}
}

func TestLeaseExpires(t *testing.T) {
	h := newHarness(t, false, nil)
	s, _ := h.client.Acquire(ctxT(t))
	s.Send(&pb.AcquireRequest{Msg: &pb.AcquireRequest_Start{Start: &pb.AcquireStart{Hold: durationpb.New(time.Second)}}})
	g := recvGranted(t, s)
	h.clock.Step(2 * time.Second)
	m, err := s.Recv()
	if err != nil || m.GetExpired() == nil || m.GetExpired().LeaseId != g.LeaseId {
		t.Fatalf("Recv after the hold cap = %v, %v; want expired", m, err)
	}
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("Recv after expired = %v, want EOF", err)
	}
}

func TestWatch(t *testing.T) {
	h := newHarness(t, false, nil)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	w, err := h.client.Watch(ctx, &pb.WatchRequest{})
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	if _, err := w.Header(); err != nil {
		t.Fatalf("Header: %v", err)
	}
	h.gate.Pause()
	s, _ := h.client.Acquire(ctx)
	s.Send(start(pb.Class_CLASS_HIGH, "ns", "watched"))
	h.gate.Resume()
	want := []pb.EventType{pb.EventType_EVENT_TYPE_PAUSED, pb.EventType_EVENT_TYPE_QUEUED, pb.EventType_EVENT_TYPE_RESUMED, pb.EventType_EVENT_TYPE_GRANTED}
	// Resume may come before the queued event reaches the gate: accept
	// both orders, in which case the grant is immediate.
	var got []pb.EventType
	for len(got) < 3 || got[len(got)-1] != pb.EventType_EVENT_TYPE_GRANTED {
		e, err := w.Recv()
		if err != nil {
			t.Fatalf("Watch Recv: %v (got %v so far)", err, got)
		}
		got = append(got, e.Type)
		if e.Type == pb.EventType_EVENT_TYPE_GRANTED && (e.Description != "watched" || e.Tenant != "ns" || e.Class != pb.Class_CLASS_HIGH) {
			t.Errorf("granted event = %v, want tenant ns, class high, description watched", e)
		}
	}
	if got[0] != want[0] {
		t.Errorf("events = %v, want %v first", got, want[0])
	}
	// The stream ends when the gate closes.
	h.gate.Close()
	for {
		if _, err := w.Recv(); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Errorf("Watch end = %v, want EOF when the gate closes", err)
			}
			break
		}
	}
}

func TestSetBypass(t *testing.T) {
	h := newHarness(t, false, nil)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	w, err := h.client.Watch(ctx, &pb.WatchRequest{})
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	if _, err := w.Header(); err != nil {
		t.Fatalf("Header: %v", err)
	}

	st, err := h.client.SetBypass(ctx, &pb.SetBypassRequest{On: true})
	if err != nil {
		t.Fatalf("SetBypass(on): %v", err)
	}
	if !st.Bypassed || !h.gate.Bypassed() {
		t.Errorf("after SetBypass(on): status bypassed %v, gate bypassed %v; want true, true", st.Bypassed, h.gate.Bypassed())
	}
	// A paused gate still grants at once while bypassed.
	h.gate.Pause()
	s, _ := h.client.Acquire(ctx)
	s.Send(start(pb.Class_CLASS_LOW, "", "bypassed"))
	if g := recvGranted(t, s); g.Reason != "bypass" {
		t.Errorf("grant while bypassed: reason %q, want bypass", g.Reason)
	}
	s.CloseSend()
	h.gate.Resume()

	st, err = h.client.SetBypass(ctx, &pb.SetBypassRequest{On: false})
	if err != nil || st.Bypassed || h.gate.Bypassed() {
		t.Errorf("SetBypass(off) = bypassed %v, %v (gate %v); want false, nil", st.GetBypassed(), err, h.gate.Bypassed())
	}
	if got, _ := h.client.Status(ctx, &pb.StatusRequest{}); got.GetBypassed() {
		t.Errorf("Status after SetBypass(off): bypassed true, want false")
	}

	// Both switches reach watchers, by enum and by name.
	want := map[pb.EventType]string{
		pb.EventType_EVENT_TYPE_BYPASS_ON:  "bypass-on",
		pb.EventType_EVENT_TYPE_BYPASS_OFF: "bypass-off",
	}
	for len(want) > 0 {
		e, err := w.Recv()
		if err != nil {
			t.Fatalf("Watch Recv: %v, still waiting for %v", err, want)
		}
		if name, ok := want[e.Type]; ok {
			if e.TypeName != name {
				t.Errorf("event %v: type_name %q, want %q", e.Type, e.TypeName, name)
			}
			delete(want, e.Type)
		}
	}
}

func TestEventToProtoUnknownType(t *testing.T) {
	// Every type admission defines has an enum value; one it adds later
	// must pass by name, not panic or vanish.
	for _, typ := range []admission.EventType{
		admission.EventQueued, admission.EventGranted, admission.EventReleased, admission.EventExpired,
		admission.EventCancelled, admission.EventRefused, admission.EventLimits, admission.EventPaused,
		admission.EventResumed, admission.EventDraining, admission.EventShutdown, admission.EventBypassOn,
		admission.EventBypassOff, admission.EventLost,
	} {
		e := eventToProto(admission.Event{Type: typ})
		if e.Type == pb.EventType_EVENT_TYPE_UNSPECIFIED || e.TypeName != string(typ) {
			t.Errorf("eventToProto(%s) = type %v name %q, want a defined enum and name %q", typ, e.Type, e.TypeName, typ)
		}
	}
	e := eventToProto(admission.Event{Type: "from-the-future", Seq: 7})
	if e.Type != pb.EventType_EVENT_TYPE_UNSPECIFIED || e.TypeName != "from-the-future" || e.Seq != 7 {
		t.Errorf("eventToProto(unknown) = type %v name %q seq %d, want UNSPECIFIED, from-the-future, 7", e.Type, e.TypeName, e.Seq)
	}
}

func TestHealthAndStop(t *testing.T) {
	h := newHarness(t, false, nil)
	hc := healthpb.NewHealthClient(h.conn)
	r, err := hc.Check(ctxT(t), &healthpb.HealthCheckRequest{Service: "startgate.v1.Startgate"})
	if err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v; want SERVING", r, err)
	}
	hctx, hcancel := context.WithCancel(ctxT(t))
	defer hcancel()
	hw, err := hc.Watch(hctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("health Watch: %v", err)
	}
	if r, err := hw.Recv(); err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health Watch first = %v, %v; want SERVING", r, err)
	}
	stopped := make(chan struct{})
	go func() {
		h.srv.Stop(ctxT(t))
		close(stopped)
	}()
	r, err = hw.Recv()
	if err == nil && r.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health after Stop = %v, want NOT_SERVING", r)
	}
	// Graceful stop waits for open streams, this one included.
	hcancel()
	<-stopped
}

func TestAuthorize(t *testing.T) {
	const admin = 990
	groups := func(pid int32) ([]uint32, error) {
		switch pid {
		case 100:
			return []uint32{5, admin}, nil
		case 200:
			return []uint32{5, 6}, nil
		}
		return nil, errors.New("no such process")
	}
	for _, tc := range []struct {
		name     string
		method   string
		cred     PeerCred
		adminGID int
		allow    bool
	}{
		{"root mutates", "/startgate.v1.Startgate/Pause", PeerCred{UID: 0, GID: 0}, admin, true},
		{"root-only root", "/startgate.v1.Startgate/SetPolicy", PeerCred{UID: 0}, -1, true},
		{"primary admin group", "/startgate.v1.Startgate/Acquire", PeerCred{UID: 1000, GID: admin}, admin, true},
		{"supplementary admin group", "/startgate.v1.Startgate/Release", PeerCred{PID: 100, UID: 1000, GID: 1000}, admin, true},
		{"not in group", "/startgate.v1.Startgate/Drain", PeerCred{PID: 200, UID: 1000, GID: 1000}, admin, false},
		{"process gone", "/startgate.v1.Startgate/Resume", PeerCred{PID: 300, UID: 1000, GID: 1000}, admin, false},
		{"acquire many needs admin", "/startgate.v1.Startgate/AcquireMany", PeerCred{PID: 200, UID: 1000, GID: 1000}, admin, false},
		{"admin group acquires many", "/startgate.v1.Startgate/AcquireMany", PeerCred{UID: 1000, GID: admin}, admin, true},
		{"root only, admin group ignored", "/startgate.v1.Startgate/Acquire", PeerCred{UID: 1000, GID: admin}, -1, false},
		{"read status", "/startgate.v1.Startgate/Status", PeerCred{UID: 1000, GID: 1000}, admin, true},
		{"read queue", "/startgate.v1.Startgate/ListQueue", PeerCred{UID: 1000}, -1, true},
		{"read leases", "/startgate.v1.Startgate/ListLeases", PeerCred{UID: 1000}, -1, true},
		{"watch", "/startgate.v1.Startgate/Watch", PeerCred{UID: 1000}, -1, true},
		{"health", "/grpc.health.v1.Health/Check", PeerCred{UID: 1000}, -1, true},
		{"reflection", "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", PeerCred{UID: 1000}, -1, true},
		{"unknown method needs admin", "/startgate.v1.Startgate/Future", PeerCred{UID: 1000}, admin, false},
		{"bypass needs admin", "/startgate.v1.Startgate/SetBypass", PeerCred{PID: 200, UID: 1000, GID: 1000}, admin, false},
		{"admin group bypasses", "/startgate.v1.Startgate/SetBypass", PeerCred{UID: 1000, GID: admin}, admin, true},
		{"read prefetch list", "/startgate.v1.Startgate/PrefetchList", PeerCred{UID: 1000}, -1, true},
		{"prefetch add needs admin", "/startgate.v1.Startgate/PrefetchAdd", PeerCred{PID: 200, UID: 1000, GID: 1000}, admin, false},
		{"prefetch remove needs admin", "/startgate.v1.Startgate/PrefetchRemove", PeerCred{UID: 1000}, -1, false},
		{"admin group adds prefetch", "/startgate.v1.Startgate/PrefetchAdd", PeerCred{UID: 1000, GID: admin}, admin, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := authorize(tc.method, tc.cred, tc.adminGID, groups)
			if tc.allow {
				if err != nil {
					t.Errorf("authorize(%s, uid %d gid %d) = %v, want allowed", tc.method, tc.cred.UID, tc.cred.GID, err)
				}
				return
			}
			if status.Code(err) != codes.PermissionDenied {
				t.Fatalf("authorize(%s, uid %d gid %d) = %v, want PermissionDenied", tc.method, tc.cred.UID, tc.cred.GID, err)
			}
			msg := status.Convert(err).Message()
			if !strings.Contains(msg, "uid 1000") {
				t.Errorf("denial %q does not name the uid", msg)
			}
			if tc.adminGID >= 0 && !strings.Contains(msg, "group 990") {
				t.Errorf("denial %q does not name the required group", msg)
			}
		})
	}
}

func TestParseGroups(t *testing.T) {
	in := "Name:\tsh\nUid:\t0\t0\t0\t0\nGroups:\t4 24 990 \nNgid:\t0\n"
	got, err := parseGroups(strings.NewReader(in))
	if err != nil || len(got) != 3 || got[2] != 990 {
		t.Errorf("parseGroups = %v, %v; want [4 24 990]", got, err)
	}
	got, err = parseGroups(strings.NewReader("Groups:\t\n"))
	if err != nil || len(got) != 0 {
		t.Errorf("parseGroups(empty) = %v, %v; want none", got, err)
	}
}

// TestPeerCredOverSocket checks that the handshake reads the real
// credentials of a peer: the test process is its own peer.
func TestPeerCredOverSocket(t *testing.T) {
	lis, err := net.Listen("unix", filepath.Join(t.TempDir(), "c.sock"))
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer lis.Close()
	c, err := net.Dial("unix", lis.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	sc, err := lis.Accept()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	defer sc.Close()
	_, ai, err := peerCredentials{}.ServerHandshake(sc)
	if err != nil {
		t.Fatalf("ServerHandshake: %v", err)
	}
	got := ai.(PeerCred)
	if int(got.PID) != os.Getpid() || int(got.UID) != os.Getuid() || int(got.GID) != os.Getgid() {
		t.Errorf("peer cred = pid %d uid %d gid %d, want %d %d %d", got.PID, got.UID, got.GID, os.Getpid(), os.Getuid(), os.Getgid())
	}
}
