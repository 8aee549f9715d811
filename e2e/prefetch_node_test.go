package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
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
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/startgate/startgate/harness/testbed"
)

// prefetchOptions shape a node with [prefetch] on.
type prefetchOptions struct {
	// notifications points the registry's webhook at startgated (through
	// the relay) with a bearer token from prefetch.notifications.token_file.
	notifications bool
	// interval is prefetch.interval; 0 means an hour, so that only
	// notifications (and the first cycle) resolve.
	interval time.Duration
	// maxBackoff is prefetch.max_backoff; 0 means interval.
	maxBackoff time.Duration
	// leaseExpiry is prefetch.lease_expiry; 0 leaves the default.
	leaseExpiry time.Duration
	// bandwidth is prefetch.bandwidth; "" leaves the default.
	bandwidth string
	// extra is more TOML for the [prefetch] section (keys only).
	extra string
	// metrics sets metrics.listen to a free loopback address (metricsURL).
	metrics bool
	// rootSize, when positive, gives containerd a root of this many
	// bytes (a tmpfs): a node whose disk fills.
	rootSize int64
}

// prefetchNode is a node with prefetch on, a testbed registry behind a
// front, and a containerd client on the testbed for what the CRI does not
// show (content store, leases, snapshots, GC).
type prefetchNode struct {
	*node
	opts  prefetchOptions
	reg   *testbed.Registry
	front *testbed.Front
	relay *notifyRelay // nil with notifications off
	cd    *containerd.Client
	// metricsAddr is metrics.listen with prefetchOptions.metrics.
	metricsAddr string
}

func startPrefetchNode(t testing.TB, o prefetchOptions) *prefetchNode {
	t.Helper()
	if o.interval == 0 {
		o.interval = time.Hour
	}
	if o.maxBackoff == 0 {
		o.maxBackoff = o.interval
	}
	pn := &prefetchNode{opts: o}
	var listen, tokenFile string
	regOpts := testbed.RegistryOptions{}
	if o.notifications {
		listen = freeLoopbackAddr(t)
		tok := make([]byte, 16)
		_, _ = rand.Read(tok)
		token := hex.EncodeToString(tok)
		tokenFile = filepath.Join(t.TempDir(), "notify.token")
		if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		pn.relay = startRelay(t, listen)
		regOpts.NotifyURL, regOpts.NotifyToken = pn.relay.url(), token
	}
	pn.reg = testbed.StartRegistryT(t, regOpts)
	pn.front = testbed.StartFrontT(t, pn.reg)
	pn.node = startNode(t, nodeOptions{testbed: testbed.Options{RootSize: o.rootSize}, configFor: func(n *node) string {
		tb := n.tb
		var b strings.Builder
		// The gate's IO target is also prefetch's: a fetch waits while IO
		// pressure is above it. This machine is shared (other jobs' IO
		// shows in the system-wide PSI these tests read), and what these
		// tests check is the notification, fetch and GC path, not that
		// wait (internal/prefetch's throttle tests cover it); so the
		// target is the highest valid one, 1.0, which never holds a
		// fetch back.
		b.WriteString("[admission.targets]\nio = 1.0\n")
		fmt.Fprintf(&b, "[prefetch]\nenabled = true\nsnapshotter = %q\ninterval = %q\nmax_backoff = %q\n",
			tb.Snapshotter(), o.interval.String(), o.maxBackoff.String())
		if o.leaseExpiry > 0 {
			fmt.Fprintf(&b, "lease_expiry = %q\n", o.leaseExpiry.String())
		}
		if o.bandwidth != "" {
			fmt.Fprintf(&b, "bandwidth = %q\n", o.bandwidth)
		}
		b.WriteString(o.extra)
		if o.metrics {
			pn.metricsAddr = freeLoopbackAddr(t)
			fmt.Fprintf(&b, "[metrics]\nlisten = %q\n", pn.metricsAddr)
		}
		if o.notifications {
			fmt.Fprintf(&b, "[prefetch.notifications]\nlisten = %q\ntoken_file = %q\n", listen, tokenFile)
		}
		return b.String()
	}})
	var err error
	pn.cd, err = containerd.New(pn.tb.Endpoint(), containerd.WithDefaultNamespace(testbed.Namespace))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pn.cd.Close() })
	return pn
}

