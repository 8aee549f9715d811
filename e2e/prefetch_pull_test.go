package e2e

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/leases"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/startgate/startgate/internal/prefetch"
)

// A kubelet pull of a tag while its patch is being prefetched (a rollout
// that starts before the prefetch is done) joins the fetch instead of
// racing it: the pull returns once the fetch is done, the changed layer
// crosses the wire once, and the pull counts as a prefetch hit (prefetch
// ls, startgate_prefetch_hits_total), after which the prefetch lease is
// gone: the CRI's image records hold the image now.
func TestPrefetchPullJoinsAndHits(t *testing.T) {
	// 8 MiB at 2 MiB/s: the fetch runs for about 4 s, long enough to
	// pull in the middle of it.
	const layer = 8 << 20
	pn := startPrefetchNode(t, prefetchOptions{bandwidth: "2MiB", metrics: true})
	ctx := context.Background()
	ref := pn.front.Ref("app:1")
	base, _ := appImage(t, prefetchLayerSize, 11)
	running := pn.push(ctx, "app:1", base)
	pn.pull(ctx, ref)
	pn.waitEntry(ref, 30*time.Second, "watched at the running digest", func(e prefetchEntry) bool { return e.RunningDigest == running })

	patched, changed := patchOf(t, base, layer, 12)
	newDigest := pn.push(ctx, "app:1", patched)
	t0 := time.Now()
	pn.ctl("prefetch", "add", ref) // a CI/CD pipeline announcing the patch
	e := pn.waitEntry(ref, 30*time.Second, "fetching the patch, part of it read", func(e prefetchEntry) bool {
		return e.NewDigest == newDigest && e.State == "fetching" && e.BytesDone > 0 && e.BytesDone < e.BytesTotal
	})
	t.Logf("mid-fetch: %v", e)

	// kubelet's pull of the patched tag, now.
	id := pn.pull(ctx, ref)
	_, wantConfig, _ := digestsOf(t, patched)
	if id != wantConfig {
		t.Fatalf("PullImage = %s, want the patched image %s", id, wantConfig)
	}
	if n := len(pn.logLines("pull joined a prefetch", 10)); n == 0 {
		t.Errorf("startgated did not log the pull joining the prefetch; its log:\n%s", pn.logTail())
	}
	changedDigest := digestOf(t, changed)
	if gets := pn.front.GetsSince(changedDigest, t0); len(gets) != 1 {
		t.Errorf("the changed layer was fetched from the registry %d times since the patch, want once (the prefetch's; the pull joined it)", len(gets))
	}

	e = pn.waitEntry(ref, 10*time.Second, "idle at the new digest with a hit", func(e prefetchEntry) bool {
		return e.RunningDigest == newDigest && e.Hits == 1
	})
	if e.State != "idle" || e.Lease != "" {
		t.Errorf("after the pull: %v (lease %q), want idle and no prefetch lease", e, e.Lease)
	}
	if l := pn.prefetchLeases(ctx); len(l) != 0 {
		t.Errorf("prefetch leases left in containerd after the hit: %v", l)
	}
	m := pn.metrics()
	if m["startgate_prefetch_hits_total"] != 1 || m["startgate_prefetch_completed_total"] != 1 ||
		m["startgate_prefetch_layers_total"] != 1 || m["startgate_prefetch_bytes_total"] < float64(sizeOf(t, changed)) {
		t.Errorf("metrics after one prefetch and its hit: hits %v completed %v layers %v bytes %v (layer %d bytes)",
			m["startgate_prefetch_hits_total"], m["startgate_prefetch_completed_total"], m["startgate_prefetch_layers_total"],
			m["startgate_prefetch_bytes_total"], sizeOf(t, changed))
	}
	// The old digest is held for the rollback window (24 h by default),
	// from the read of the node's images the hit wakes.
	pn.waitEntry(ref, 10*time.Second, "the old digest held for rollback", func(e prefetchEntry) bool { return e.PreviousDigest == running })
}

// prefetch.move_tag: the tag is moved to the prefetched digest without
// kubelet pulling (a CRI pull of local content, no blob from the
// registry), and the digest it ran before is protected for rollback.
func TestPrefetchMoveTag(t *testing.T) {
	pn := startPrefetchNode(t, prefetchOptions{extra: "move_tag = true\n"})
	ctx := context.Background()
	ref := pn.front.Ref("app:1")
	base, _ := appImage(t, prefetchLayerSize, 21)
	running := pn.push(ctx, "app:1", base)
	pn.pull(ctx, ref)
	pn.waitEntry(ref, 30*time.Second, "watched at the running digest", func(e prefetchEntry) bool { return e.RunningDigest == running })

	patched, changed := patchOf(t, base, prefetchLayerSize, 22)
	newDigest := pn.push(ctx, "app:1", patched)
	t0 := time.Now()
	pn.ctl("prefetch", "add", ref)
	e := pn.waitEntry(ref, 30*time.Second, "the tag moved to the patch, the old digest held", func(e prefetchEntry) bool {
		return e.RunningDigest == newDigest && e.PreviousDigest != ""
	})
	if e.Hits != 1 || e.PreviousDigest != running {
		t.Errorf("after the move: %v hits %d previous %q; want one hit and previous %s", e, e.Hits, e.PreviousDigest, running)
	}
	// The CRI itself answers the patched image for the tag.
	_, wantConfig, _ := digestsOf(t, patched)
	st, err := pn.is.ImageStatus(ctx, &runtimeapi.ImageSpec{Image: ref}, false)
	if err != nil || st.GetImage().GetId() != wantConfig {
		t.Fatalf("CRI ImageStatus(%s) = %v, %v; want image %s", ref, st.GetImage(), err, wantConfig)
	}
	if gets := pn.front.GetsSince(digestOf(t, changed), t0); len(gets) != 1 {
		t.Errorf("the changed layer was fetched %d times, want once (moving the tag moves no bytes)", len(gets))
	}
	held := false
	ls, err := pn.cd.LeasesService().List(pn.nsctx(ctx))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		if strings.HasSuffix(l.Labels[prefetch.RollbackLabel], "@"+running) {
			held = true
		}
	}
	if !held {
		t.Errorf("no %s lease holds the digest the node ran before (%s)", prefetch.RollbackLabel, running)
	}
}

// prefetchLeases lists containerd's prefetch leases (prefetch.LeaseLabel).
func (pn *prefetchNode) prefetchLeases(ctx context.Context) []leases.Lease {
	pn.t.Helper()
	ls, err := pn.cd.LeasesService().List(pn.nsctx(ctx))
	if err != nil {
		pn.t.Fatal(err)
	}
	var out []leases.Lease
	for _, l := range ls {
		if _, ok := l.Labels[prefetch.LeaseLabel]; ok {
			out = append(out, l)
		}
	}
	return out
}

// metrics scrapes startgated's /metrics: the value of every sample
// without labels, by name.
func (pn *prefetchNode) metrics() map[string]float64 {
	pn.t.Helper()
	if pn.metricsAddr == "" {
		pn.t.Fatal("metrics: the node has no metrics listener (prefetchOptions.metrics)")
	}
	resp, err := http.Get("http://" + pn.metricsAddr + "/metrics")
	if err != nil {
		pn.t.Fatalf("scrape metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		pn.t.Fatalf("scrape metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			pn.t.Fatalf("metrics line %q: %v", sc.Text(), err)
		}
		out[name] = v
	}
	if err := sc.Err(); err != nil {
		pn.t.Fatalf("read metrics: %v", err)
	}
	return out
}
