package prefetch

import (
	"context"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	"go.uber.org/zap/zaptest"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/startgate/startgate/harness/testbed"
)

// pauser stops every blob body once after bytes have crossed, until
// resumed: the test sees the fetch mid-flight without racing it.
type pauser struct {
	after          int64
	paused, resume chan struct{}

	mu    sync.Mutex
	n     int64
	fired bool
}

func newPauser(after int64) *pauser {
	return &pauser{after: after, paused: make(chan struct{}), resume: make(chan struct{})}
}

type pausingReader struct {
	ctx context.Context
	r   io.Reader
	p   *pauser
}

func (pr *pausingReader) Read(b []byte) (int, error) {
	n, err := pr.r.Read(b)
	pr.p.mu.Lock()
	pr.p.n += int64(n)
	fire := !pr.p.fired && pr.p.n >= pr.p.after
	if fire {
		pr.p.fired = true
	}
	pr.p.mu.Unlock()
	if fire {
		close(pr.p.paused)
		select {
		case <-pr.p.resume:
		case <-pr.ctx.Done():
			return n, pr.ctx.Err()
		}
	}
	return n, err
}

// leaseExists says whether containerd has lease id.
func (e *env) leaseExists(ctx context.Context, t *testing.T, id string) bool {
	t.Helper()
	ls, err := e.client.LeasesService().List(e.nsctx(ctx), "id=="+id)
	if err != nil {
		t.Fatal(err)
	}
	return len(ls) == 1
}

// rollbackLeases returns containerd's rollback leases by their label.
func (e *env) rollbackLeases(ctx context.Context, t *testing.T) map[string]leases.Lease {
	t.Helper()
	ls, err := e.client.LeasesService().List(e.nsctx(ctx), `labels."`+RollbackLabel+`"`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]leases.Lease{}
	for _, l := range ls {
		out[l.Labels[RollbackLabel]] = l
	}
	return out
}

// topChainID is the chain ID of img's last layer: its own snapshot.
func topChainID(t *testing.T, img v1.Image) string {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	var diffIDs []digest.Digest
	for _, h := range cf.RootFS.DiffIDs {
		diffIDs = append(diffIDs, digest.Digest(h.String()))
	}
	return identity.ChainID(diffIDs).String()
}