// appImage is busybox plus a layer of size random bytes from seed at
// /app/data, running sleep: the app whose last layer a patch replaces.
func appImage(t testing.TB, size int, seed uint64) (v1.Image, v1.Layer) {
	t.Helper()
	l, err := testbed.RandomLayer("app/data", size, seed)
	if err != nil {
		t.Fatal(err)
	}
	img, err := testbed.BusyboxImage(l)
	if err == nil {
		img, err = testbed.WithEntrypoint(img, "sleep", "3600")
	}
	if err != nil {
		t.Fatal(err)
	}
	return img, l
}

// patchOf is base with its last layer replaced by a random layer of size
// bytes from seed: a patch.
func patchOf(t testing.TB, base v1.Image, size int, seed uint64) (v1.Image, v1.Layer) {
	t.Helper()
	l, err := testbed.RandomLayer("app/data", size, seed)
	if err != nil {
		t.Fatal(err)
	}
	img, err := testbed.ReplaceLastLayer(base, l)
	if err != nil {
		t.Fatal(err)
	}
	return img, l
}

func (pn *prefetchNode) push(ctx context.Context, repoTag string, img v1.Image) string {
	pn.t.Helper()
	d, err := pn.front.Push(ctx, repoTag, img)
	if err != nil {
		pn.t.Fatal(err)
	}
	return d
}

// pull is kubelet's PullImage through startgated's proxy; it returns the
// image ref the CRI answers (the config digest).
// runningApp pushes an app image (layers of prefetchLayerSize from seed)
// as app:1, pulls it onto the node and waits, for up to wait, until
// prefetch watches the tag idle at that digest: the node as it runs a
// release before the patch. It returns the reference, the image and its
// digest.
func (pn *prefetchNode) runningApp(ctx context.Context, seed uint64, wait time.Duration) (string, v1.Image, string) {
	pn.t.Helper()
	base, _ := appImage(pn.t, prefetchLayerSize, seed)
	return pn.runningAppOf(ctx, base, wait)
}

// runningAppOf is runningApp with the image given.
func (pn *prefetchNode) runningAppOf(ctx context.Context, base v1.Image, wait time.Duration) (string, v1.Image, string) {
	pn.t.Helper()
	ref := pn.front.Ref("app:1")
	running := pn.push(ctx, "app:1", base)
	pn.pull(ctx, ref)
	pn.waitEntry(ref, wait, "idle on the running digest", func(e prefetchEntry) bool {
		return e.RunningDigest == running && e.State == "idle"
	})
	return ref, base, running
}

func (pn *prefetchNode) pull(ctx context.Context, ref string) string {
	pn.t.Helper()
	return pn.pullFor(ctx, ref, nil)
}

// pullFor pulls ref for the pod sb describes, as kubelet does.
func (pn *prefetchNode) pullFor(ctx context.Context, ref string, sb *runtimeapi.PodSandboxConfig) string {
	pn.t.Helper()
	id, err := pn.is.PullImage(ctx, &runtimeapi.ImageSpec{Image: ref}, nil, sb)
	if err != nil {
		pn.t.Fatalf("PullImage %s through the proxy: %v", ref, err)
	}
	return id
}

// prefetchEntry is an entry of `startgatectl prefetch ls -o json`.
type prefetchEntry struct {
	Reference     string     `json:"reference"`
	RunningDigest string     `json:"running_digest"`
	NewDigest     string     `json:"new_digest"`
	State         string     `json:"state"`
	BytesDone     int64      `json:"bytes_done"`
	BytesTotal    int64      `json:"bytes_total"`
	LayersFetched int        `json:"layers_fetched"`
	FetchedLayers []string   `json:"fetched_layers"`
	ConfigDigest  string     `json:"config_digest"`
	Error         string     `json:"error"`
	Updated       *time.Time `json:"updated"`
	Lease         string     `json:"lease"`
	Expires       *time.Time `json:"expires"`
	Hits          int        `json:"hits"`
	// PreviousDigest is what the node ran before (the rollback window).
	PreviousDigest string `json:"previous_digest"`
}

