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
	"k8s.io/utils/clock"
)

// Prefetcher is what a node's coordinator needs of its prefetcher.
type Prefetcher interface {
	// Wants reports whether this node runs or watches the tag ref.
	Wants(ref string) bool
	// ViaMirror reports whether this node reaches ref's registry through
	// a mirror (a hosts.toml mirror, a peer-to-peer cache) first.
	ViaMirror(ref string) bool
	// Prefetch asks for ref at dgst to be fetched, in the background;
	// every fetch from a registry, this one or any other, goes through
	// Node.Acquire.
	Prefetch(ref, dgst string) error
	// Tags are the tags this node runs or watches, each with the digest
	// it runs ("" for a watched tag it does not run): the elected node
	// resolves them for the cluster (Elected.Resolve).
	Tags() map[string]string
}

// tagsEvery is how often a node reports the tags it runs: a new tag
// reaches the cluster's resolver within it.
const tagsEvery = 30 * time.Second

// NodeOptions configure a Node.
type NodeOptions struct {
	Dynamic dynamic.Interface
	// Name is the node's name (its report's name and its slots' holder).
	Name       string
	Budget     *Budget
	Prefetcher Prefetcher
	// StartJitter spreads the nodes' first tries for a new announcement
	// over [0, StartJitter), so that a thousand nodes learning of it in
	// the same second do not all ask for a slot in that second.
	StartJitter time.Duration
	// ReportEvery is the most often the node's report is written.
	ReportEvery time.Duration
	// RetryFailed is how often an announcement whose fetch failed is
	// asked for again; 0 is a minute.
	RetryFailed time.Duration
	Clock       clock.WithTicker
	Logger      *zap.Logger
}

// Node is one node's part in the fleet: it watches the announcements (one
// watch) and asks its prefetcher for the ones this node wants; every
// fetch from a registry, announced or not, takes an upstream slot of the
// Budget first (Acquire), unless a mirror already has the digest; and it
// reports its progress on announced digests in its NodePrefetch.
type Node struct {
	opts   NodeOptions
	clk    clock.WithTicker
	log    *zap.Logger
	report *Reporter
	queue  workqueue.TypedInterface[string]

	mu struct {
		sync.Mutex
		// asked are the announcements handed to the prefetcher (by
		// name): an update of the object (its status) does not ask again.
		asked map[string]bool
		// store is the announcements' informer store, set by Run.
		store cache.Store
	}
}

// NewNode validates opts.
func NewNode(opts NodeOptions) (*Node, error) {
	switch {
	case opts.Dynamic == nil || opts.Budget == nil || opts.Prefetcher == nil:
		return nil, errors.New("fleet: node: dynamic client, budget and prefetcher are required")
	case opts.Name == "":
		return nil, errors.New("fleet: node: no name")
	case opts.ReportEvery <= 0 || opts.StartJitter < 0:
		return nil, errors.New("fleet: node: the report interval must be positive, the start jitter not negative")
	}
	n := &Node{opts: opts, clk: opts.Clock, log: opts.Logger}
	if n.clk == nil {
		n.clk = clock.RealClock{}
	}
	if n.log == nil {
		n.log = zap.NewNop()
	}
	n.report = NewReporter(opts.Dynamic, opts.Name, opts.ReportEvery, n.clk, n.log)
	n.mu.asked = map[string]bool{}
	return n, nil
}

// Run watches and works until ctx ends.
func (n *Node) Run(ctx context.Context) error {
	n.queue = workqueue.NewTypedWithConfig(workqueue.TypedQueueConfig[string]{Name: "fleet-announcements"})
	// The resync hands every announcement to work again each minute, so
	// a fetch that failed is asked for again (a cluster resolver announces
	// a digest once, and the node may not poll).
	retry := n.opts.RetryFailed
	if retry <= 0 {
		retry = time.Minute
	}
	factory := dynamicinformer.NewDynamicSharedInformerFactory(n.opts.Dynamic, retry)
	inf := factory.ForResource(AnnouncementGVR).Informer()
	n.mu.Lock()
	n.mu.store = inf.GetStore()
	n.mu.Unlock()
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
	wg.Go(func() {
		for n.work() {
		}
	})
	for {
		n.report.SetTags(n.opts.Prefetcher.Tags())
		if err := sleep(ctx, n.clk, tagsEvery); err != nil {
			return nil
		}
	}
}

