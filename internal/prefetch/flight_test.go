package prefetch

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/zap/zaptest"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/startgate/startgate/internal/admission"
)

// The Manager's logic (progress, Join, Pulled, events, Observer, MoveTag,
// rollback) on fakes behind its own small interfaces; the real stack is in
// manager_e2e_test.go.

const (
	fRef  = "127.0.0.1:5000/app:1"
	fRepo = "127.0.0.1:5000/app"
)

var (
	dX = digest.FromString("image X").String()
	dY = digest.FromString("image Y").String()
	dZ = digest.FromString("image Z").String()
)

// configOf is the fake config digest (CRI image ID) of an image digest.
func configOf(d string) string { return digest.FromString("config of " + d).String() }

// noProtect is a fetcher's Protect and Release doing nothing.
type noProtect struct{}

func (noProtect) Protect(context.Context, string, string, time.Duration) (Protection, error) {
	return Protection{}, nil
}
func (noProtect) Release(context.Context, string) error { return nil }

// fakeImages is the node's image records.
type fakeImages struct {
	mu        sync.Mutex
	tags      map[string]string // tag: digest
	afterList func()            // once, after the next List took its copy
}

func (f *fakeImages) set(ref, d string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tags[ref] = d
}

func (f *fakeImages) List(context.Context, ...string) ([]images.Image, error) {
	f.mu.Lock()
	var out []images.Image
	for ref, d := range f.tags {
		out = append(out, images.Image{Name: ref, Target: ocispec.Descriptor{Digest: digest.Digest(d)}})
	}
	after := f.afterList
	f.afterList = nil
	f.mu.Unlock()
	if after != nil {
		after()
	}
	return out, nil
}

// fakeResolver resolves tags from a map; a missing tag fails.
type fakeResolver struct {
	mu       sync.Mutex
	tags     map[string]string
	resolves int
}

func (f *fakeResolver) set(ref, d string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tags[ref] = d
}

func (f *fakeResolver) Resolve(_ context.Context, ref string) (string, ocispec.Descriptor, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resolves++
	d, ok := f.tags[ref]
	if !ok {
		return "", ocispec.Descriptor{}, errors.New("fake registry: no such tag")
	}
	return ref, ocispec.Descriptor{Digest: digest.Digest(d)}, nil
}

// fakeFetcher plans 100 bytes, reads 40, waits for release (if hold is
// set), reads 60 and ends, with err if set.
type fakeFetcher struct {
	hold    chan struct{} // nil: no wait
	started chan string   // ref@digest per fetch, if set

	mu         sync.Mutex
	err        error
	calls      []string
	protects   []string // ref@digest window
	protectErr error
	released   []string
}

func (f *fakeFetcher) FetchProgress(ctx context.Context, ref, d string, p Progress) (Result, error) {
	f.mu.Lock()
	f.calls = append(f.calls, ref+"@"+d)
	err := f.err
	f.mu.Unlock()
	if f.started != nil {
		f.started <- ref + "@" + d
	}
	p.Planned(digest.Digest(configOf(d)), 100)
	p.Read(40)
	if f.hold != nil {
		select {
		case <-f.hold:
		case <-ctx.Done():
			return Result{}, ctx.Err()
		}
	}
	if err != nil {
		return Result{}, err
	}
	p.Read(60)
	return Result{
		Ref: ref, Digest: digest.Digest(d), Config: digest.Digest(configOf(d)),
		Layers: []Layer{
			{Digest: digest.FromString("base"), Size: 10},
			{Digest: digest.FromString("patch of " + d), Size: 90, Fetched: true},
		},
		LayersFetched: 1, LayersPresent: 1, Bytes: 100, LayerBytes: 90,
		Lease: "lease-" + d, Expires: time.Now().Add(time.Hour),
	}, nil
}

