package broadcast

import (
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type ev struct {
	seq, lost uint64
	name      string
}

func newHub() *Hub[ev] {
	return &Hub[ev]{
		Stamp: func(e *ev, seq uint64) { e.seq = seq },
		Lost:  func(_ ev, seq, n uint64) ev { return ev{seq: seq, lost: n, name: "lost"} },
	}
}

func TestSendLossAndClose(t *testing.T) {
	var mu sync.Mutex
	h := newHub()
	if h.Active() {
		t.Fatal("Active with no subscriber")
	}
	h.Send(ev{name: "nobody"}) // numbers nothing: no one listens
	slow, _ := h.Subscribe(&mu, 1)
	fast, cancelFast := h.Subscribe(&mu, 10)
	if !h.Active() {
		t.Fatal("not Active with two subscribers")
	}
	mu.Lock()
	for _, n := range []string{"a", "b", "c", "d"} {
		h.Send(ev{name: n})
	}
	mu.Unlock()
	for i, want := range []string{"a", "b", "c", "d"} {
		if e := <-fast; e.name != want || e.seq != uint64(i+1) {
			t.Fatalf("fast subscriber got %+v, want %s #%d", e, want, i+1)
		}
	}
	// The slow one took a, lost b, c and d; the next send first tells it.
	if e := <-slow; e.name != "a" {
		t.Fatalf("slow got %+v, want a", e)
	}
	mu.Lock()
	h.Send(ev{name: "e"})
	mu.Unlock()
	if e := <-slow; e.name != "lost" || e.lost != 3 || e.seq != 5 {
		t.Fatalf("slow got %+v, want lost 3 at #5", e)
	}
	cancelFast()
	cancelFast() // idempotent
	if _, ok := <-fast; ok {
		// e was buffered before the cancel; drain it.
		if _, ok := <-fast; ok {
			t.Fatal("fast channel open after cancel")
		}
	}
	mu.Lock()
	h.CloseAll()
	mu.Unlock()
	if _, ok := <-slow; ok {
		t.Fatal("slow channel open after CloseAll")
	}
	late, cancel := h.Subscribe(&mu, 1)
	cancel()
	if _, ok := <-late; ok {
		t.Fatal("a subscription after CloseAll is not closed")
	}
}
