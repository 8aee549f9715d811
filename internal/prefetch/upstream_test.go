package prefetch

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
)

// fakeUpstream grants at once, or holds until release is closed; it
// records what it was asked and how each fetch ended.
type fakeUpstream struct {
	release chan struct{} // nil: grant at once
	lost    chan struct{} // the granted fetches' Lost

	mu    sync.Mutex
	asked []string
	ended []error
}

func (u *fakeUpstream) Acquire(ctx context.Context, ref, dgst string) (UpstreamFetch, error) {
	u.mu.Lock()
	u.asked = append(u.asked, ref+"@"+dgst)
	u.mu.Unlock()
	if u.release != nil {
		select {
		case <-u.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return upstreamFetch{u}, nil
}

func (u *fakeUpstream) get() ([]string, []error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.asked...), append([]error(nil), u.ended...)
}

type upstreamFetch struct{ u *fakeUpstream }

func (f upstreamFetch) Lost() <-chan struct{} { return f.u.lost }
func (f upstreamFetch) End(_ context.Context, err error) {
	f.u.mu.Lock()
	f.u.ended = append(f.u.ended, err)
	f.u.mu.Unlock()
}

// TestUpstreamBoundsEveryFetch: a fetch waits for the fleet's upstream
// slot before it reaches the registry and ends it with its outcome; a
// slot lost mid-fetch stops the fetch, saying so.
func TestUpstreamBoundsEveryFetch(t *testing.T) {
	up := &fakeUpstream{release: make(chan struct{}), lost: make(chan struct{})}
	h := newHarness(t, ManagerOptions{Upstream: up})
	h.f.hold = make(chan struct{})
	startManager(t, h.m)
	h.waitState(t, StateIdle)
	h.patch(t, dY)
	waitFor(t, "the upstream asked", func() bool { a, _ := up.get(); return len(a) == 1 })
	if calls, _, _ := h.f.snapshot(); len(calls) != 0 {
		t.Fatalf("the registry was fetched from (%v) before the upstream slot was granted", calls)
	}
	if e, _ := entry(h.m, fRef); e.State != StatePending {
		t.Errorf("waiting for the upstream slot: state %s, want pending", e.State)
	}
	close(up.release)
	h.waitState(t, StateFetching)
	close(up.lost)
	e := h.waitState(t, StateFailed)
	if !strings.Contains(e.Error, "upstream slot lost") {
		t.Errorf("fetch stopped by a lost slot: error %q, want it to say the slot was lost", e.Error)
	}
	_, ended := up.get()
	if len(ended) != 1 || !errors.Is(ended[0], errUpstreamLost) {
		t.Errorf("upstream fetch ended with %v, want one end with the lost slot's error", ended)
	}
}

// TestUpstreamEndsWithSuccess: a fetch done gives its slot back with no
// error.
func TestUpstreamEndsWithSuccess(t *testing.T) {
	up := &fakeUpstream{}
	h := newHarness(t, ManagerOptions{Upstream: up})
	startManager(t, h.m)
	h.waitState(t, StateIdle)
	h.patch(t, dY)
	h.waitState(t, StateDone)
	waitFor(t, "the slot given back", func() bool { _, e := up.get(); return len(e) == 1 })
	if asked, ended := up.get(); len(asked) != 1 || asked[0] != fRef+"@"+dY || ended[0] != nil {
		t.Errorf("upstream asked %v, ended %v; want [%s@%s] and one end without error", asked, ended, fRef, dY)
	}
}

// TestAnnouncedFetchesWithoutResolving: an announced digest is fetched as
// said, without asking the registry what the tag names (which still
// says the old digest here); a ref the node does not watch is ignored.
func TestAnnouncedFetchesWithoutResolving(t *testing.T) {
	h := newHarness(t, ManagerOptions{})
	startManager(t, h.m)
	h.waitState(t, StateIdle)
	// The entry is listed idle before the first cycle resolves it: count
	// from after that resolve (the next is an hour away).
	waitFor(t, "the first cycle's resolve", func() bool {
		h.res.mu.Lock()
		defer h.res.mu.Unlock()
		return h.res.resolves >= 1
	})
	h.res.mu.Lock()
	before := h.res.resolves
	h.res.mu.Unlock()
	if err := h.m.Announced("127.0.0.1:5000/other:1", dY); err != nil {
		t.Fatal(err)
	}
	if err := h.m.Announced(fRef, dY); err != nil {
		t.Fatal(err)
	}
	e := h.waitState(t, StateDone)
	if e.New != dY {
		t.Errorf("announced fetch: new digest %s, want %s", e.New, dY)
	}
	h.res.mu.Lock()
	after := h.res.resolves
	h.res.mu.Unlock()
	if after != before {
		t.Errorf("the registry was asked %d times for an announced digest, want none", after-before)
	}
	if calls, _, _ := h.f.snapshot(); len(calls) != 1 || calls[0] != fRef+"@"+dY {
		t.Errorf("fetches %v, want only %s@%s (the ref not watched is ignored)", calls, fRef, dY)
	}
	if err := h.m.Announced(fRef, "sha256:nope"); err == nil || !strings.Contains(err.Error(), "sha256:nope") {
		t.Errorf("Announced with a bad digest = %v, want an error naming it", err)
	}
}
