package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/startgate/startgate/harness/testbed"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Pulls share a resolution (cri.pulls.share_window), against a registry
// as far away as a public one: a bearer token per pull, 20 ms round
// trip. kubelet's pulls of one tag one after another (imagePullPolicy
// Always, serialized pulls) reach the registry once per window, not once
// per pod. Sharing is per controller generation: a rollout's first pull
// resolves afresh, so a push followed by a rollout is seen at once; a
// push inside the window reaches the same ReplicaSet's pods only when it
// ends (the freshness traded, written in the config's help), unless the
// prefetch knows the new digest, which ends the sharing at once.
func TestPullsShareAResolution(t *testing.T) {
	const window = 3 * time.Second
	reg := testbed.StartRegistryT(t, testbed.RegistryOptions{Token: true})
	link, err := testbed.NewLink(testbed.LinkOptions{RTT: 20 * time.Millisecond, Bandwidth: 100e6 / 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = link.Close() })
	far, err := link.Forward(reg.Host())
	if err != nil {
		t.Fatal(err)
	}
	n := startNode(t, nodeOptions{configFor: func(n *node) string {
		return fmt.Sprintf("[cri.pulls]\nshare_window = %q\n"+
			"[prefetch]\nenabled = true\nsnapshotter = %q\ninterval = \"1h\"\nmax_backoff = \"1h\"\nregistries = [%q]\n"+
			"[admission.targets]\nio = 1.0\n", // this shared machine's IO pressure must not hold the fetch
			window.String(), n.tb.Snapshotter(), far)
	}})
	pn := &prefetchNode{node: n}
	ctx := context.Background()
	ref := far + "/app:1"
	base, _ := appImage(t, 1<<20, 21)
	if _, err := reg.Push(ctx, "app:1", base); err != nil {
		t.Fatal(err)
	}
	_, id1, _ := digestsOf(t, base)

	// Pods of one ReplicaSet until the rollout below makes another.
	hash, pod := "7d9f8b6c5", 0
	pull := func(what, want string) time.Duration {
		t.Helper()
		pod++
		t0 := time.Now()
		got := pn.pullFor(ctx, ref, replicaSetSandbox(hash, pod))
		took := time.Since(t0)
		if got != want {
			t.Fatalf("%s: PullImage %s = %s, want %s", what, ref, got, want)
		}
		return took
	}
	first := time.Now()
	took := pull("the first pull", id1)
	tokens := reg.TokensIssued()
	t.Logf("first pull (resolved at the registry, RTT 20 ms, %d tokens): %v", tokens, took)
	for i := range 5 {
		took := pull(fmt.Sprintf("pull %d in a row", i+2), id1)
		t.Logf("pull %d in the window: %v", i+2, took)
	}
	if got := reg.TokensIssued(); got != tokens {
		t.Errorf("5 pulls within the window asked the registry for %d more tokens, want none (one resolution shared)", got-tokens)
	}
	if time.Since(first) >= window {
		t.Fatalf("the pulls took longer than the window (%v): this machine is too busy for the test's timing", window)
	}

	// A push inside the window reaches the same ReplicaSet's pods once
	// the window ends; a rollout (a new ReplicaSet) sees it at once.
	patched, _ := patchOf(t, base, 1<<20, 22)
	if _, err := reg.Push(ctx, "app:1", patched); err != nil {
		t.Fatal(err)
	}
	_, id2, _ := digestsOf(t, patched)
	if time.Since(first) < window {
		pull("a pull of the same ReplicaSet inside the window after a push (the freshness traded)", id1)
	}
	oldHash := hash
	hash = "6c4b8d9f7"
	tokens = reg.TokensIssued()
	pull("the rollout's first pull, inside the window", id2)
	if reg.TokensIssued() == tokens {
		t.Errorf("the rollout's first pull took no token: it did not ask the registry")
	}
	hash = oldHash
	time.Sleep(time.Until(first.Add(window)))
	tokens = reg.TokensIssued()
	pull("the old ReplicaSet's first pull after the window", id2)
	if reg.TokensIssued() == tokens {
		t.Errorf("the pull after the window took no token: it did not ask the registry")
	}

	// A push the prefetch is told of ends the sharing at once.
	second := time.Now()
	pull("a pull in the new window", id2)
	patched3, _ := patchOf(t, base, 1<<20, 23)
	d3, err := reg.Push(ctx, "app:1", patched3)
	if err != nil {
		t.Fatal(err)
	}
	_, id3, _ := digestsOf(t, patched3)
	n.ctl("prefetch", "add", ref)
	pn.waitEntry(ref, 20*time.Second, "aware of the pushed digest", func(e prefetchEntry) bool { return e.NewDigest == d3 })
	if time.Since(second) >= window {
		t.Logf("the prefetch took longer than the window to resolve: the check below proves less")
	}
	pull("a pull inside the window once the prefetch knows the new digest", id3)
}

// replicaSetSandbox is the sandbox config kubelet passes with the pull
// for the n-th pod of the ReplicaSet whose pod-template-hash is hash.
func replicaSetSandbox(hash string, n int) *runtimeapi.PodSandboxConfig {
	name, uid := fmt.Sprintf("web-%s-%d", hash, n), fmt.Sprintf("uid-%s-%d", hash, n)
	return &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "default", Uid: uid},
		Labels: map[string]string{"app": "web", "pod-template-hash": hash, "io.kubernetes.pod.name": name,
			"io.kubernetes.pod.namespace": "default", "io.kubernetes.pod.uid": uid},
	}
}
