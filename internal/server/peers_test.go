package server

import (
	"context"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/startgate/startgate/proto/startgate/v1"
)

// TestPeerStreamCap: a caller's streams beyond its cap are refused with
// ResourceExhausted naming the config key, and one that ends makes room.
func TestPeerStreamCap(t *testing.T) {
	h := newHarness(t, false, nil, func(c *Config) { c.Limits = Limits{StreamsPerPeer: 3} })
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	var cancels []context.CancelFunc
	for i := range 3 {
		sctx, scancel := context.WithCancel(ctx)
		cancels = append(cancels, scancel)
		w, err := h.client.Watch(sctx, &pb.WatchRequest{})
		if err != nil {
			t.Fatalf("Watch %d: %v", i, err)
		}
		if _, err := w.Header(); err != nil {
			t.Fatalf("Watch %d: %v", i, err)
		}
	}
	over := func() error {
		w, err := h.client.Watch(ctx, &pb.WatchRequest{})
		if err != nil {
			return err
		}
		_, err = w.Recv()
		return err
	}
	if err := over(); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "daemon.max_streams_per_peer") {
		t.Fatalf("a 4th stream = %v, want ResourceExhausted naming daemon.max_streams_per_peer", err)
	}
	cancels[0]()
	waitUntilT(t, "the ended stream to be given back", func() bool {
		h.srv.peers.mu.Lock()
		defer h.srv.peers.mu.Unlock()
		return h.srv.peers.streams[0] == 2
	})
	w, err := h.client.Watch(ctx, &pb.WatchRequest{})
	if err == nil {
		_, err = w.Header()
	}
	if err != nil {
		t.Fatalf("a stream after one ended: %v", err)
	}
	// Unary calls are not capped.
	if _, err := h.client.Status(ctx, &pb.StatusRequest{}); err != nil {
		t.Fatalf("Status with every stream taken: %v", err)
	}
}