func (f *fakeFetcher) Protect(_ context.Context, ref, d string, window time.Duration) (Protection, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.protects = append(f.protects, ref+"@"+d+" "+window.String())
	if f.protectErr != nil {
		return Protection{}, f.protectErr
	}
	return Protection{Lease: "rollback-" + d, Expires: time.Now().Add(window), Config: digest.Digest(configOf(d))}, nil
}

func (f *fakeFetcher) Release(_ context.Context, lease string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.released = append(f.released, lease)
	return nil
}

func (f *fakeFetcher) snapshot() (calls, protects, released []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls), slices.Clone(f.protects), slices.Clone(f.released)
}

// fakeObserver records what it is told.
type fakeObserver struct {
	mu                 sync.Mutex
	bytes              int64
	done, failed, hits []string
}

func (o *fakeObserver) PrefetchBytes(n int64) { o.mu.Lock(); o.bytes += n; o.mu.Unlock() }
func (o *fakeObserver) PrefetchDone(ref string, r Result) {
	o.mu.Lock()
	o.done = append(o.done, ref+"@"+r.Digest.String())
	o.mu.Unlock()
}
func (o *fakeObserver) PrefetchFailed(ref string, err error) {
	o.mu.Lock()
	o.failed = append(o.failed, ref+": "+err.Error())
	o.mu.Unlock()
}
func (o *fakeObserver) PrefetchHit(ref string) {
	o.mu.Lock()
	o.hits = append(o.hits, ref)
	o.mu.Unlock()
}

func (o *fakeObserver) get() (bytes int64, done, failed, hits []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.bytes, slices.Clone(o.done), slices.Clone(o.failed), slices.Clone(o.hits)
}

type harness struct {
	m   *Manager
	img *fakeImages
	res *fakeResolver
	f   *fakeFetcher
	obs *fakeObserver
}

// newHarness returns a Manager on fakes whose node runs fRef at dX; the
// registry has dX too. Only Trigger and wake-ups drive it (interval an
// hour, after the first cycle).
func newHarness(t *testing.T, opts ManagerOptions) *harness {
	t.Helper()
	h := &harness{
		img: &fakeImages{tags: map[string]string{fRef: dX}},
		res: &fakeResolver{tags: map[string]string{fRef: dX}},
		f:   &fakeFetcher{},
		obs: &fakeObserver{},
	}
	opts.Interval = time.Hour
	opts.Registries = []string{"127.0.0.1:5000"}
	opts.Observer = h.obs
	opts.Logger = zaptest.NewLogger(t)
	m, err := newManager(h.img, h.res, h.f, DefaultNamespace, opts)
	if err != nil {
		t.Fatal(err)
	}
	h.m = m
	return h
}

// waitFor polls cond until it holds; the deadline is only against a hang.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitState waits for fRef's entry to reach state and returns it.
func (h *harness) waitState(t *testing.T, state State) Entry {
	t.Helper()
	var e Entry
	waitFor(t, "state "+string(state), func() bool {
		e, _ = entry(h.m, fRef)
		return e.State == state
	})
	return e
}

// patch makes the registry answer dY for fRef and triggers a resolve.
func (h *harness) patch(t *testing.T, d string) {
	t.Helper()
	h.res.set(fRef, d)
	if err := h.m.Trigger(fRef); err != nil {
		t.Fatal(err)
	}
}