func (e prefetchEntry) String() string {
	return fmt.Sprintf("{ref %s running %s new %s state %s bytes %d/%d layers %d %v error %q}",
		e.Reference, e.RunningDigest, e.NewDigest, e.State, e.BytesDone, e.BytesTotal, e.LayersFetched, e.FetchedLayers, e.Error)
}

// prefetchLs runs the real `startgatectl prefetch ls -o json`.
func (pn *prefetchNode) prefetchLs() []prefetchEntry {
	pn.t.Helper()
	out := pn.ctl("prefetch", "ls", "-o", "json")
	var es []prefetchEntry
	if err := json.Unmarshal([]byte(out), &es); err != nil {
		pn.t.Fatalf("prefetch ls -o json: %v\n%s", err, out)
	}
	return es
}

func (pn *prefetchNode) prefetchEntry(ref string) (prefetchEntry, bool) {
	pn.t.Helper()
	for _, e := range pn.prefetchLs() {
		if e.Reference == ref {
			return e, true
		}
	}
	return prefetchEntry{}, false
}

// waitEntry polls prefetch ls (every 100 ms: each poll is a process)
// until ref's entry satisfies cond.
func (pn *prefetchNode) waitEntry(ref string, d time.Duration, what string, cond func(prefetchEntry) bool) prefetchEntry {
	pn.t.Helper()
	deadline := time.Now().Add(d)
	for {
		e, ok := pn.prefetchEntry(ref)
		if ok && cond(e) {
			return e
		}
		if time.Now().After(deadline) {
			pn.t.Fatalf("prefetch ls: %s: not %s after %v; last seen: %v (listed: %v); relay: %v\nstartgated's prefetch log:\n%s",
				ref, what, d, e, ok, pn.relay, pn.logLines("prefetch", 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (pn *prefetchNode) nsctx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, testbed.Namespace)
}

// hasBlob reports whether containerd's content store holds d.
func (pn *prefetchNode) hasBlob(ctx context.Context, d string) bool {
	pn.t.Helper()
	_, err := pn.cd.ContentStore().Info(pn.nsctx(ctx), digest.Digest(d))
	if err != nil && !errdefs.IsNotFound(err) {
		pn.t.Fatalf("content store Info %s: %v", d, err)
	}
	return err == nil
}

// hasSnapshot reports whether the CRI's snapshotter has the top of img's
// chain (what an unpack of img creates last).
func (pn *prefetchNode) hasSnapshot(ctx context.Context, img v1.Image) bool {
	pn.t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		pn.t.Fatal(err)
	}
	var diffIDs []digest.Digest
	for _, h := range cf.RootFS.DiffIDs {
		diffIDs = append(diffIDs, digest.Digest(h.String()))
	}
	top := identity.ChainID(diffIDs)
	_, err = pn.cd.SnapshotService(pn.tb.Snapshotter()).Stat(pn.nsctx(ctx), top.String())
	if err != nil && !errdefs.IsNotFound(err) {
		pn.t.Fatalf("snapshot Stat %s: %v", top, err)
	}
	return err == nil
}

// snapshotCount counts the CRI snapshotter's snapshots.
func (pn *prefetchNode) snapshotCount(ctx context.Context) int {
	pn.t.Helper()
	n := 0
	if err := pn.cd.SnapshotService(pn.tb.Snapshotter()).Walk(pn.nsctx(ctx), func(context.Context, snapshots.Info) error {
		n++
		return nil
	}); err != nil {
		pn.t.Fatal(err)
	}
	return n
}

// collectGarbage runs containerd's GC and waits for it to finish:
// deleting a lease with SynchronousDelete does that (`ctr leases rm
// --sync`), in containerd 1.6 too.
func (pn *prefetchNode) collectGarbage(ctx context.Context) {
	pn.t.Helper()
	ls := pn.cd.LeasesService()
	l, err := ls.Create(pn.nsctx(ctx), leases.WithRandomID())
	if err != nil {
		pn.t.Fatal(err)
	}
	if err := ls.Delete(pn.nsctx(ctx), l, leases.SynchronousDelete); err != nil {
		pn.t.Fatalf("GC (synchronous lease delete): %v", err)
	}
}

// waitRunning waits until container cID runs.
func (pn *prefetchNode) waitRunning(ctx context.Context, cID string) *runtimeapi.ContainerStatus {
	pn.t.Helper()
	var st *runtimeapi.ContainerStatus
	pn.eventually(60*time.Second, "container "+cID+" to run", func() (bool, string) {
		r, err := pn.rs.ContainerStatus(ctx, cID, false)
		if err != nil {
			return false, err.Error()
		}
		st = r.GetStatus()
		return st.GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING, st.GetState().String()
	})
	return st
}

// waitIdleGate waits until no start holds a slot: pods' warm-ups are
// over and a prefetch's background slot is free at once.
func (pn *prefetchNode) waitIdleGate() {
	pn.t.Helper()
	pn.eventually(60*time.Second, "every start slot to be released", func() (bool, string) {
		s := pn.status()
		return s.InFlight == 0 && s.QueueLength == 0, fmt.Sprintf("in flight %d, queued %d", s.InFlight, s.QueueLength)
	})
}

func digestsOf(t testing.TB, img v1.Image) (manifest, config string, layers []string) {
	t.Helper()
	m, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	c, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, d.String())
	}
	return m.String(), c.String(), layers
}