// TestManagerLiveProgressHitAndRollback follows a patch on the real stack:
// the fetch's progress mid-flight (bandwidth-capped), kubelet's pull served
// from it (Pulled: a hit, the prefetch lease deleted), and the digest the
// node ran kept through kubelet's image GC and containerd's GC by the
// rollback lease, until that lease is gone.
func TestManagerLiveProgressHitAndRollback(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	ref := e.ref("app:1")
	base, running := e.pushAndCRIPull(ctx, t, "app:1", ref)

	th, err := NewThrottle(ThrottleOptions{BytesPerSecond: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	pause := newPauser(managerLayerSize / 2)
	f, err := New(e.client, Options{
		Snapshotter: e.tb.Snapshotter(),
		WrapReader: func(ctx context.Context, r io.Reader) io.Reader {
			return &pausingReader{ctx: ctx, r: th.Reader(ctx, r), p: pause}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	obs := &fakeObserver{}
	m, err := NewManager(f, ManagerOptions{
		Interval: time.Hour, Throttle: th, Observer: obs, RollbackWindow: time.Hour,
		Logger: zaptest.NewLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	events, cancel := m.Subscribe(256)
	defer cancel()
	startManager(t, m)
	waitEntry(t, m, ref, 10*time.Second, "the running digest, idle", func(en Entry) bool {
		return en.Running == running && en.State == StateIdle
	})

	// Live progress: stopped half-way through the changed layer.
	changed, err := testbed.RandomLayer("app/data", managerLayerSize, 2)
	if err != nil {
		t.Fatal(err)
	}
	patchedImg, patched, err := e.reg.Patch(ctx, "app:1", base, changed)
	if err != nil {
		t.Fatal(err)
	}
	newID, _ := patchedImg.ConfigName()
	if err := m.Trigger(ref); err != nil {
		t.Fatal(err)
	}
	select {
	case <-pause.paused:
	case <-time.After(60 * time.Second):
		t.Fatalf("%s: the fetch never got half-way through the changed layer", ref)
	}
	mid, _ := entry(m, ref)
	if mid.State != StateFetching || mid.New != patched || mid.BytesDone <= 0 || mid.BytesDone >= mid.BytesTotal ||
		mid.BytesTotal < managerLayerSize || mid.Config != newID.String() {
		t.Errorf("%s mid-fetch: got %+v, want fetching %s, 0 < bytes done < bytes total (at least the %d-byte layer), config %s",
			ref, mid, patched, managerLayerSize, newID)
	}
	close(pause.resume)
	en := waitEntry(t, m, ref, 60*time.Second, "done or failed", func(en Entry) bool {
		return en.State == StateDone || en.State == StateFailed
	})
	changedDigest, _ := changed.Digest()
	if en.State != StateDone || en.BytesDone != en.BytesTotal || en.BytesDone < mid.BytesTotal-1024 ||
		!slices.Equal(en.FetchedLayers, []string{changedDigest.String()}) || en.Lease == "" || en.Expires.IsZero() {
		t.Fatalf("%s done: got %+v, want done, all %d bytes, fetched layers [%s], a lease", ref, en, mid.BytesTotal, changedDigest)
	}
	if !e.leaseExists(ctx, t, en.Lease) {
		t.Fatalf("prefetch lease %s of a done entry not in containerd", en.Lease)
	}
	// (The testbed's sandbox image, localhost/startgate/pause:1, is on the
	// node and watched too; it has no registry, so its resolves fail.)
	bytes, done, failed, _ := obs.get()
	failed = slices.DeleteFunc(failed, func(s string) bool { return !strings.HasPrefix(s, ref+":") })
	if bytes != en.BytesDone || !slices.Equal(done, []string{ref + "@" + patched}) || len(failed) != 0 {
		t.Errorf("observer: %d bytes, done %v, failed %v; want %d bytes, done [%s@%s], no failure of %s", bytes, done, failed, en.BytesDone, ref, patched, ref)
	}

	// Kubelet's pull through the proxy: served from the prefetch.
	e.proxy.Take()
	id, err := e.cri.PullImage(ctx, &runtimeapi.ImageSpec{Image: ref}, nil, nil)
	if err != nil {
		t.Fatalf("CRI PullImage %s: %v", ref, err)
	}
	if !m.Pulled(ctx, ref, id) {
		t.Fatalf("Pulled(%s, %s) after the prefetch = false, want a hit", ref, id)
	}
	if e.leaseExists(ctx, t, en.Lease) {
		t.Errorf("prefetch lease %s still there after the hit, want deleted", en.Lease)
	}
	if _, _, _, hits := obs.get(); !slices.Equal(hits, []string{ref}) {
		t.Errorf("observer hits: got %v, want [%s]", hits, ref)
	}
	en = waitEntry(t, m, ref, 30*time.Second, "the old digest protected", func(en Entry) bool { return en.Previous != "" })
	if en.State != StateIdle || en.Running != patched || en.Hits != 1 || en.Previous != running ||
		en.PreviousUntil.Before(time.Now().Add(59*time.Minute)) {
		t.Errorf("%s after the hit: got %+v, want idle at %s, 1 hit, previous %s protected for an hour", ref, en, patched, running)
	}
	if served := e.proxy.Take(); len(served) != 0 {
		t.Errorf("blobs served for the pull and the rollback protection: %v, want none", served)
	}
	named, _ := pinnedRef(ref, running)
	rl, ok := e.rollbackLeases(ctx, t)[named.String()]
	if !ok {
		t.Fatalf("no lease labelled %s=%s", RollbackLabel, named)
	}

	// Kubelet's image GC removes the old image's records; containerd's GC
	// runs: the lease keeps all of it.
	oldID, _ := base.ConfigName()
	if err := e.cri.RemoveImage(ctx, &runtimeapi.ImageSpec{Image: oldID.String()}); err != nil {
		t.Fatalf("CRI RemoveImage %s: %v", oldID, err)
	}
	if st, err := e.cri.ImageStatus(ctx, &runtimeapi.ImageSpec{Image: oldID.String()}, false); err != nil || st.GetImage() != nil {
		t.Fatalf("CRI ImageStatus %s after RemoveImage: %v, %v; want no image", oldID, st.GetImage(), err)
	}
	control := e.writeUnprotectedBlob(ctx, t)
	e.collectGarbage(ctx, t)
	cs := e.client.ContentStore()
	if _, err := cs.Info(e.nsctx(ctx), control); !errdefs.IsNotFound(err) {
		t.Fatalf("control blob %s after GC: %v; want not found (did GC run?)", control, err)
	}
	baseLayers, _ := base.Layers()
	oldApp, _ := baseLayers[len(baseLayers)-1].Digest()
	oldBlobs := []string{running, oldID.String(), oldApp.String()}
	for _, d := range oldBlobs {
		if _, err := cs.Info(e.nsctx(ctx), digest.Digest(d)); err != nil {
			t.Errorf("old image's blob %s after its records went and GC ran, rollback lease held: %v", d, err)
		}
	}
	e.checkChain(ctx, t, base)

	// The lease gone, the next GC takes what only it held.
	if err := e.client.LeasesService().Delete(e.nsctx(ctx), rl, leases.SynchronousDelete); err != nil {
		t.Fatalf("delete rollback lease %s: %v", rl.ID, err)
	}
	for _, d := range oldBlobs {
		if _, err := cs.Info(e.nsctx(ctx), digest.Digest(d)); !errdefs.IsNotFound(err) {
			t.Errorf("old image's blob %s after the rollback lease was deleted and GC ran: %v; want not found", d, err)
		}
	}
	top := topChainID(t, base)
	if _, err := e.client.SnapshotService(e.tb.Snapshotter()).Stat(e.nsctx(ctx), top); !errdefs.IsNotFound(err) {
		t.Errorf("old image's top snapshot %s after the rollback lease was deleted and GC ran: %v; want not found", top, err)
	}
	e.checkChain(ctx, t, patchedImg) // the new image is untouched

	// The events a watcher saw, in order, for this ref.
	var kinds []string
	for len(events) > 0 {
		ev := <-events
		if ev.Entry.Ref == ref {
			kinds = append(kinds, string(ev.Kind)+":"+string(ev.Entry.State))
		}
	}
	want := []string{"state:idle", "state:pending", "state:fetching", "state:done", "hit:idle", "state:idle", "rollback:idle"}
	if !slices.Equal(kinds, want) {
		t.Errorf("events for %s: got %v, want %v", ref, kinds, want)
	}
}

// TestProtectMissingImage: Protect of a digest the node does not have
// fails and leaves no lease.
func TestProtectMissingImage(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	ref := e.ref("app:1")
	if _, err := e.f.Protect(ctx, ref, "sha256:"+zeros64, time.Minute); err == nil {
		t.Errorf("Protect of a digest not on the node: no error")
	}
	if n := len(e.rollbackLeases(ctx, t)); n != 0 {
		t.Errorf("%d rollback leases after a failed Protect, want 0", n)
	}
}

// TestManagerJoinRealStack: a prefetch held back by admission is joined by
// a pull: it starts at once, the pull waits for it, and the pull then
// moves no blob bytes.
func TestManagerJoinRealStack(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	ref := e.ref("app:1")
	base, running := e.pushAndCRIPull(ctx, t, "app:1", ref)
	adm := &blockedAdmitter{}
	m := newTestManager(t, e, ManagerOptions{Interval: time.Hour, Admitter: adm})
	startManager(t, m)
	waitEntry(t, m, ref, 10*time.Second, "the running digest, idle", func(en Entry) bool {
		return en.Running == running && en.State == StateIdle
	})
	patched := e.patch(ctx, t, "app:1", base)
	if err := m.Trigger(ref); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the fetch to ask admission", func() bool { asked, _ := adm.counts(); return asked == 1 })
	if en, _ := entry(m, ref); en.State != StatePending || en.New != patched {
		t.Fatalf("%s held back by admission: got %+v, want pending %s", ref, en, patched)
	}
	e.proxy.Take()

	joined, err := m.Join(ctx, ref)
	if !joined || err != nil {
		t.Fatalf("Join(%s): got %v, %v; want true, nil", ref, joined, err)
	}
	en, _ := entry(m, ref)
	if en.State != StateDone || en.LayersFetched != 1 {
		t.Fatalf("%s after Join returned: got %+v, want done, 1 layer fetched", ref, en)
	}
	if _, givenUp := adm.counts(); givenUp != 1 {
		t.Errorf("admission wait given up %d times, want 1", givenUp)
	}
	e.proxy.Take()
	id, err := e.cri.PullImage(ctx, &runtimeapi.ImageSpec{Image: ref}, nil, nil)
	if err != nil {
		t.Fatalf("CRI PullImage %s: %v", ref, err)
	}
	if served := e.proxy.Take(); len(served) != 0 {
		t.Errorf("blobs served to the pull that joined the prefetch: %v, want none", served)
	}
	if !m.Pulled(ctx, ref, id) {
		t.Errorf("Pulled(%s, %s) = false, want a hit", ref, id)
	}
}