func TestLiveProgressAndDone(t *testing.T) {
	h := newHarness(t, ManagerOptions{})
	h.f.hold = make(chan struct{})
	startManager(t, h.m)
	h.waitState(t, StateIdle)
	h.patch(t, dY)

	var e Entry
	waitFor(t, "progress 40 of 100", func() bool {
		e, _ = entry(h.m, fRef)
		return e.BytesDone == 40
	})
	if e.State != StateFetching || e.BytesTotal != 100 || e.Config != configOf(dY) || e.New != dY || e.Lease != "" {
		t.Errorf("mid-fetch: got %+v, want fetching, 40 of 100 bytes, config %s, no lease yet", e, configOf(dY))
	}
	close(h.f.hold)
	e = h.waitState(t, StateDone)
	want := []string{digest.FromString("patch of " + dY).String()}
	if e.BytesDone != 100 || e.BytesTotal != 100 || e.LayersFetched != 1 || !slices.Equal(e.FetchedLayers, want) ||
		e.Lease != "lease-"+dY || e.Expires.IsZero() || e.Running != dX || e.Error != "" {
		t.Errorf("done: got %+v, want 100 of 100 bytes, fetched layers %v, lease lease-%s, running %s", e, want, dY, dX)
	}
	if bytes, done, failed, _ := h.obs.get(); bytes != 100 || !slices.Equal(done, []string{fRef + "@" + dY}) || len(failed) != 0 {
		t.Errorf("observer: bytes %d done %v failed %v, want 100, [%s@%s], none", bytes, done, failed, fRef, dY)
	}
}

// blockedAdmitter never grants; it counts the requests it saw end.
type blockedAdmitter struct {
	mu      sync.Mutex
	asked   int
	givenUp int
}

func (a *blockedAdmitter) Acquire(ctx context.Context, _ admission.Request) (*admission.Lease, error) {
	a.mu.Lock()
	a.asked++
	a.mu.Unlock()
	<-ctx.Done()
	a.mu.Lock()
	a.givenUp++
	a.mu.Unlock()
	return nil, ctx.Err()
}

func (a *blockedAdmitter) counts() (asked, givenUp int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.asked, a.givenUp
}

// highIO is a Throttle whose IO pressure stays above target; it counts
// its polls.
func highIO(polls *atomicCount) *Throttle {
	th, _ := NewThrottle(ThrottleOptions{IOPressure: func() float64 { return 0.9 }, IOTarget: 0.3})
	th.sleep = func(ctx context.Context, d time.Duration) error {
		polls.add()
		select {
		case <-time.After(time.Millisecond):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return th
}

type atomicCount struct {
	mu sync.Mutex
	n  int
}

func (c *atomicCount) add()     { c.mu.Lock(); c.n++; c.mu.Unlock() }
func (c *atomicCount) get() int { c.mu.Lock(); defer c.mu.Unlock(); return c.n }

func TestJoinPendingStartsNow(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(h *harness) (waiting func() bool)
	}{
		{"waiting for IO", func(h *harness) func() bool {
			var polls atomicCount
			h.m.opts.Throttle = highIO(&polls)
			return func() bool { return polls.get() >= 3 }
		}},
		{"waiting for admission", func(h *harness) func() bool {
			a := &blockedAdmitter{}
			h.m.opts.Admitter = a
			return func() bool { asked, _ := a.counts(); return asked == 1 }
		}},
		{"waiting for a fetch slot", func(h *harness) func() bool {
			h.m.slots <- struct{}{} // the only slot, taken by "another fetch"
			t.Cleanup(func() { <-h.m.slots })
			return func() bool { e, _ := entry(h.m, fRef); return e.State == StatePending }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, ManagerOptions{})
			h.f.started = make(chan string, 1)
			waiting := tc.setup(h)
			startManager(t, h.m)
			h.waitState(t, StateIdle)
			h.patch(t, dY)
			waitFor(t, "the fetch to wait", waiting)
			if calls, _, _ := h.f.snapshot(); len(calls) != 0 {
				t.Fatalf("fetches %v while waiting, want none", calls)
			}
			if e, _ := entry(h.m, fRef); e.State != StatePending {
				t.Fatalf("while waiting: got %+v, want pending", e)
			}

			// Three pulls join at once: one fetch, all see its end. The
			// fetch is held until all three wait for it.
			h.f.hold = make(chan struct{})
			const joiners = 3
			type joined struct {
				ok  bool
				err error
			}
			out := make(chan joined, joiners)
			for range joiners {
				go func() {
					ok, err := h.m.Join(context.Background(), fRef)
					out <- joined{ok, err}
				}()
			}
			waitFor(t, "3 joiners", func() bool {
				h.m.mu.Lock()
				defer h.m.mu.Unlock()
				fl := h.m.mu.flights[fRef+"@"+dY]
				return fl != nil && fl.joiners == joiners
			})
			if got := <-h.f.started; got != fRef+"@"+dY {
				t.Errorf("started %s, want %s@%s", got, fRef, dY)
			}
			close(h.f.hold)
			for range joiners {
				if j := <-out; !j.ok || j.err != nil {
					t.Errorf("Join(%s) of a pending fetch: got %v, %v; want true, nil", fRef, j.ok, j.err)
				}
			}
			if e, _ := entry(h.m, fRef); e.State != StateDone {
				t.Errorf("after the joined fetch: got %+v, want done", e)
			}
			if calls, _, _ := h.f.snapshot(); !slices.Equal(calls, []string{fRef + "@" + dY}) {
				t.Errorf("fetches: got %v, want one of %s@%s", calls, fRef, dY)
			}
			if a, ok := h.m.opts.Admitter.(*blockedAdmitter); ok {
				if asked, givenUp := a.counts(); asked != 1 || givenUp != 1 {
					t.Errorf("admission: asked %d, given up %d; want 1 and 1 (the wait abandoned)", asked, givenUp)
				}
			}
		})
	}
}

