package prefetch

import (
	"context"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remotecri "k8s.io/cri-client/pkg"

	"github.com/startgate/startgate/harness/testbed"
)

const layerSize = 20 << 20

type env struct {
	tb     *testbed.Testbed
	reg    *testbed.Registry
	proxy  *testbed.Front // every image reference names it: its counts are what crossed the wire
	client *containerd.Client
	cri    internalapi.ImageManagerService
	f      *Fetcher
}

func newEnv(t *testing.T) *env {
	ctx := context.Background()
	e := &env{tb: testbed.StartT(t, testbed.Options{})}
	e.reg = testbed.StartRegistryT(t, testbed.RegistryOptions{})
	e.proxy = testbed.StartFrontT(t, e.reg)
	var err error
	if e.client, err = containerd.New(e.tb.Endpoint(), containerd.WithDefaultNamespace(DefaultNamespace)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.client.Close() })
	e.cri, err = remotecri.NewRemoteImageServiceBuilder().
		WithEndpoint("unix://" + e.tb.Endpoint()).
		WithConnectionTimeout(30 * time.Second).
		WithTracerProvider(nil).
		Build(ctx)
	if err != nil {
		t.Fatalf("cri image client: %v", err)
	}
	t.Cleanup(func() { _ = e.cri.Close(ctx) })
	if e.f, err = New(e.client, Options{Snapshotter: e.tb.Snapshotter()}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.f.Close)
	return e
}

// ref names repoTag through the proxy.
func (e *env) ref(repoTag string) string { return e.proxy.Host() + "/" + repoTag }

// pushAndPull pushes busybox plus a random layer as app:1, pulls it
// through the CRI as kubelet would, then pushes the patch (the random
// layer replaced) and returns the patched image and its changed layer.
func (e *env) pushAndPull(ctx context.Context, t *testing.T) (base, patched v1.Image, changed v1.Layer) {
	t.Helper()
	app, err := testbed.RandomLayer("app/data", layerSize, 1)
	if err != nil {
		t.Fatal(err)
	}
	base, err = testbed.BusyboxImage(app)
	if err == nil {
		base, err = testbed.WithEntrypoint(base, "sleep", "3600")
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.Push(ctx, "app:1", base); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	id, err := e.cri.PullImage(ctx, &runtimeapi.ImageSpec{Image: e.ref("app:1")}, nil, nil)
	if err != nil {
		t.Fatalf("CRI PullImage %s: %v", e.ref("app:1"), err)
	}
	t.Logf("CRI PullImage of app:1 (busybox + %d MB): %v", layerSize>>20, time.Since(start))
	if want, _ := base.ConfigName(); id != want.String() {
		t.Fatalf("CRI PullImage app:1: image ID %s, want %s", id, want)
	}
	// The counting proxy sees the CRI's pulls: without a prefetch, the
	// app layer crosses it.
	appDigest, _ := app.Digest()
	appSize, _ := app.Size()
	if got := e.proxy.Take()[appDigest.String()]; got != appSize {
		t.Fatalf("CRI PullImage app:1: proxy counted %d bytes of the app layer %s, want %d", got, appDigest, appSize)
	}
	if changed, err = testbed.RandomLayer("app/data", layerSize, 2); err != nil {
		t.Fatal(err)
	}
	if patched, _, err = e.reg.Patch(ctx, "app:1", base, changed); err != nil {
		t.Fatal(err)
	}
	e.proxy.Take()
	return base, patched, changed
}

func (e *env) nsctx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, DefaultNamespace)
}

