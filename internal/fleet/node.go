package fleet

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/startgate/startgate/internal/clock"
)

// Fetcher is what a node's coordinator needs of its prefetcher.
type Fetcher interface {
	// Wants reports whether this node runs or watches the tag ref.
	Wants(ref string) bool
	// ViaMirror reports whether this node reaches ref's registry through
	// a mirror (a hosts.toml mirror, a peer-to-peer cache) first.
	ViaMirror(ref string) bool
	// Fetch brings ref's digest dgst into the node, moving only what it
	// lacks; it ends when ctx does.
	Fetch(ctx context.Context, ref, dgst string) error
}

// NodeOptions configure a Node.
type NodeOptions struct {
	Dynamic dynamic.Interface
	// Name is the node's name (its report's name and its slots' holder).
	Name    string
	Budget  *Budget
	Fetcher Fetcher
	// Workers is how many announcements are worked on at once.
	Workers int
	// StartJitter spreads the nodes' first tries for a new announcement
	// over [0, StartJitter), so that a thousand nodes learning of it in
	// the same second do not all ask for a slot in that second.
	StartJitter time.Duration
	// ReportEvery is the most often the node's report is written.
	ReportEvery time.Duration
	// Retry is the wait before a failed fetch is tried again; it doubles
	// per failure up to 16 times itself.
	Retry  time.Duration
	Clock  clock.Clock
	Logger *zap.Logger
}

// Node is one node's part in the fleet: it watches the announcements (one
// watch), prefetches the ones this node wants, each under an upstream
// slot of the Budget unless a mirror already has it, and reports its
// progress in its NodePrefetch.
type Node struct {
	opts   NodeOptions
	clk    clock.Clock
	log    *zap.Logger
	report *Reporter
	queue  workqueue.TypedRateLimitingInterface[string]

	mu struct {
		sync.Mutex
		// done are the announcements this node finished (by name):
		// an update of the object (its status) does not refetch.
		done map[string]bool
	}
	store cache.Store // the announcements, set by Run
}

// NewNode validates opts.
func NewNode(opts NodeOptions) (*Node, error) {
	switch {
	case opts.Dynamic == nil || opts.Budget == nil || opts.Fetcher == nil:
		return nil, errors.New("fleet: node: dynamic client, budget and fetcher are required")
	case opts.Name == "":
		return nil, errors.New("fleet: node: no name")
	case opts.Workers < 1:
		return nil, fmt.Errorf("fleet: node: %d workers, want at least 1", opts.Workers)
	case opts.Retry <= 0 || opts.ReportEvery <= 0 || opts.StartJitter < 0:
		return nil, errors.New("fleet: node: retry and report interval must be positive, start jitter not negative")
	}
	n := &Node{opts: opts, clk: opts.Clock, log: opts.Logger}
	if n.clk == nil {
		n.clk = clock.Real{}
	}
	if n.log == nil {
		n.log = zap.NewNop()
	}
	n.report = NewReporter(opts.Dynamic, opts.Name, opts.ReportEvery, n.clk, n.log)
	n.mu.done = map[string]bool{}
	return n, nil
}

// Run watches and works until ctx ends.
func (n *Node) Run(ctx context.Context) error {
	n.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](n.opts.Retry, 16*n.opts.Retry),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "fleet-announcements"})
	factory := dynamicinformer.NewDynamicSharedInformerFactory(n.opts.Dynamic, 0)
	inf := factory.ForResource(AnnouncementGVR).Informer()
	n.store = inf.GetStore()
	enqueue := func(obj any) {
		if u, ok := obj.(*unstructured.Unstructured); ok {
			n.queue.Add(u.GetName())
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if u, ok := obj.(*unstructured.Unstructured); ok {
				n.report.Forget(u.GetName())
			}
		},
	}); err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer n.queue.ShutDown()
	wg.Go(func() { _ = n.report.Run(ctx) })
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	for range n.opts.Workers {
		wg.Go(func() {
			for n.work(ctx) {
			}
		})
	}
	<-ctx.Done()
	return nil
}

// work handles one announcement from the queue; false when the queue is
// shut down.
func (n *Node) work(ctx context.Context) bool {
	name, quit := n.queue.Get()
	if quit {
		return false
	}
	defer n.queue.Done(name)
	obj, ok, _ := n.store.GetByKey(name)
	if !ok {
		n.queue.Forget(name)
		return true
	}
	a, err := announcementFrom(obj.(*unstructured.Unstructured))
	if err != nil {
		n.log.Warn("announcement ignored", zap.Error(err))
		n.queue.Forget(name)
		return true
	}
	n.mu.Lock()
	done := n.mu.done[name]
	n.mu.Unlock()
	if done || !n.opts.Fetcher.Wants(a.Reference) || n.superseded(a) {
		n.queue.Forget(name)
		return true
	}
	if err := n.prefetch(ctx, a); err != nil {
		if ctx.Err() != nil {
			return true
		}
		n.log.Warn("announced prefetch failed; trying again", zap.String("reference", a.Reference), zap.String("digest", a.Digest), zap.Error(err))
		n.report.Set(Entry{Announcement: a.Name, Reference: a.Reference, Digest: a.Digest, State: Failed, Message: err.Error()})
		n.queue.AddRateLimited(name)
		return true
	}
	n.queue.Forget(name)
	n.mu.Lock()
	n.mu.done[name] = true
	n.mu.Unlock()
	return true
}

// superseded says whether a newer announcement of a's tag exists: only
// the newest is fetched.
func (n *Node) superseded(a Announcement) bool {
	for _, obj := range n.store.List() {
		b, err := announcementFrom(obj.(*unstructured.Unstructured))
		if err == nil && b.Reference == a.Reference && b.Name != a.Name && b.Created.After(a.Created) {
			return true
		}
	}
	return false
}

// prefetch fetches a under the budget.
func (n *Node) prefetch(ctx context.Context, a Announcement) error {
	entry := Entry{Announcement: a.Name, Reference: a.Reference, Digest: a.Digest}
	set := func(s State) { entry.State = s; n.report.Set(entry) }
	set(Waiting)
	if n.opts.StartJitter > 0 {
		if err := sleep(ctx, n.clk, rand.N(n.opts.StartJitter)); err != nil {
			return err
		}
	}
	// Through a mirror, only the first node's fetch goes upstream (and
	// fills the mirror): once a node is done, the others need no slot.
	if n.opts.Fetcher.ViaMirror(a.Reference) && n.doneElsewhere(a.Name) {
		set(Fetching)
		if err := n.opts.Fetcher.Fetch(ctx, a.Reference, a.Digest); err != nil {
			return err
		}
		set(Done)
		return nil
	}
	slot, err := n.opts.Budget.Acquire(ctx)
	if err != nil {
		return err
	}
	defer slot.Release(context.WithoutCancel(ctx))
	set(Fetching)
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-slot.Lost():
			cancel()
		case <-fctx.Done():
		}
	}()
	if err := n.opts.Fetcher.Fetch(fctx, a.Reference, a.Digest); err != nil {
		select {
		case <-slot.Lost():
			return fmt.Errorf("fleet: upstream slot %s lost during the fetch: %w", slot.Name(), err)
		default:
		}
		return err
	}
	set(Done)
	return nil
}

// doneElsewhere says whether the announcement's status counts a node
// done (the elected startgated's sum, a few seconds behind).
func (n *Node) doneElsewhere(name string) bool {
	obj, ok, _ := n.store.GetByKey(name)
	if !ok {
		return false
	}
	a, err := announcementFrom(obj.(*unstructured.Unstructured))
	return err == nil && a.Status.Done > 0
}