func TestJoinFetching(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ref     string // as the pull spells it
		fail    error
		wantErr bool
	}{
		{"tag", fRef, nil, false},
		{"repo digest", fRepo + "@" + dY, nil, false},
		{"failing fetch", fRef, errors.New("registry hiccup"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, ManagerOptions{})
			h.f.hold = make(chan struct{})
			h.f.err = tc.fail
			startManager(t, h.m)
			h.waitState(t, StateIdle)
			h.patch(t, dY)
			h.waitState(t, StateFetching)
			type joined struct {
				ok  bool
				err error
			}
			out := make(chan joined, 1)
			go func() {
				ok, err := h.m.Join(context.Background(), tc.ref)
				out <- joined{ok, err}
			}()
			select {
			case j := <-out:
				t.Fatalf("Join(%s) returned %v, %v while the fetch runs", tc.ref, j.ok, j.err)
			case <-time.After(20 * time.Millisecond):
			}
			close(h.f.hold)
			j := <-out
			if !j.ok || (j.err != nil) != tc.wantErr {
				t.Errorf("Join(%s): got %v, %v; want true and error %v", tc.ref, j.ok, j.err, tc.wantErr)
			}
			e, _ := entry(h.m, fRef)
			_, _, failed, _ := h.obs.get()
			if tc.wantErr {
				if e.State != StateFailed || len(failed) != 1 {
					t.Errorf("after a failed fetch: entry %+v, observer failed %v; want failed, one failure", e, failed)
				}
			} else if e.State != StateDone {
				t.Errorf("after the fetch: got %+v, want done", e)
			}
		})
	}
}

func TestJoinNothingInFlightAndCancelled(t *testing.T) {
	h := newHarness(t, ManagerOptions{})
	h.f.hold = make(chan struct{})
	startManager(t, h.m)
	h.waitState(t, StateIdle)
	for _, ref := range []string{fRef, "127.0.0.1:5000/other:1", fRepo + "@" + dY} {
		if ok, err := h.m.Join(context.Background(), ref); ok || err != nil {
			t.Errorf("Join(%s) with nothing in flight: got %v, %v; want false, nil", ref, ok, err)
		}
	}
	if ok, err := h.m.Join(context.Background(), "app/Upper:1"); ok || err == nil {
		t.Errorf("Join of a bad reference: got %v, %v; want false and an error", ok, err)
	}

	// A joiner that gives up does not stop the fetch.
	h.patch(t, dY)
	h.waitState(t, StateFetching)
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan error, 1)
	go func() {
		_, err := h.m.Join(ctx, fRef)
		out <- err
	}()
	cancel()
	if err := <-out; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Join: got %v, want context.Canceled", err)
	}
	if e, _ := entry(h.m, fRef); e.State != StateFetching {
		t.Errorf("after a joiner gave up: got %+v, want still fetching", e)
	}
	close(h.f.hold)
	h.waitState(t, StateDone)
	// Done: nothing in flight any more.
	if ok, err := h.m.Join(context.Background(), fRef); ok || err != nil {
		t.Errorf("Join(%s) once done: got %v, %v; want false, nil", fRef, ok, err)
	}
}