func sizeOf(t testing.TB, l v1.Layer) int64 {
	t.Helper()
	n, err := l.Size()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func digestOf(t testing.TB, l v1.Layer) string {
	t.Helper()
	d, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// checkFetchedOnlyChanged checks that the prefetch of patched moved
// exactly its changed layer (and the config and manifest): by the entry's
// counts and digests, by what the front served, and in containerd's
// content store.
func (pn *prefetchNode) checkFetchedOnlyChanged(ctx context.Context, e prefetchEntry, patched v1.Image, changed v1.Layer, served map[string]int64) {
	t := pn.t
	t.Helper()
	_, config, layers := digestsOf(t, patched)
	changedDigest, changedSize := digestOf(t, changed), sizeOf(t, changed)
	if e.LayersFetched != 1 {
		t.Errorf("prefetch ls: %d layers fetched, want 1 (only the changed %s): %v", e.LayersFetched, changedDigest, e)
	}
	// bytes_done counts the blobs containerd lacked: the changed layer,
	// the new config and manifest (a few KiB).
	if e.BytesDone != e.BytesTotal || e.BytesDone < changedSize || e.BytesDone > changedSize+64<<10 {
		t.Errorf("prefetch ls: bytes %d of %d, want all done, the changed layer's %d plus at most 64 KiB", e.BytesDone, e.BytesTotal, changedSize)
	}
	// fetched_layers is newer than the rest of the entry: when startgated
	// does not fill it in yet, what the front served and the content store
	// below say the same.
	if len(e.FetchedLayers) > 0 {
		if !slices.Equal(e.FetchedLayers, []string{changedDigest}) {
			t.Errorf("prefetch ls: fetched_layers %v, want [%s]", e.FetchedLayers, changedDigest)
		}
	} else {
		t.Logf("prefetch ls has no fetched_layers yet; checking the layers by what the registry served and containerd holds")
	}
	if e.ConfigDigest != "" && e.ConfigDigest != config {
		t.Errorf("prefetch ls: config_digest %s, want %s", e.ConfigDigest, config)
	}
	var total int64
	for d, n := range served {
		total += n
		if d != changedDigest && d != config {
			t.Errorf("the registry served blob %s (%d bytes) to the prefetch; want only the changed layer %s and the config %s", d, n, changedDigest, config)
		}
	}
	if served[changedDigest] != changedSize {
		t.Errorf("the registry served %d bytes of the changed layer %s to the prefetch, want %d (once, whole)", served[changedDigest], changedDigest, changedSize)
	}
	if total > e.BytesDone {
		t.Errorf("the registry served %d blob bytes to the prefetch, more than the %d it reports", total, e.BytesDone)
	}
	for _, d := range append([]string{config}, layers...) {
		if !pn.hasBlob(ctx, d) {
			t.Errorf("after the prefetch, blob %s is not in containerd's content store", d)
		}
	}
	if !pn.hasSnapshot(ctx, patched) {
		t.Errorf("after the prefetch, the patched image's top snapshot is not in the %s snapshotter", pn.tb.Snapshotter())
	}
}

// checkPullFromPrefetch is what kubelet sees next: its PullImage of the
// patched tag through the proxy moves no layer bytes and unpacks nothing,
// and a pod started afterwards runs the new digest.
func (pn *prefetchNode) checkPullFromPrefetch(ctx context.Context, ref string, patched v1.Image) {
	t := pn.t
	t.Helper()
	manifest, config, layers := digestsOf(t, patched)
	pn.front.Take()
	snaps := pn.snapshotCount(ctx)
	if id := pn.pull(ctx, ref); id != config {
		t.Errorf("PullImage %s after the prefetch: image ref %s, want the patched image %s", ref, id, config)
	}
	served := pn.front.Take()
	for _, d := range layers {
		if served[d] != 0 {
			t.Errorf("PullImage %s after the prefetch: the registry served %d bytes of layer %s, want none", ref, served[d], d)
		}
	}
	if len(served) > 0 {
		t.Logf("PullImage after the prefetch: blobs served %v", served)
	}
	if n := pn.snapshotCount(ctx); n != snaps {
		t.Errorf("PullImage %s after the prefetch: %d snapshots, %d before; want no unpack", ref, n, snaps)
	}
	st, err := pn.is.ImageStatus(ctx, &runtimeapi.ImageSpec{Image: ref}, false)
	if err != nil {
		t.Fatal(err)
	}
	if st.GetImage().GetId() != config {
		t.Errorf("ImageStatus %s: ID %s, want the patched %s", ref, st.GetImage().GetId(), config)
	}
	_, cID, err := pn.runPodOf(ctx, "default", "after-patch", ref, nil, "sleep", "300")
	if err != nil {
		t.Fatal(err)
	}
	cs := pn.waitRunning(ctx, cID)
	// containerd 1.6 reports the image's repo digest (REPO@MANIFEST)
	// when it has one, its ID otherwise.
	if got := cs.GetImageRef(); got != config && !strings.HasSuffix(got, "@"+manifest) {
		t.Errorf("pod started after the patch runs image %s, want the patched %s (or REPO@%s)", got, config, manifest)
	}
}

// writeUnheldBlob commits a small blob under no lease and no image: the
// GC's control.
func (pn *prefetchNode) writeUnheldBlob(ctx context.Context) string {
	pn.t.Helper()
	data := []byte("startgate e2e GC control " + time.Now().String())
	d := digest.FromBytes(data)
	if err := content.WriteBlob(pn.nsctx(ctx), pn.cd.ContentStore(), "control-"+d.Encoded(), bytes.NewReader(data), ocispecDesc(d.String(), int64(len(data)))); err != nil {
		pn.t.Fatal(err)
	}
	return d.String()
}

func ocispecDesc(d string, size int64) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.Digest(d), Size: size}
}

// corruptedDigest is the digest of l's blob as the front serves it with
// one byte flipped: what a prefetch that committed the bytes it received
// without checking them would have stored.
func corruptedDigest(t testing.TB, l v1.Layer) string {
	t.Helper()
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) <= testbed.FrontFlipAt {
		t.Fatalf("layer of %d bytes: too small to corrupt at %d", len(b), testbed.FrontFlipAt)
	}
	b[testbed.FrontFlipAt] ^= 0xff
	return digest.FromBytes(b).String()
}
