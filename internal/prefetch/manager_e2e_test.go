package prefetch

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/zap/zaptest"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/startgate/startgate/harness/testbed"
)

const managerLayerSize = 2 << 20

// pushAndCRIPull pushes busybox plus a random layer as repoTag (named
// through ref's registry), pulls ref through the CRI as kubelet would and
// returns the image and its digest.
func (e *env) pushAndCRIPull(ctx context.Context, t *testing.T, repoTag, ref string) (v1.Image, string) {
	t.Helper()
	app, err := testbed.RandomLayer("app/data", managerLayerSize, 1)
	if err != nil {
		t.Fatal(err)
	}
	base, err := testbed.BusyboxImage(app)
	if err == nil {
		base, err = testbed.WithEntrypoint(base, "sleep", "3600")
	}
	if err != nil {
		t.Fatal(err)
	}
	d, err := e.reg.Push(ctx, repoTag, base)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.cri.PullImage(ctx, &runtimeapi.ImageSpec{Image: ref}, nil, nil); err != nil {
		t.Fatalf("CRI PullImage %s: %v", ref, err)
	}
	return base, d
}

// patch pushes base with its last layer replaced under repoTag and
// returns the new digest.
func (e *env) patch(ctx context.Context, t *testing.T, repoTag string, base v1.Image) string {
	t.Helper()
	changed, err := testbed.RandomLayer("app/data", managerLayerSize, 2)
	if err != nil {
		t.Fatal(err)
	}
	_, d, err := e.reg.Patch(ctx, repoTag, base, changed)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// startManager runs m until the test ends and checks that Run returns
// the context's error once cancelled.
func startManager(t *testing.T, m *Manager) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Manager.Run: got %v, want context.Canceled", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("Manager.Run did not return 30s after its context ended")
		}
	})
}

// entry returns ref's entry in m.List.
func entry(m *Manager, ref string) (Entry, bool) {
	for _, e := range m.List() {
		if e.Ref == ref {
			return e, true
		}
	}
	return Entry{}, false
}