// fetchDone runs h's Manager and brings fRef to done at dY.
func (h *harness) fetchDone(t *testing.T) {
	t.Helper()
	startManager(t, h.m)
	h.waitState(t, StateIdle)
	h.patch(t, dY)
	h.waitState(t, StateDone)
}

// fetchDoneStopped brings fRef to done at dY with Run, then stops Run:
// the test then drives refresh itself, and no wake-up races it.
func (h *harness) fetchDoneStopped(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.m.Run(ctx) }()
	h.waitState(t, StateIdle)
	h.patch(t, dY)
	h.waitState(t, StateDone)
	cancel()
	<-done
}

func TestPulled(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, ManagerOptions{RollbackWindow: time.Hour})
	h.fetchDoneStopped(t)
	if h.m.Pulled(ctx, fRef, configOf(dZ)) {
		t.Errorf("Pulled(%s, config of another image) = true, want false", fRef)
	}
	if h.m.Pulled(ctx, fRef+"x", configOf(dY)) {
		t.Errorf("Pulled of an unwatched ref = true, want false")
	}
	if e, _ := entry(h.m, fRef); e.State != StateDone || e.Hits != 0 {
		t.Fatalf("after non-hits: got %+v, want done, no hits", e)
	}
	// The CRI's pull moved the tag, then reported it.
	h.img.set(fRef, dY)
	if !h.m.Pulled(ctx, fRef, configOf(dY)) {
		t.Fatalf("Pulled(%s, %s) = false, want a hit", fRef, configOf(dY))
	}
	e, _ := entry(h.m, fRef)
	if e.State != StateIdle || e.Running != dY || e.New != "" || e.Hits != 1 || e.Lease != "" {
		t.Errorf("after a hit: got %+v, want idle, running %s, 1 hit, no lease", e, dY)
	}
	if _, _, released := h.f.snapshot(); !slices.Equal(released, []string{"lease-" + dY}) {
		t.Errorf("leases released: got %v, want [lease-%s]", released, dY)
	}
	// Once: a second report, and the refresh that sees the tag at dY,
	// count nothing more.
	if h.m.Pulled(ctx, fRef, configOf(dY)) {
		t.Errorf("second Pulled = true, want false (one hit)")
	}
	h.m.refresh(ctx)
	if _, _, _, hits := h.obs.get(); !slices.Equal(hits, []string{fRef}) {
		t.Errorf("observer hits: got %v, want one for %s", hits, fRef)
	}
	// The hit moved the node off dX: dX is protected for the window (by
	// the refresh Pulled woke Run for).
	e, _ = entry(h.m, fRef)
	if e.Previous != dX || e.PreviousUntil.IsZero() || e.Hits != 1 {
		t.Errorf("after the hit: got %+v, want previous %s protected, 1 hit", e, dX)
	}
	if _, protects, _ := h.f.snapshot(); !slices.Equal(protects, []string{fRef + "@" + dX + " 1h0m0s"}) {
		t.Errorf("Protect calls: got %v, want one of %s@%s for 1h", protects, fRef, dX)
	}
}

