package criproxy

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

type podEvent struct{ namespace, name, uid, reason, message string }

type recordedEvents struct {
	mu     sync.Mutex
	events []podEvent
}

func (r *recordedEvents) PodEvent(namespace, name, uid, reason, message string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, podEvent{namespace, name, uid, reason, message})
}

func (r *recordedEvents) all() []podEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]podEvent(nil), r.events...)
}

// A start that waits in the gate past HeldEventAfter gets one Event on
// its pod saying why (its class, place, the limit, what holds it); one
// admitted before that gets none, and a start that keeps waiting is not
// told about again before heldEventEvery.
func TestHeldStartGetsAnEvent(t *testing.T) {
	ev := &recordedEvents{}
	var e *env
	e = newEnv(t, nil, openPolicy(4), func(c *Config) {
		c.Events, c.HeldEventAfter = ev, 200*time.Millisecond
		c.Explain = func(d ...string) map[string]string { return e.gate.Explain(d...) }
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.gate.Pause()
	errc := make(chan error, 1)
	go func() {
		_, err := e.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sandbox("shop", "web-0", nil)})
		errc <- err
	}()
	waitUntil(t, "an event about the held start", func() bool { return len(ev.all()) > 0 })
	time.Sleep(500 * time.Millisecond) // more ticks: no second event within heldEventEvery
	got := ev.all()
	if len(got) != 1 {
		t.Fatalf("%d events, want 1: %v", len(got), got)
	}
	g := got[0]
	if g.namespace != "shop" || g.name != "web-0" || g.uid != "shop-web-0" || g.reason != HeldReason {
		t.Errorf("event %+v, want on shop/web-0 (uid shop-web-0), reason %s", g, HeldReason)
	}
	for _, want := range []string{"waited", "class normal, 1st of 1 queued", "an operator paused the gate"} {
		if !strings.Contains(g.message, want) {
			t.Errorf("event message %q lacks %q", g.message, want)
		}
	}
	e.gate.Resume()
	if err := <-errc; err != nil {
		t.Fatalf("RunPodSandbox after resume: %v", err)
	}

	// Admitted at once: no event.
	if _, err := e.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sandbox("shop", "web-1", nil)}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
	if n := len(ev.all()); n != 1 {
		t.Errorf("%d events after a start admitted at once, want still 1", n)
	}
}
