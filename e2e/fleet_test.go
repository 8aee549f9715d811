package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/startgate/startgate/deploy"
	"github.com/startgate/startgate/harness/testbed"
	"github.com/startgate/startgate/harness/testbed/cluster"
)

// TestFleetPairs (issue 13): three real startgated + containerd pairs
// against one registry and a real kube-apiserver with deploy/fleet
// applied, using a node's kubelet credentials (so deploy/fleet's RBAC is
// what is tested). A patch announced once with startgatectl fleet
// announce reaches every node through its watch, each fetches exactly
// the changed layer, the registry serves it to at most
// fleet.upstream_slots = 1 node at once, and the elected node sums the
// three reports into the announcement's status.
func TestFleetPairs(t *testing.T) {
	const pairs = 3
	fleetSlots := 1
	c, reg, front, base := fleetCluster(t)
	ctx := context.Background()
	ref := front.Ref("app:1")

	nodes := startFleetPairs(t, c, reg, front, pairs, fmt.Sprintf("upstream_slots = %d\n", fleetSlots), "1h")
	patched, changed := patchOf(t, base, 32<<20, 2)
	newDigest, err := front.Push(ctx, "app:1", patched)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bins.ctl, "fleet", "announce", ref, newDigest, "--kubeconfig", c.Kubeconfig()).CombinedOutput()
	if err != nil {
		t.Fatalf("startgatectl fleet announce: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	for _, pn := range nodes {
		e := pn.waitEntry(ref, 60*time.Second, "done or failed with the announced digest", func(e prefetchEntry) bool {
			return e.NewDigest == newDigest && (e.State == "done" || e.State == "failed")
		})
		if e.State != "done" || e.LayersFetched != 1 {
			t.Errorf("a node after the announcement: %v, want done with the one changed layer", e)
		}
	}
	spans := front.Spans(digestOf(t, changed))
	if len(spans) != pairs {
		t.Errorf("the changed layer was served %d times, want once to each of %d nodes", len(spans), pairs)
	}
	if most := testbed.MostAtOnce(spans); most > fleetSlots {
		t.Errorf("the registry served the changed layer to %d nodes at once, want at most fleet.upstream_slots = %d: %v", most, fleetSlots, spans)
	}
	for i, s := range spans {
		t.Logf("changed layer served to node %d: %v for %v", i, s.Start.Format("15:04:05.000"), s.End.Sub(s.Start))
	}
	// The elected node sums the reports: all three done.
	nodes[0].eventually(30*time.Second, "the announcement's status to count the nodes done", func() (bool, string) {
		out, err := exec.Command(bins.ctl, "fleet", "status", ref, "--kubeconfig", c.Kubeconfig()).CombinedOutput()
		if err != nil {
			return false, fmt.Sprintf("%v: %s", err, out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		f := strings.Fields(lines[len(lines)-1])
		return len(f) >= 5 && f[3] == fmt.Sprint(pairs), string(out)
	})
	out, err = exec.Command(bins.ctl, "fleet", "status", ref, "--nodes", "--kubeconfig", c.Kubeconfig()).CombinedOutput()
	if err != nil || strings.Count(string(out), "done") != pairs {
		t.Errorf("startgatectl fleet status --nodes: %v\n%s\nwant %d nodes done", err, out, pairs)
	}
}

// TestFleetAbsentPrefetchesAlone (issue 13): with [fleet] on, a node in a
// cluster without deploy/fleet's resources, and a node whose API is out
// of reach, prefetch a patch as a node alone does (by polling here), and
// say why they are not coordinating.
func TestFleetAbsentPrefetchesAlone(t *testing.T) {
	c := cluster.StartT(t, cluster.Options{NoKubelet: true})
	for _, tt := range []struct {
		name, kubeconfig, why string
	}{
		{"resources not installed", c.NodeKubeconfig(), "not installed"},
		{"API out of reach", "/nonexistent/kubelet.conf", "nonexistent"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pn := startPrefetchNode(t, prefetchOptions{interval: time.Second, extra: fmt.Sprintf(`[kubernetes]
enabled = true
kubeconfig = %q
node_name = "alone"
[fleet]
enabled = true
`, tt.kubeconfig)})
			ctx := context.Background()
			ref, base, _ := pn.runningApp(ctx, 1, 30*time.Second)
			patched, _ := patchOf(t, base, prefetchLayerSize, 2)
			newDigest := pn.push(ctx, "app:1", patched)
			e := pn.waitEntry(ref, 30*time.Second, "done with the patch", func(e prefetchEntry) bool {
				return e.NewDigest == newDigest && e.State == "done"
			})
			t.Logf("prefetched alone: %v", e)
			if l := pn.logLines("not coordinating with the fleet", 1); !strings.Contains(l, tt.why) {
				t.Errorf("log says %q about the fleet, want it to say why (%s)", l, tt.why)
			}
		})
	}
}

// startFleetPairs starts n startgated + containerd pairs on the cluster's
// API (node credentials) with [fleet] on (fleetExtra added to it, node 0
// the only leader candidate), each running ref app:1 of front, polling
// every interval; it returns once each coordinates with the fleet.
func startFleetPairs(t *testing.T, c *cluster.Cluster, reg *testbed.Registry, front *testbed.Front, n int, fleetExtra, interval string) []*prefetchNode {
	t.Helper()
	return startFleetPairsWith(t, c, reg, front, n, func(int) string { return fleetExtra }, interval)
}

// startFleetPairsWith is startFleetPairs with TOML for node i appended
// (extra(i)).
func startFleetPairsWith(t *testing.T, c *cluster.Cluster, reg *testbed.Registry, front *testbed.Front, n int, extra func(i int) string, interval string) []*prefetchNode {
	t.Helper()
	ctx := context.Background()
	ref := front.Ref("app:1")
	var nodes []*prefetchNode
	for i := range n {
		pn := &prefetchNode{reg: reg, front: front}
		pn.node = startNode(t, nodeOptions{configFor: func(nd *node) string {
			// bandwidth 16 MiB/s: each fetch of a 32 MB changed layer
			// takes about two seconds (less what the loopback socket
			// buffers hold), long enough for unbounded fetches to
			// overlap at the registry.
			return fmt.Sprintf(`[admission.targets]
io = 1.0
[prefetch]
enabled = true
snapshotter = %q
interval = %q
max_backoff = "1h"
bandwidth = "16MiB"
[kubernetes]
enabled = true
kubeconfig = %q
node_name = "pair-%d"
[fleet]
enabled = true
lease_duration = "5s"
retry_min = "100ms"
retry_max = "500ms"
start_jitter = "0s"
report_every = "500ms"
leader_candidate = %v
%s`, nd.tb.Snapshotter(), interval, c.NodeKubeconfig(), i, i == 0, extra(i))
		}})
		pn.t = t
		pn.pull(ctx, ref)
		pn.waitEntry(ref, 30*time.Second, "watching app:1", func(e prefetchEntry) bool { return e.State == "idle" })
		pn.eventually(90*time.Second, "the node coordinating with the fleet", func() (bool, string) {
			return pn.logLines("coordinating prefetch with the fleet", 1) != "", pn.logLines("fleet", 3)
		})
		nodes = append(nodes, pn)
	}
	return nodes
}

// TestFleetClusterResolver (issue 13): with fleet.cluster_resolver, the
// elected node resolves the tag the nodes report and announces the
// patch pushed to the registry, nobody announcing it by hand; the other
// node stops polling while a resolver is elected; both prefetch it.
func TestFleetClusterResolver(t *testing.T) {
	c, reg, front, base := fleetCluster(t)
	ctx := context.Background()
	nodes := startFleetPairs(t, c, reg, front, 2, "upstream_slots = 1\ncluster_resolver = true\n", "2s")
	ref := front.Ref("app:1")
	nodes[1].eventually(60*time.Second, "the second node to stop polling, a resolver elected", func() (bool, string) {
		l := nodes[1].logLines("polling every interval", 1)
		return strings.Contains(l, `"on":false`), l
	})
	patched, _ := patchOf(t, base, prefetchLayerSize, 2)
	newDigest, err := front.Push(ctx, "app:1", patched)
	if err != nil {
		t.Fatal(err)
	}
	for _, pn := range nodes {
		e := pn.waitEntry(ref, 60*time.Second, "done with the pushed patch", func(e prefetchEntry) bool {
			return e.NewDigest == newDigest && (e.State == "done" || e.State == "failed")
		})
		if e.State != "done" {
			t.Errorf("a node after the push: %v, want done", e)
		}
	}
	if l := nodes[0].logLines("cluster resolver: new digest announced", 1); !strings.Contains(l, newDigest) {
		t.Errorf("the elected node's log does not say it announced %s: %q", newDigest, l)
	}
}

// fleetCluster is a control plane with deploy/fleet applied and a
// registry (behind a front) holding app:1, the release the nodes run.
func fleetCluster(t *testing.T) (*cluster.Cluster, *testbed.Registry, *testbed.Front, v1.Image) {
	t.Helper()
	return fleetClusterWith(t, testbed.RegistryOptions{})
}

// fleetClusterWith is fleetCluster with the registry's options.
func fleetClusterWith(t *testing.T, ro testbed.RegistryOptions) (*cluster.Cluster, *testbed.Registry, *testbed.Front, v1.Image) {
	t.Helper()
	// Without NodeRestriction: under it a node may touch no Lease outside
	// kube-node-lease but its own, and the fleet's upstream slots are
	// Leases in fleet.namespace taken with the node's credentials, so
	// every node's Acquire is refused until fail_open_after and then
	// fetches alone (seen with it on; docs/fleet.md, "NodeRestriction").
	c := cluster.StartT(t, cluster.Options{NoKubelet: true, NoNodeRestriction: true})
	ctx := context.Background()
	if err := c.Apply(ctx, deploy.Fleet, "fleet"); err != nil {
		t.Fatal(err)
	}
	reg := testbed.StartRegistryT(t, ro)
	front := testbed.StartFrontT(t, reg)
	base, _ := appImage(t, prefetchLayerSize, 1)
	if _, err := front.Push(ctx, "app:1", base); err != nil {
		t.Fatal(err)
	}
	return c, reg, front, base
}

// TestFleetWebhookAnnounces (issue 13): the registry's push notification
// reaches one node only; that node announces the push for the cluster,
// and a node that neither polls nor receives the webhook prefetches it.
func TestFleetWebhookAnnounces(t *testing.T) {
	listen := freeLoopbackAddr(t)
	tokenFile := filepath.Join(t.TempDir(), "notify.token")
	if err := os.WriteFile(tokenFile, []byte("fleet-webhook-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	relay := startRelay(t, listen)
	c, reg, front, base := fleetClusterWith(t, testbed.RegistryOptions{NotifyURL: relay.url(), NotifyToken: "fleet-webhook-token"})
	ctx := context.Background()
	nodes := startFleetPairsWith(t, c, reg, front, 2, func(i int) string {
		if i > 0 {
			return ""
		}
		return fmt.Sprintf("[prefetch.notifications]\nlisten = %q\ntoken_file = %q\n", listen, tokenFile)
	}, "1h")
	ref := front.Ref("app:1")
	patched, _ := patchOf(t, base, prefetchLayerSize, 2)
	newDigest, err := front.Push(ctx, "app:1", patched)
	if err != nil {
		t.Fatal(err)
	}
	e := nodes[1].waitEntry(ref, 60*time.Second, "done with the pushed patch, announced by the other node", func(e prefetchEntry) bool {
		return e.NewDigest == newDigest && (e.State == "done" || e.State == "failed")
	})
	if e.State != "done" {
		t.Errorf("the node without the webhook: %v, want done", e)
	}
	out, err := exec.Command(bins.ctl, "fleet", "status", "--kubeconfig", c.Kubeconfig(), "-o", "json").CombinedOutput()
	if err != nil || !strings.Contains(string(out), newDigest) {
		t.Errorf("startgatectl fleet status: %v\n%s\nwant an announcement of %s", err, out, newDigest)
	}
}