// work hands one announcement from the queue to the prefetcher if this
// node wants it; false when the queue is shut down.
func (n *Node) work() bool {
	name, quit := n.queue.Get()
	if quit {
		return false
	}
	defer n.queue.Done(name)
	a, ok := n.announcement(name)
	if !ok {
		return true
	}
	n.mu.Lock()
	asked := n.mu.asked[name]
	n.mu.Unlock()
	if asked && n.report.State(name) != Failed || !n.opts.Prefetcher.Wants(a.Reference) || n.superseded(a) {
		return true
	}
	if err := n.opts.Prefetcher.Prefetch(a.Reference, a.Digest); err != nil {
		n.log.Warn("announced prefetch refused", zap.String("reference", a.Reference), zap.String("digest", a.Digest), zap.Error(err))
		n.report.Set(Entry{Announcement: a.Name, Reference: a.Reference, Digest: a.Digest, State: Failed, Message: err.Error()})
		return true
	}
	n.mu.Lock()
	n.mu.asked[name] = true
	n.mu.Unlock()
	return true
}

// announcement is the announcement named name, if the watch has it.
func (n *Node) announcement(name string) (Announcement, bool) {
	n.mu.Lock()
	store := n.mu.store
	n.mu.Unlock()
	if store == nil {
		return Announcement{}, false
	}
	obj, ok, _ := store.GetByKey(name)
	if !ok {
		return Announcement{}, false
	}
	a, err := announcementFrom(obj.(*unstructured.Unstructured))
	if err != nil {
		n.log.Warn("announcement ignored", zap.Error(err))
		return Announcement{}, false
	}
	return a, true
}

// superseded says whether a newer announcement of a's tag exists: only
// the newest is fetched.
func (n *Node) superseded(a Announcement) bool {
	n.mu.Lock()
	store := n.mu.store
	n.mu.Unlock()
	for _, obj := range store.List() {
		b, err := announcementFrom(obj.(*unstructured.Unstructured))
		if err == nil && b.Reference == a.Reference && b.Name != a.Name && b.Created.After(a.Created) {
			return true
		}
	}
	return false
}

// Fetch is a fetch from a registry under the fleet's budget.
type Fetch struct {
	n     *Node
	entry Entry
	ann   bool  // the digest was announced: progress is reported
	slot  *Slot // nil through a mirror
}

// Lost is closed when the fetch must stop: its upstream slot is no
// longer this node's. Nil (never closed) through a mirror.
func (f *Fetch) Lost() <-chan struct{} {
	if f.slot == nil {
		return nil
	}
	return f.slot.Lost()
}

// End gives the slot back and reports the outcome: done when err is nil.
func (f *Fetch) End(ctx context.Context, err error) {
	if f.slot != nil {
		f.slot.Release(ctx)
	}
	if !f.ann {
		return
	}
	f.entry.State, f.entry.Message = Done, ""
	if err != nil {
		f.entry.State, f.entry.Message = Failed, err.Error()
	}
	f.n.report.Set(f.entry)
}

// Acquire waits, before a fetch of ref at dgst from its registry, for an
// upstream slot: at most K nodes of the cluster fetch from registries at
// once. Through a mirror that already has the digest (a node reported it
// done) no slot is needed: only the first fetch goes upstream. The
// node's report says waiting, then fetching, when the digest was
// announced. End must be called.
func (n *Node) Acquire(ctx context.Context, ref, dgst string) (*Fetch, error) {
	name := AnnouncementName(ref, dgst)
	a, announced := n.announcement(name)
	f := &Fetch{n: n, ann: announced, entry: Entry{Announcement: name, Reference: ref, Digest: dgst}}
	set := func(s State) {
		if announced {
			f.entry.State = s
			n.report.Set(f.entry)
		}
	}
	set(Waiting)
	if n.opts.StartJitter > 0 {
		if err := sleep(ctx, n.clk, rand.N(n.opts.StartJitter)); err != nil {
			f.End(ctx, err)
			return nil, err
		}
	}
	slot, err := n.acquire(ctx, a, announced)
	if err != nil {
		f.End(ctx, err)
		return nil, err
	}
	f.slot = slot
	set(Fetching)
	return f, nil
}

// errMirrorHas ends a wait for a slot: the mirror has the digest now.
var errMirrorHas = errors.New("fleet: a node is done: the mirror has the digest")

// mirrorCheck is how often a node waiting for a slot behind a mirror
// looks whether the announcement counts a node done.
const mirrorCheck = 500 * time.Millisecond

// acquire waits for an upstream slot; behind a mirror, only until the
// announcement counts a node done (nil slot: none needed).
func (n *Node) acquire(ctx context.Context, a Announcement, announced bool) (*Slot, error) {
	if !announced || !n.opts.Prefetcher.ViaMirror(a.Reference) {
		return n.opts.Budget.Acquire(ctx)
	}
	done := func() bool { cur, ok := n.announcement(a.Name); return ok && cur.Status.Done > 0 }
	if done() {
		return nil, nil
	}
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		t := n.clk.NewTicker(mirrorCheck)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C():
				if done() {
					cancel(errMirrorHas)
					return
				}
			}
		}
	}()
	slot, err := n.opts.Budget.Acquire(wctx)
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(wctx), errMirrorHas) {
		return nil, nil
	}
	return slot, err
}