func TestRefreshNoticesTagMovedToDone(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, ManagerOptions{})
	h.fetchDoneStopped(t)
	// Kubelet pulled the tag directly from containerd.
	h.img.set(fRef, dY)
	h.m.refresh(ctx)
	h.m.refresh(ctx)
	e, _ := entry(h.m, fRef)
	if e.State != StateIdle || e.Running != dY || e.Hits != 1 || e.Lease != "" || e.Previous != "" {
		t.Errorf("after the tag moved to the done digest: got %+v, want idle at %s, 1 hit, no lease, no rollback (window off)", e, dY)
	}
	if h.m.Pulled(ctx, fRef, configOf(dY)) {
		t.Errorf("Pulled after the refresh counted the hit = true, want false")
	}
	_, protects, released := h.f.snapshot()
	if !slices.Equal(released, []string{"lease-" + dY}) || len(protects) != 0 {
		t.Errorf("released %v, protected %v; want [lease-%s] and nothing (window off)", released, protects, dY)
	}
	if _, _, _, hits := h.obs.get(); len(hits) != 1 {
		t.Errorf("observer hits: got %v, want 1", hits)
	}
}

func TestRollbackOnMove(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name       string
		window     time.Duration
		protectErr error
		want       []string // Protect calls
		previous   string
	}{
		{"window", time.Minute, nil, []string{fRef + "@" + dX + " 1m0s"}, dX},
		{"off", 0, nil, nil, ""},
		{"protect fails", time.Minute, errors.New("content gone"), []string{fRef + "@" + dX + " 1m0s"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, ManagerOptions{RollbackWindow: tc.window})
			h.f.protectErr = tc.protectErr
			events, cancel := h.m.Subscribe(16)
			defer cancel()
			h.m.refresh(ctx)
			// Moved to a digest that was never prefetched: no hit.
			h.img.set(fRef, dZ)
			h.m.refresh(ctx)
			e, _ := entry(h.m, fRef)
			if _, protects, _ := h.f.snapshot(); !slices.Equal(protects, tc.want) {
				t.Errorf("Protect calls: got %v, want %v", protects, tc.want)
			}
			if e.Running != dZ || e.Previous != tc.previous || e.Hits != 0 || e.PreviousUntil.IsZero() != (tc.previous == "") {
				t.Errorf("after the move: got %+v, want running %s, previous %q, no hit", e, dZ, tc.previous)
			}
			var kinds []EventKind
			for len(events) > 0 {
				kinds = append(kinds, (<-events).Kind)
			}
			if got := slices.Contains(kinds, EventRollback); got != (tc.previous != "") {
				t.Errorf("events %v: rollback event %v, want %v", kinds, got, tc.previous != "")
			}
		})
	}
}

func TestEvents(t *testing.T) {
	h := newHarness(t, ManagerOptions{})
	events, cancel := h.m.Subscribe(64)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.m.Run(ctx) }()
	h.waitState(t, StateIdle)
	h.patch(t, dY)
	h.waitState(t, StateDone)
	if !h.m.Pulled(context.Background(), fRef, configOf(dY)) {
		t.Fatal("no hit")
	}
	if err := h.m.Remove(fRef); err != nil {
		t.Fatal(err)
	}
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run: got %v, want context.Canceled", err)
	}
	var got []string
	var seq uint64
	for ev := range events { // closed when Run returned
		if ev.Seq != seq+1 {
			t.Errorf("event %+v: seq %d after %d, want consecutive", ev, ev.Seq, seq)
		}
		seq = ev.Seq
		if ev.Entry.Ref != fRef {
			t.Errorf("event %+v: ref %q, want %s", ev, ev.Entry.Ref, fRef)
		}
		got = append(got, string(ev.Kind)+":"+string(ev.Entry.State))
	}
	want := []string{"state:idle", "state:pending", "state:fetching", "state:done", "hit:idle", "state:idle", "removed:idle"}
	if !slices.Equal(got, want) {
		t.Errorf("events: got %v, want %v", got, want)
	}
	cancel()
	cancel() // idempotent, after Run closed the channel
	if late, cancelLate := h.m.Subscribe(1); true {
		if _, open := <-late; open {
			t.Errorf("Subscribe after Run returned: channel open, want closed")
		}
		cancelLate()
	}
}

