package server

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/startgate/startgate/internal/admission"
	pb "github.com/startgate/startgate/proto/startgate/v1"
)

// queueWaiters parks n waiters in a paused gate and returns a function
// that withdraws them all and waits for their goroutines.
func queueWaiters(tb testing.TB, h *harness, n int, desc string) func() {
	tb.Helper()
	h.gate.Pause()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	events, unsub := h.gate.Subscribe(n + 16)
	defer unsub()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := admission.Request{Class: admission.Classes[1+i%4], Tenant: "tenant", Description: desc}
			if l, err := h.gate.Acquire(ctx, req); err == nil {
				l.Release()
			}
		}()
	}
	for got := 0; got < n; {
		e, ok := <-events
		if !ok {
			tb.Fatalf("gate closed with %d of %d queued", got, n)
		}
		if e.Type == admission.EventQueued {
			got++
		}
	}
	return func() {
		cancel()
		wg.Wait()
	}
}

func TestListQueueTenThousand(t *testing.T) {
	const n = 10000
	h := newHarness(t, false, func(p *admission.Policy) { p.MaxQueue = n })
	done := queueWaiters(t, h, n, strings.Repeat("d", 200))
	defer done()
	r, err := h.client.ListQueue(ctxT(t), &pb.ListQueueRequest{})
	if err != nil {
		t.Fatalf("ListQueue: %v", err)
	}
	if len(r.Waiters) != n {
		t.Fatalf("ListQueue returned %d waiters, want %d", len(r.Waiters), n)
	}
	for i, w := range r.Waiters {
		if w.Position != int32(i+1) {
			t.Fatalf("waiter %d has position %d, want %d", i, w.Position, i+1)
		}
	}
	if first, last := r.Waiters[0].Class, r.Waiters[n-1].Class; first != pb.Class_CLASS_HIGH || last != pb.Class_CLASS_BACKGROUND {
		t.Errorf("queue order: first %v, last %v; want high first, background last", first, last)
	}
}

// BenchmarkListQueue10k: one ListQueue call over the socket with 10,000
// waiters queued.
//
//	go test -run '^$' -bench ListQueue10k ./internal/server/
func BenchmarkListQueue10k(b *testing.B) {
	const n = 10000
	h := newHarness(b, false, func(p *admission.Policy) { p.MaxQueue = n })
	done := queueWaiters(b, h, n, "create container default/web-0/nginx")
	defer done()
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		r, err := h.client.ListQueue(ctx, &pb.ListQueueRequest{})
		if err != nil || len(r.Waiters) != n {
			b.Fatalf("ListQueue = %d waiters, %v", len(r.GetWaiters()), err)
		}
	}
}
