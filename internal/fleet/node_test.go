package fleet

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
)

// countingPrefetcher wants every tag and counts what it is asked for.
type countingPrefetcher struct {
	mu    sync.Mutex
	asked []string
}

func (*countingPrefetcher) Wants(string) bool       { return true }
func (*countingPrefetcher) ViaMirror(string) bool   { return false }
func (*countingPrefetcher) Tags() map[string]string { return nil }
func (p *countingPrefetcher) Prefetch(ref, dgst string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.asked = append(p.asked, ref+"@"+dgst)
	return nil
}

func (p *countingPrefetcher) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.asked)
}

// TestNodeAsksAgainAfterAFailure: an announcement is handed to the
// prefetcher once, not again on every update, and again once its fetch
// failed (the resync), since nobody announces the same digest twice.
func TestNodeAsksAgainAfterAFailure(t *testing.T) {
	a, err := NewAnnouncement("registry.example.com/app:1", "sha256:"+strings.Repeat("a", 64))
	if err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme, map[schema.GroupVersionResource]string{
		AnnouncementGVR: "ImageAnnouncementList", NodePrefetchGVR: "NodePrefetchList",
	}, a.object())
	budget, err := NewBudget(BudgetOptions{Leases: fake.NewClientset().CoordinationV1().Leases("ns"), Identity: "n", Slots: 1,
		LeaseDuration: 3 * time.Second, RetryMin: 10 * time.Millisecond, RetryMax: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	p := &countingPrefetcher{}
	n, err := NewNode(NodeOptions{Dynamic: dyn, Name: "n", Budget: budget, Prefetcher: p, ReportEvery: 10 * time.Millisecond,
		RetryFailed: 50 * time.Millisecond, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = n.Run(ctx) }()
	defer func() { cancel(); <-done }()

	waitUntil(t, "the announcement handed over", func() bool { return p.count() == 1 })
	time.Sleep(300 * time.Millisecond) // several resyncs
	if c := p.count(); c != 1 {
		t.Fatalf("handed over %d times while not failed, want once", c)
	}
	n.report.Set(Entry{Announcement: a.Name, Reference: a.Reference, Digest: a.Digest, State: Failed, Message: "registry down"})
	waitUntil(t, "the failed announcement asked for again", func() bool { return p.count() >= 2 })
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