func TestEventsLost(t *testing.T) {
	h := newHarness(t, ManagerOptions{})
	events, cancel := h.m.Subscribe(2)
	defer cancel()
	publish := func(n int) {
		h.m.mu.Lock()
		defer h.m.mu.Unlock()
		for range n {
			h.m.publishLocked(EventState, &Entry{Ref: fRef, State: StateIdle})
		}
	}
	read := func() string {
		ev := <-events
		if ev.Kind == EventLost {
			return "lost " + strconv.FormatUint(ev.Lost, 10) + " at " + strconv.FormatUint(ev.Seq, 10)
		}
		return "event " + strconv.FormatUint(ev.Seq, 10)
	}
	publish(5) // 1 and 2 fit, 3 to 5 are lost
	got := []string{read()}
	publish(1) // "lost 3" fits, 6 does not
	got = append(got, read(), read())
	publish(1) // "lost 1" and 7
	got = append(got, read(), read())
	want := []string{"event 1", "event 2", "lost 3 at 6", "lost 1 at 7", "event 7"}
	if !slices.Equal(got, want) {
		t.Errorf("a subscriber with room for 2: got %v, want %v", got, want)
	}
	// A cancelled subscription gets nothing more and is closed.
	cancel()
	publish(1)
	if ev, open := <-events; open {
		t.Errorf("after cancel: got %+v, want a closed channel", ev)
	}
}

func TestObserverResolveFailure(t *testing.T) {
	h := newHarness(t, ManagerOptions{})
	startManager(t, h.m)
	h.waitState(t, StateIdle)
	h.res.set(fRef, "")
	h.res.mu.Lock()
	delete(h.res.tags, fRef)
	h.res.mu.Unlock()
	if err := h.m.Trigger(fRef); err != nil {
		t.Fatal(err)
	}
	e := h.waitState(t, StateFailed)
	if _, _, failed, _ := h.obs.get(); len(failed) != 1 || e.Error == "" {
		t.Errorf("resolve failure: observer failed %v, entry %+v; want one failure shown", failed, e)
	}
}

func TestMoveTag(t *testing.T) {
	for _, tc := range []struct {
		name    string
		err     error
		wantErr string
	}{
		{"moved", nil, ""},
		{"error shown", errors.New("CRI pull refused"), "move tag: CRI pull refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			moved := make(chan string, 1)
			h := newHarness(t, ManagerOptions{MoveTag: func(_ context.Context, ref, d string) error {
				moved <- ref + "@" + d
				return tc.err
			}})
			h.fetchDone(t)
			if got := <-moved; got != fRef+"@"+dY {
				t.Errorf("MoveTag called with %s, want %s@%s", got, fRef, dY)
			}
			var e Entry
			waitFor(t, "the move's outcome", func() bool {
				e, _ = entry(h.m, fRef)
				return tc.err == nil || e.Error != ""
			})
			if e.State != StateDone || e.Error != tc.wantErr {
				t.Errorf("after MoveTag: got %+v, want done, error %q", e, tc.wantErr)
			}
		})
	}
}

// TestRefreshStaleListAfterPulled: a list of the node's images taken
// before a pull moved the tag, applied after Pulled saw the hit, must not
// read as the tag moving back.
func TestRefreshStaleListAfterPulled(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, ManagerOptions{RollbackWindow: time.Hour})
	h.fetchDoneStopped(t)
	h.img.mu.Lock()
	h.img.afterList = func() {
		h.img.set(fRef, dY)
		if !h.m.Pulled(ctx, fRef, configOf(dY)) {
			t.Errorf("Pulled = false, want a hit")
		}
	}
	h.img.mu.Unlock()
	h.m.refresh(ctx) // lists dX, then the pull and Pulled happen
	h.m.refresh(ctx) // lists dY
	e, _ := entry(h.m, fRef)
	_, protects, _ := h.f.snapshot()
	if e.Running != dY || e.Previous != dX || e.Hits != 1 || !slices.Equal(protects, []string{fRef + "@" + dX + " 1h0m0s"}) {
		t.Errorf("after a stale list: entry %+v, Protect calls %v; want running %s, previous %s, 1 hit, only %s protected", e, protects, dY, dX, dX)
	}
}

