package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/startgate/startgate/harness/testbed"
)

// TestPrefetchThroughMirror (issue 12): the node's containerd hosts
// directory (prefetch.hosts_dir) names a mirror for the registry, as a
// node behind a replicating mirror has it. A patch is resolved and
// fetched from the mirror, and the registry serves the prefetch nothing.
// With the mirror down the prefetch falls back to the registry, as
// containerd does.
func TestPrefetchThroughMirror(t *testing.T) {
	const interval = time.Second
	hostsDir := t.TempDir()
	pn := startPrefetchNode(t, prefetchOptions{interval: interval, maxBackoff: 4 * interval,
		extra: fmt.Sprintf("hosts_dir = %q\n", hostsDir)})
	mirror := testbed.StartFrontT(t, testbed.StartRegistryT(t, testbed.RegistryOptions{}))
	// containerd's layout: HOST_PORT_/hosts.toml, the mirror first.
	h, port, _ := strings.Cut(pn.front.Host(), ":")
	dir := filepath.Join(hostsDir, h+"_"+port+"_")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	hostsToml := fmt.Sprintf("server = \"http://%s\"\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", pn.front.Host(), mirror.Host())
	if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(hostsToml), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// The release the node runs, on both.
	base, _ := appImage(t, prefetchLayerSize, 1)
	if _, err := mirror.Push(ctx, "app:1", base); err != nil {
		t.Fatal(err)
	}
	ref, _, running := pn.runningAppOf(ctx, base, 10*time.Second)

	// The patch, replicated to the mirror, then pushed to the registry.
	pn.front.Take()
	mirror.Take()
	patched, changed := patchOf(t, base, prefetchLayerSize, 2)
	if _, err := mirror.Push(ctx, "app:1", patched); err != nil {
		t.Fatal(err)
	}
	newDigest := pn.push(ctx, "app:1", patched)
	e := pn.waitEntry(ref, 30*time.Second, "done or failed with the patch", func(e prefetchEntry) bool {
		return e.NewDigest == newDigest && (e.State == "done" || e.State == "failed")
	})
	if e.State != "done" || e.RunningDigest != running {
		t.Fatalf("prefetch ls after the patch: %v, want done on running %s", e, running)
	}
	fromMirror, fromRegistry := mirror.Take(), pn.front.Take()
	t.Logf("blob bytes served: by the mirror %v, by the registry %v", fromMirror, fromRegistry)
	pn.checkFetchedOnlyChanged(ctx, e, patched, changed, fromMirror)
	if len(fromRegistry) != 0 {
		t.Errorf("the registry served blobs %v to the prefetch although its mirror had them", fromRegistry)
	}

	// The mirror down: the next patch comes from the registry.
	mirror.SetMode(testbed.FrontDown)
	patched2, changed2 := patchOf(t, patched, prefetchLayerSize, 3)
	newDigest2 := pn.push(ctx, "app:1", patched2)
	e = pn.waitEntry(ref, 30*time.Second, "done or failed with the second patch", func(e prefetchEntry) bool {
		return e.NewDigest == newDigest2 && (e.State == "done" || e.State == "failed")
	})
	if e.State != "done" {
		t.Fatalf("prefetch ls after the second patch, mirror down: %v, want done from the registry", e)
	}
	served := pn.front.Take()
	if served[digestOf(t, changed2)] != sizeOf(t, changed2) {
		t.Errorf("with the mirror down the registry served %v, want the changed layer %s whole", served, digestOf(t, changed2))
	}
}