// waitEntry polls m.List until cond holds for ref's entry.
func waitEntry(t *testing.T, m *Manager, ref string, d time.Duration, what string, cond func(Entry) bool) Entry {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		e, ok := entry(m, ref)
		if ok && cond(e) {
			return e
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: after %v, %s: got %+v (listed: %v), want %s", ref, d, what, e, ok, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newTestManager(t *testing.T, e *env, opts ManagerOptions) *Manager {
	t.Helper()
	opts.Logger = zaptest.NewLogger(t)
	m, err := NewManager(e.f, opts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestManagerFetchesPatch(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	ref := e.ref("app:1")
	base, running := e.pushAndCRIPull(ctx, t, "app:1", ref)
	const interval = 200 * time.Millisecond
	m := newTestManager(t, e, ManagerOptions{Interval: interval})
	startManager(t, m)

	waitEntry(t, m, ref, 5*time.Second, "the running digest, idle", func(en Entry) bool {
		return en.Running == running && en.State == StateIdle
	})
	// A few cycles of resolves that find the digest the node runs.
	time.Sleep(5 * interval)
	if en, _ := entry(m, ref); en.Running != running || en.New != "" || en.State != StateIdle || en.Error != "" {
		t.Fatalf("%s unpatched: got %+v, want running %s, no new digest, idle, no error", ref, en, running)
	}
	e.proxy.Take()

	patched := e.patch(ctx, t, "app:1", base)
	start := time.Now()
	en := waitEntry(t, m, ref, 10*interval+10*time.Second, "done with the patched digest", func(en Entry) bool {
		return en.State == StateDone || en.State == StateFailed
	})
	t.Logf("patch seen and fetched in %v: %+v", time.Since(start), en)
	if en.State != StateDone || en.New != patched || en.Running != running || en.LayersFetched != 1 {
		t.Fatalf("%s patched: got %+v, want state done, new %s, running %s, 1 layer fetched", ref, en, patched, running)
	}
	if en.BytesDone != en.BytesTotal || en.BytesDone < managerLayerSize {
		t.Errorf("%s patched: bytes %d of %d, want the changed layer's %d and a little more, all done", ref, en.BytesDone, en.BytesTotal, managerLayerSize)
	}
	// Exactly one layer crossed the wire, once: more cycles fetch nothing.
	time.Sleep(5 * interval)
	var layers int
	for d, n := range e.proxy.Take() {
		if n >= managerLayerSize {
			layers++
		}
		t.Logf("served %s: %d bytes", d, n)
	}
	if layers != 1 {
		t.Errorf("%s patched: %d layer blobs served, want 1", ref, layers)
	}
	if en, _ := entry(m, ref); en.State != StateDone || en.New != patched {
		t.Errorf("%s after more cycles: got %+v, want still done with %s", ref, en, patched)
	}
}

func TestManagerTrigger(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	ref := e.ref("app:1")
	base, running := e.pushAndCRIPull(ctx, t, "app:1", ref)
	// Only the first cycle runs in this test: the rest is the trigger's.
	m := newTestManager(t, e, ManagerOptions{Interval: time.Hour})
	startManager(t, m)
	waitEntry(t, m, ref, 5*time.Second, "the running digest, idle", func(en Entry) bool {
		return en.Running == running && en.State == StateIdle
	})

	patched := e.patch(ctx, t, "app:1", base)
	if err := m.Trigger(ref); err != nil {
		t.Fatalf("Trigger %s: %v", ref, err)
	}
	en := waitEntry(t, m, ref, 10*time.Second, "done or failed", func(en Entry) bool {
		return en.State == StateDone || en.State == StateFailed
	})
	if en.State != StateDone || en.New != patched || en.LayersFetched != 1 {
		t.Fatalf("%s triggered: got %+v, want done, new %s, 1 layer fetched", ref, en, patched)
	}

	if err := m.Trigger(ref + "@sha256:" + fmt.Sprintf("%064x", 0)); !errors.Is(err, ErrNotTag) {
		t.Errorf("Trigger of a digest reference: got %v, want ErrNotTag", err)
	}
}

// countingResolver counts Resolve calls for one ref. (The testbed's
// sandbox image, localhost/startgate/pause:1, is a tag on the node too, and is
// watched and resolved as well.)
type countingResolver struct {
	r   resolver
	ref string
	n   atomic.Int64
}

func (c *countingResolver) Resolve(ctx context.Context, ref string) (string, ocispec.Descriptor, error) {
	if ref == c.ref {
		c.n.Add(1)
	}
	return c.r.Resolve(ctx, ref)
}

func TestManagerRegistryDownBacksOff(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	// The registry itself, not the proxy: stopping it refuses connections.
	ref := e.reg.Ref("app:1")
	e.pushAndCRIPull(ctx, t, "app:1", ref)
	const interval = 100 * time.Millisecond
	m := newTestManager(t, e, ManagerOptions{Interval: interval, MaxBackoff: time.Minute})
	cr := &countingResolver{r: m.resolver, ref: ref}
	m.resolver = cr
	if err := e.reg.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	startManager(t, m)

	en := waitEntry(t, m, ref, 5*time.Second, "failed", func(en Entry) bool { return en.State == StateFailed })
	if en.Error == "" {
		t.Errorf("%s with the registry down: got %+v, want an error", ref, en)
	}
	before := cr.n.Load()
	const window = 3 * time.Second
	time.Sleep(window)
	got := cr.n.Load() - before
	// Backoff from the interval, doubling: 0.1+0.2+0.4+0.8+1.6 s covers the
	// window in about 5 attempts; at the interval it would be 30.
	t.Logf("%d resolves in %v with the registry down", got, window)
	if got < 1 || got > 8 {
		t.Errorf("%s with the registry down: %d resolves in %v, want 1 to 8 (backoff, no busy loop)", ref, got, window)
	}
	if en, _ := entry(m, ref); en.State != StateFailed || en.Error == "" {
		t.Errorf("%s with the registry down: got %+v, want failed with an error", ref, en)
	}
}