// A push notification whose digest the tag does not name yet (the
// registry notifies before it moves the tag) fetches the notified digest,
// pinned; one the tag already names, or the running one, changes nothing.
func TestNotifyBeforeTagMoves(t *testing.T) {
	h := newHarness(t, ManagerOptions{})
	startManager(t, h.m)
	h.waitState(t, StateIdle)
	// The registry still answers dX for the tag.
	if err := h.m.Notify(fRef, dY); err != nil {
		t.Fatal(err)
	}
	e := h.waitState(t, StateDone)
	if e.New != dY {
		t.Fatalf("after a notification of %s with the tag still at %s: new %s, want the notified digest", dY, dX, e.New)
	}
	if calls, _, _ := h.f.snapshot(); !slices.Equal(calls, []string{fRef + "@" + dY}) {
		t.Fatalf("fetches %v, want one of %s@%s", calls, fRef, dY)
	}
	// A notification of the running digest is nothing new; the hint is
	// used once, so the next resolve (the tag at dZ) wins.
	if err := h.m.Notify(fRef, dX); err != nil {
		t.Fatal(err)
	}
	h.patch(t, dZ)
	waitFor(t, "the fetch of "+dZ, func() bool { e, _ = entry(h.m, fRef); return e.New == dZ && e.State == StateDone })
	if calls, _, _ := h.f.snapshot(); !slices.Equal(calls, []string{fRef + "@" + dY, fRef + "@" + dZ}) {
		t.Fatalf("fetches %v, want %s then %s only", calls, dY, dZ)
	}
	for _, bad := range []struct{ ref, d string }{{fRef, "sha256:nothex"}, {fRepo + "@" + dX, dY}} {
		if err := h.m.Notify(bad.ref, bad.d); err == nil {
			t.Errorf("Notify(%q, %q) = nil, want an error", bad.ref, bad.d)
		}
	}
}

// A fetch that fails every time (a registry that resolves fine and serves
// a bad blob) backs off on its own: a resolve finding the same digest
// again waits the backoff out, though a successful resolve clears the
// registry's; a trigger tries at once.
func TestFailedFetchBacksOff(t *testing.T) {
	h := newHarness(t, ManagerOptions{MaxBackoff: 24 * time.Hour})
	h.f.err = errors.New("digest mismatch")
	clk := testingclock.NewFakeClock(time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC))
	h.m.clk = clk
	advance := clk.Step
	ctx := context.Background()
	h.m.refresh(ctx)
	h.res.set(fRef, dY)
	var wg sync.WaitGroup
	check := func(triggered bool) int {
		h.m.check(ctx, &wg, fRef, triggered)
		wg.Wait()
		calls, _, _ := h.f.snapshot()
		return len(calls)
	}
	if n := check(false); n != 1 {
		t.Fatalf("first resolve of the new digest: %d fetches, want 1", n)
	}
	if e, _ := entry(h.m, fRef); e.State != StateFailed || e.New != dY {
		t.Fatalf("after the failed fetch: %+v, want failed at %s", e, dY)
	}
	advance(time.Minute)
	if n := check(false); n != 1 {
		t.Fatalf("a resolve within the backoff fetched again (%d fetches, want 1)", n)
	}
	// Jitter makes the first wait at most 1.2 intervals (an hour here).
	advance(2 * time.Hour)
	if n := check(false); n != 2 {
		t.Fatalf("a resolve after the backoff: %d fetches, want 2", n)
	}
	// The second failure doubles the wait; a trigger does not wait.
	advance(90 * time.Minute)
	if n := check(false); n != 2 {
		t.Fatalf("a resolve within the doubled backoff fetched again (%d fetches, want 2)", n)
	}
	if n := check(true); n != 3 {
		t.Fatalf("a triggered resolve: %d fetches, want 3 (a trigger tries at once)", n)
	}
}
