package fleet

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/startgate/startgate/deploy"
	"github.com/startgate/startgate/harness/testbed/cluster"
)

// TestElectedOnAPIServer: the elected node sums the nodes' reports into
// the announcement's status, and as the cluster's resolver announces a
// digest some node does not run, once, and nothing when all run it.
func TestElectedOnAPIServer(t *testing.T) {
	c := cluster.StartT(t, cluster.Options{NoKubelet: true})
	ctx := context.Background()
	if err := c.Apply(ctx, deploy.Fleet, "fleet"); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const ref = "registry.example.com/app:1"
	old, cur := "sha256:"+strings.Repeat("0", 64), "sha256:"+strings.Repeat("1", 64)
	report := func(node, running string, entries ...map[string]any) {
		t.Helper()
		items := make([]any, len(entries))
		for i, e := range entries {
			items[i] = e
		}
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": apiVersion, "kind": nodePrefetchKind, "metadata": map[string]any{"name": node},
			"status": map[string]any{"entries": items, "tags": []any{map[string]any{"reference": ref, "running": running}}},
		}}
		if _, err := dyn.Resource(NodePrefetchGVR).Create(ctx, u, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	name := AnnouncementName(ref, cur)
	report("node-a", old)
	report("node-b", cur, map[string]any{"announcement": name, "state": "done"})

	var resolves atomic.Int32
	e := &Elected{Dynamic: dyn, SumEvery: 200 * time.Millisecond, ResolveEvery: 200 * time.Millisecond, Logger: zaptest.NewLogger(t),
		Resolve: func(_ context.Context, r string) (string, error) {
			resolves.Add(1)
			if r != ref {
				t.Errorf("resolved %q, want only the reported tag %s", r, ref)
			}
			return cur, nil
		}}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = e.Run(rctx) }()
	defer func() { cancel(); <-done }()

	deadline := time.Now().Add(30 * time.Second)
	var anns []Announcement
	for time.Now().Before(deadline) {
		if anns, err = List(ctx, dyn); err == nil && len(anns) == 1 && anns[0].Status.Done == 1 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(anns) != 1 || anns[0].Name != name || anns[0].Digest != cur {
		t.Fatalf("announcements %+v, want one of %s@%s named %s (node-a runs %s)", anns, ref, cur, name, old)
	}
	if anns[0].Status.Done != 1 {
		t.Errorf("status %+v, want done 1 (node-b's report)", anns[0].Status)
	}
	// Rounds go on: no second announcement of the same digest.
	for n := resolves.Load(); resolves.Load() < n+3; {
		time.Sleep(50 * time.Millisecond)
	}
	if anns, _ = List(ctx, dyn); len(anns) != 1 {
		t.Errorf("%d announcements after more rounds, want still 1", len(anns))
	}
}