// TestPeerWaiterCap: a caller's slots asked for on AcquireMany beyond its
// cap are refused per tag, naming the key; the stream and its other tags
// go on, and a tag that ends makes room.
func TestPeerWaiterCap(t *testing.T) {
	h := newHarness(t, false, nil, func(c *Config) { c.Limits = Limits{WaitersPerPeer: 2} })
	h.gate.Pause()
	s, err := h.client.AcquireMany(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	send := func(m *pb.AcquireManyRequest) {
		t.Helper()
		if err := s.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	startTag := func(tag uint64) *pb.AcquireManyRequest {
		return &pb.AcquireManyRequest{Msg: &pb.AcquireManyRequest_Start{Start: &pb.AcquireManyStart{Tag: tag, Class: pb.Class_CLASS_NORMAL}}}
	}
	for tag := uint64(1); tag <= 2; tag++ {
		send(startTag(tag))
		if m, err := s.Recv(); err != nil || m.GetQueued() == nil {
			t.Fatalf("tag %d: %v, %v; want queued", tag, m, err)
		}
	}
	send(startTag(3))
	m, err := s.Recv()
	if err != nil || m.GetTag() != 3 || codes.Code(m.GetError().GetCode()) != codes.ResourceExhausted ||
		!strings.Contains(m.GetError().GetMessage(), "daemon.max_waiters_per_peer") {
		t.Fatalf("tag 3: %v, %v; want a ResourceExhausted TagError naming daemon.max_waiters_per_peer", m, err)
	}
	send(&pb.AcquireManyRequest{Msg: &pb.AcquireManyRequest_Cancel{Cancel: &pb.AcquireManyCancel{Tag: 1}}})
	if m, err := s.Recv(); err != nil || m.GetTag() != 1 || m.GetError() == nil {
		t.Fatalf("cancel of tag 1: %v, %v; want its error answer", m, err)
	}
	send(startTag(4))
	if m, err := s.Recv(); err != nil || m.GetTag() != 4 || m.GetQueued() == nil {
		t.Fatalf("tag 4 after tag 1 ended: %v, %v; want queued", m, err)
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
}

// TestPeerConnectionCap: a caller's connections beyond its cap are closed
// at the handshake; an ended one makes room.
func TestPeerConnectionCap(t *testing.T) {
	h := newHarness(t, false, nil, func(c *Config) { c.Limits = Limits{ConnectionsPerPeer: 2} })
	// The harness's own client holds one once it has called.
	if _, err := h.client.Status(ctxT(t), &pb.StatusRequest{}); err != nil {
		t.Fatal(err)
	}
	dial := func() (*grpc.ClientConn, error) {
		c, err := grpc.NewClient("unix://"+h.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(ctxT(t), waitFor/4)
		defer cancel()
		_, err = pb.NewStartgateClient(c).Status(ctx, &pb.StatusRequest{})
		return c, err
	}
	second, err := dial()
	if err != nil {
		t.Fatalf("a second connection: %v", err)
	}
	third, err := dial()
	if err == nil {
		t.Fatalf("a third connection answered, want it closed over daemon.max_connections_per_peer")
	}
	third.Close()
	second.Close()
	waitUntilT(t, "the closed connection to be given back", func() bool {
		h.srv.peers.mu.Lock()
		defer h.srv.peers.mu.Unlock()
		return h.srv.peers.conns[0] == 1
	})
	fourth, err := dial()
	if err != nil {
		t.Fatalf("a connection after one closed: %v", err)
	}
	fourth.Close()
}

// waitUntilT polls cond until it holds, failing after waitFor.
func waitUntilT(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling progress, not asserting time
	}
}

// TestMemoryHighSheds: over Limits.MemoryHigh a new stream or waiter of
// any caller but root is refused with ResourceExhausted naming
// daemon.memory_high, what is open is kept, and once memory falls back
// they are accepted again; each change is logged once.
func TestMemoryHighSheds(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	p := newPeers(Limits{MemoryHigh: 64 << 20}, zap.New(core))
	var heap atomic.Int64
	heap.Store(10 << 20)
	p.mem.read = heap.Load
	reread := func() {
		p.mem.mu.Lock()
		p.mem.at = time.Time{}
		p.mem.mu.Unlock()
	}

	kept, err := p.stream(1000)
	if err != nil {
		t.Fatalf("a stream under memory_high: %v", err)
	}
	heap.Store(65 << 20)
	reread()
	for _, take := range []struct {
		name string
		f    func(uint32) (func(), error)
	}{{"stream", p.stream}, {"waiter", p.waiter}} {
		_, err := take.f(1000)
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "daemon.memory_high") || !strings.Contains(err.Error(), "65 MiB") {
			t.Errorf("a new %s over memory_high = %v, want ResourceExhausted naming daemon.memory_high and the 65 MiB held", take.name, err)
		}
		release, err := take.f(0)
		if err != nil {
			t.Errorf("root's new %s over memory_high = %v, want it served", take.name, err)
		} else {
			release()
		}
	}
	if p.streams[1000] != 1 {
		t.Errorf("uid 1000 holds %d streams while shedding, want its open one kept", p.streams[1000])
	}
	kept()

	heap.Store(20 << 20)
	reread()
	release, err := p.waiter(1000)
	if err != nil {
		t.Fatalf("a waiter once memory fell back: %v", err)
	}
	release()
	if n := logs.FilterMessageSnippet("over daemon.memory_high").Len(); n != 1 {
		t.Errorf("%d lines saying shedding began, want 1", n)
	}
	if n := logs.FilterMessageSnippet("back under daemon.memory_high").Len(); n != 1 {
		t.Errorf("%d lines saying shedding ended, want 1", n)
	}
}

// TestRuntimeMemory: the figure shedding reads is the Go runtime's, and
// grows with what the process holds.
func TestRuntimeMemory(t *testing.T) {
	before := runtimeMemory()
	hold := make([][]byte, 64)
	for i := range hold {
		hold[i] = make([]byte, 1<<20)
	}
	after := runtimeMemory()
	runtime.KeepAlive(hold)
	if before <= 0 || after-before < 32<<20 {
		t.Errorf("runtimeMemory %d then %d after allocating 64 MiB, want it to grow by most of that", before, after)
	}
}