// snapshotCount counts the snapshots of the CRI's snapshotter.
func (e *env) snapshotCount(ctx context.Context, t *testing.T) int {
	t.Helper()
	n := 0
	err := e.client.SnapshotService(e.tb.Snapshotter()).Walk(e.nsctx(ctx), func(context.Context, snapshots.Info) error {
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// collectGarbage runs containerd's GC and waits for it: deleting a lease
// with SynchronousDelete does that (ctr leases rm --sync) in 1.6 too.
func (e *env) collectGarbage(ctx context.Context, t *testing.T) {
	t.Helper()
	ls := e.client.LeasesService()
	l, err := ls.Create(e.nsctx(ctx), leases.WithRandomID())
	if err != nil {
		t.Fatal(err)
	}
	if err := ls.Delete(e.nsctx(ctx), l, leases.SynchronousDelete); err != nil {
		t.Fatalf("GC (sync lease delete): %v", err)
	}
}

func TestFetchPatchedLayerOnly(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	base, patched, changed := e.pushAndPull(ctx, t)
	ref := e.ref("app:1")
	oldID, _ := base.ConfigName()
	newID, _ := patched.ConfigName()
	newDigest, _ := patched.Digest()
	changedDigest, _ := changed.Digest()
	changedSize, _ := changed.Size()

	start := time.Now()
	res, err := e.f.Fetch(ctx, ref, "")
	if err != nil {
		t.Fatalf("Fetch %s: %v", ref, err)
	}
	t.Logf("Fetch of the patch (%d MB layer): %v; %+v", layerSize>>20, time.Since(start), res)
	served := e.proxy.Take()

	if res.Digest.String() != newDigest.String() || res.Config.String() != newID.String() {
		t.Errorf("Fetch %s: digest %s config %s, want %s and %s", ref, res.Digest, res.Config, newDigest, newID)
	}
	if res.LayersFetched != 1 || res.LayersPresent != len(res.Layers)-1 {
		t.Errorf("Fetch %s: %d layers fetched, %d present of %d; want 1 fetched, the rest present", ref, res.LayersFetched, res.LayersPresent, len(res.Layers))
	}
	for _, l := range res.Layers {
		if l.Fetched != (l.Digest.String() == changedDigest.String()) {
			t.Errorf("Fetch %s: layer %s fetched=%v; want only %s fetched", ref, l.Digest, l.Fetched, changedDigest)
		}
	}
	if res.LayerBytes != changedSize {
		t.Errorf("Fetch %s: %d layer bytes, want the changed layer's %d", ref, res.LayerBytes, changedSize)
	}
	if extra := res.Bytes - res.LayerBytes; extra < 0 || extra > 64<<10 {
		t.Errorf("Fetch %s: %d bytes besides layers, want the manifest and config (under 64 KiB)", ref, extra)
	}
	// What the registry served, by digest: the changed layer and the new
	// config, nothing else.
	var servedTotal int64
	for d, n := range served {
		servedTotal += n
		if d != changedDigest.String() && d != newID.String() {
			t.Errorf("registry served blob %s (%d bytes) to Fetch; want only %s and the config", d, n, changedDigest)
		}
	}
	if served[changedDigest.String()] != changedSize || servedTotal > res.Bytes {
		t.Errorf("registry served %v to Fetch (total %d); want %d bytes of %s, at most %d in all", served, servedTotal, changedSize, changedDigest, res.Bytes)
	}
	if res.SnapshotsCreated != 1 {
		t.Errorf("Fetch %s: %d snapshots created, want 1 (the changed top layer)", ref, res.SnapshotsCreated)
	}

	// The tag has not moved: the CRI still reports the old image for it.
	st, err := e.cri.ImageStatus(ctx, &runtimeapi.ImageSpec{Image: ref}, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.GetImage().GetId(); got != oldID.String() {
		t.Errorf("CRI ImageStatus %s after Fetch: ID %s, want the old %s (tag not moved)", ref, got, oldID)
	}

	// GC with a control blob that nothing protects: it must go, and what
	// the lease holds must stay.
	control := e.writeUnprotectedBlob(ctx, t)
	e.collectGarbage(ctx, t)
	cs := e.client.ContentStore()
	if _, err := cs.Info(e.nsctx(ctx), control); !errdefs.IsNotFound(err) {
		t.Fatalf("control blob %s after GC: %v; want not found (did GC run?)", control, err)
	}
	for _, d := range append([]digest.Digest{res.Digest, res.Manifest, res.Config}, layerDigests(res)...) {
		if _, err := cs.Info(e.nsctx(ctx), d); err != nil {
			t.Errorf("blob %s after GC with the lease held: %v", d, err)
		}
	}
	e.checkChain(ctx, t, patched)

	// Kubelet's pull of the patched tag: same image, no blob bytes, no
	// new snapshot.
	before := e.snapshotCount(ctx, t)
	start = time.Now()
	id, err := e.cri.PullImage(ctx, &runtimeapi.ImageSpec{Image: ref}, nil, nil)
	if err != nil {
		t.Fatalf("CRI PullImage %s after Fetch: %v", ref, err)
	}
	t.Logf("CRI PullImage of the prefetched patch: %v", time.Since(start))
	if id != newID.String() {
		t.Errorf("CRI PullImage %s after Fetch: ID %s, want %s", ref, id, newID)
	}
	if served := e.proxy.Take(); len(served) != 0 {
		t.Errorf("registry served blobs %v to the CRI's pull after Fetch, want none", served)
	}
	if after := e.snapshotCount(ctx, t); after != before {
		t.Errorf("CRI PullImage after Fetch: %d snapshots, %d before; want no unpack", after, before)
	}

	// Used: the CRI's image records now hold the image through the GC
	// labels Fetch set, so the lease can go.
	if err := e.client.LeasesService().Delete(e.nsctx(ctx), leases.Lease{ID: res.Lease}, leases.SynchronousDelete); err != nil {
		t.Fatalf("delete lease %s: %v", res.Lease, err)
	}
	for _, d := range append([]digest.Digest{res.Digest, res.Manifest, res.Config}, layerDigests(res)...) {
		if _, err := cs.Info(e.nsctx(ctx), d); err != nil {
			t.Errorf("blob %s after the CRI pull, the lease deleted and GC: %v", d, err)
		}
	}
	e.checkChain(ctx, t, patched)
}

// writeUnprotectedBlob commits a small blob under no lease.
func (e *env) writeUnprotectedBlob(ctx context.Context, t *testing.T) digest.Digest {
	t.Helper()
	data := []byte("startgate prefetch GC control " + time.Now().String())
	d := digest.FromBytes(data)
	if err := content.WriteBlob(e.nsctx(ctx), e.client.ContentStore(), "control-"+d.Encoded(), strings.NewReader(string(data)), ocispec.Descriptor{MediaType: "application/octet-stream", Digest: d, Size: int64(len(data))}); err != nil {
		t.Fatal(err)
	}
	return d
}

// checkChain checks every snapshot of img's chain in the CRI's snapshotter.
func (e *env) checkChain(ctx context.Context, t *testing.T, img v1.Image) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	var diffIDs []digest.Digest
	for _, h := range cf.RootFS.DiffIDs {
		diffIDs = append(diffIDs, digest.Digest(h.String()))
	}
	sn := e.client.SnapshotService(e.tb.Snapshotter())
	for _, id := range identity.ChainIDs(diffIDs) {
		if _, err := sn.Stat(e.nsctx(ctx), id.String()); err != nil {
			t.Errorf("snapshot %s after GC with the lease held: %v", id, err)
		}
	}
}

func layerDigests(res Result) []digest.Digest {
	var ds []digest.Digest
	for _, l := range res.Layers {
		ds = append(ds, l.Digest)
	}
	return ds
}

func TestFetchCorruptedBlob(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	_, patched, changed := e.pushAndPull(ctx, t)
	ref := e.ref("app:1")
	changedDigest, _ := changed.Digest()
	leasesBefore := e.prefetchLeases(ctx, t)

	e.proxy.SetCorrupt(changedDigest.String())
	res, err := e.f.Fetch(ctx, ref, "")
	if err == nil {
		t.Fatalf("Fetch %s with a corrupted layer = %+v, want an error", ref, res)
	}
	t.Logf("Fetch with a corrupted layer: %v", err)
	if !strings.Contains(err.Error(), changedDigest.String()) {
		t.Errorf("Fetch error %q does not name the corrupted layer %s", err, changedDigest)
	}
	cs := e.client.ContentStore()
	if _, err := cs.Info(e.nsctx(ctx), digest.Digest(changedDigest.String())); !errdefs.IsNotFound(err) {
		t.Errorf("corrupted layer %s in the content store: %v; want not found", changedDigest, err)
	}
	sts, err := cs.ListStatuses(e.nsctx(ctx))
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range sts {
		if st.Expected.String() == changedDigest.String() || strings.Contains(st.Ref, changedDigest.String()) {
			t.Errorf("an ingest of the corrupted layer is left: %+v", st)
		}
	}
	if after := e.prefetchLeases(ctx, t); after != leasesBefore {
		t.Errorf("prefetch leases after a failed Fetch: %d, want %d (its lease deleted)", after, leasesBefore)
	}

	// The registry heals: the same Fetch succeeds, pinned to the digest.
	e.proxy.SetCorrupt("")
	want, _ := patched.Digest()
	res, err = e.f.Fetch(ctx, ref, want.String())
	if err != nil {
		t.Fatalf("Fetch %s@%s after the corruption stopped: %v", ref, want, err)
	}
	if res.LayersFetched != 1 || res.Digest.String() != want.String() {
		t.Errorf("Fetch after the corruption stopped: %d layers fetched, digest %s; want 1 and %s", res.LayersFetched, res.Digest, want)
	}
}

func (e *env) prefetchLeases(ctx context.Context, t *testing.T) int {
	t.Helper()
	ls, err := e.client.LeasesService().List(e.nsctx(ctx), `labels."`+LeaseLabel+`"`)
	if err != nil {
		t.Fatal(err)
	}
	return len(ls)
}

func TestFetchLeaseExpires(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	_, _, changed := e.pushAndPull(ctx, t)
	changedDigest, _ := changed.Digest()
	f, err := New(e.client, Options{Snapshotter: e.tb.Snapshotter(), LeaseExpiry: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := f.Fetch(ctx, e.ref("app:1"), "")
	if err != nil {
		t.Fatal(err)
	}
	if res.LayersFetched != 1 {
		t.Fatalf("Fetch: %d layers fetched, want 1", res.LayersFetched)
	}
	// The one wait on the wall clock in this package: containerd's GC
	// compares the lease's expiry with its own clock.
	time.Sleep(time.Until(res.Expires) + 100*time.Millisecond)
	e.collectGarbage(ctx, t)
	if _, err := e.client.ContentStore().Info(e.nsctx(ctx), digest.Digest(changedDigest.String())); !errdefs.IsNotFound(err) {
		t.Errorf("prefetched layer %s after its lease expired and GC ran: %v; want not found", changedDigest, err)
	}
	if _, err := e.client.ContentStore().Info(e.nsctx(ctx), res.Layers[0].Digest); err != nil {
		t.Errorf("base layer %s (the old tag's) after GC: %v; want kept by the CRI's image record", res.Layers[0].Digest, err)
	}
}
