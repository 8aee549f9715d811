package fleet

import (
	"context"
	"maps"
	"slices"
	"time"

	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
)

// Elected is what one startgated of the cluster does for all (elected
// through a Lease, RunLeader), so that the N reports are read by one
// watch and the registries are asked by one node, not by every node:
//   - every SumEvery it sums the nodes' NodePrefetch reports into each
//     announcement's status (done, fetching, waiting, failed), writing
//     only what changed;
//   - with Resolve set, every ResolveEvery it resolves each tag the nodes
//     report running or watching, and announces a digest some node does
//     not run yet: the cluster's one poller in place of every node's.
type Elected struct {
	Dynamic  dynamic.Interface
	SumEvery time.Duration
	// Resolve resolves a tag at its registry (the elected node's
	// prefetcher: its hosts.toml and credentials); nil: no resolving.
	Resolve      func(ctx context.Context, ref string) (string, error)
	ResolveEvery time.Duration
	Logger       *zap.Logger
}

// resolveTimeout bounds one tag's resolve.
const resolveTimeout = 30 * time.Second

// Run works until ctx ends.
func (g *Elected) Run(ctx context.Context) error {
	factory := dynamicinformer.NewDynamicSharedInformerFactory(g.Dynamic, 0)
	reports := factory.ForResource(NodePrefetchGVR).Informer()
	anns := factory.ForResource(AnnouncementGVR).Informer()
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), reports.HasSynced, anns.HasSynced) {
		return nil
	}
	sums := time.NewTicker(g.SumEvery)
	defer sums.Stop()
	var resolves <-chan time.Time
	if g.Resolve != nil {
		t := time.NewTicker(g.ResolveEvery)
		defer t.Stop()
		resolves = t.C
		g.resolve(ctx, reports.GetStore(), anns.GetStore())
	}
	for {
		g.sum(ctx, reports.GetStore(), anns.GetStore())
		select {
		case <-ctx.Done():
			return nil
		case <-sums.C:
		case <-resolves:
			g.resolve(ctx, reports.GetStore(), anns.GetStore())
		}
	}
}

// resolve resolves every reported tag and announces the digests some
// node does not run and nobody announced yet.
func (g *Elected) resolve(ctx context.Context, reports, anns cache.Store) {
	running := map[string]map[string]bool{} // reference: digests run
	for _, obj := range reports.List() {
		for ref, d := range tagsOf(obj.(*unstructured.Unstructured)) {
			if running[ref] == nil {
				running[ref] = map[string]bool{}
			}
			running[ref][d] = true
		}
	}
	for _, ref := range slices.Sorted(maps.Keys(running)) {
		rctx, cancel := context.WithTimeout(ctx, resolveTimeout)
		d, err := g.Resolve(rctx, ref)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			g.Logger.Warn("cluster resolver: resolve failed", zap.String("reference", ref), zap.Error(err))
			continue
		}
		if len(running[ref]) == 1 && running[ref][d] {
			continue // every node runs it
		}
		name := AnnouncementName(ref, d)
		if _, ok, _ := anns.GetByKey(name); ok {
			continue
		}
		if _, err := Announce(ctx, g.Dynamic, ref, d); err != nil {
			g.Logger.Warn("cluster resolver: announcement not made", zap.String("reference", ref), zap.String("digest", d), zap.Error(err))
			continue
		}
		g.Logger.Info("cluster resolver: new digest announced", zap.String("reference", ref), zap.String("digest", d), zap.String("announcement", name))
	}
}

// tagsOf reads a NodePrefetch's tags (reference: running digest).
func tagsOf(u *unstructured.Unstructured) map[string]string {
	items, _, _ := unstructured.NestedSlice(u.Object, "status", "tags")
	out := make(map[string]string, len(items))
	for _, it := range items {
		if m, ok := it.(map[string]any); ok {
			ref, _ := m["reference"].(string)
			d, _ := m["running"].(string)
			if ref != "" {
				out[ref] = d
			}
		}
	}
	return out
}

// entriesOf reads a NodePrefetch's entries.
func entriesOf(u *unstructured.Unstructured) []Entry {
	items, _, _ := unstructured.NestedSlice(u.Object, "status", "entries")
	out := make([]Entry, 0, len(items))
	for _, it := range items {
		m, ok := it.(map[string]any)
		if !ok {
			continue
		}
		str := func(k string) string { s, _ := m[k].(string); return s }
		e := Entry{Announcement: str("announcement"), Reference: str("reference"), Digest: str("digest"),
			State: State(str("state")), Message: str("message")}
		e.Updated, _ = time.Parse(time.RFC3339, str("updated"))
		out = append(out, e)
	}
	return out
}

// Sum is the progress of every announcement from the reports.
func Sum(reports []any) map[string]Progress {
	out := map[string]Progress{}
	for _, obj := range reports {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		for _, e := range entriesOf(u) {
			p := out[e.Announcement]
			switch e.State {
			case Done:
				p.Done++
			case Fetching:
				p.Fetching++
			case Waiting:
				p.Waiting++
			case Failed:
				p.Failed++
			}
			out[e.Announcement] = p
		}
	}
	return out
}

func (g *Elected) sum(ctx context.Context, reports, anns cache.Store) {
	sums := Sum(reports.List())
	client := g.Dynamic.Resource(AnnouncementGVR)
	for _, obj := range anns.List() {
		u := obj.(*unstructured.Unstructured)
		a, err := announcementFrom(u)
		if err != nil {
			continue
		}
		p := sums[a.Name]
		if p.Done == a.Status.Done && p.Fetching == a.Status.Fetching && p.Waiting == a.Status.Waiting && p.Failed == a.Status.Failed {
			continue
		}
		n := u.DeepCopy()
		status := map[string]any{
			"done": int64(p.Done), "fetching": int64(p.Fetching), "waiting": int64(p.Waiting), "failed": int64(p.Failed),
			"updated": time.Now().UTC().Format(time.RFC3339),
		}
		if err := unstructured.SetNestedMap(n.Object, status, "status"); err != nil {
			continue
		}
		if _, err := client.UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil && ctx.Err() == nil {
			// A conflict is the informer being behind; the next round
			// has the new object.
			g.Logger.Debug("announcement status not written", zap.String("announcement", a.Name), zap.Error(err))
		}
	}
}
