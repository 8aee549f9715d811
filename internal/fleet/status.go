package fleet

import (
	"context"
	"time"

	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
)

// Aggregator sums the nodes' NodePrefetch reports into each
// announcement's status (done, fetching, waiting, failed), every
// interval, writing only what changed. One startgated in the cluster
// runs it (the elected one, Leader), so the N reports are read by one
// watch, not by every node.
type Aggregator struct {
	Dynamic  dynamic.Interface
	Interval time.Duration
	Logger   *zap.Logger
}

// Run sums until ctx ends.
func (g *Aggregator) Run(ctx context.Context) error {
	factory := dynamicinformer.NewDynamicSharedInformerFactory(g.Dynamic, 0)
	reports := factory.ForResource(NodePrefetchGVR).Informer()
	anns := factory.ForResource(AnnouncementGVR).Informer()
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), reports.HasSynced, anns.HasSynced) {
		return nil
	}
	t := time.NewTicker(g.Interval)
	defer t.Stop()
	for {
		g.sum(ctx, reports.GetStore(), anns.GetStore())
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
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

// Sum is the progress of every announcement from the reports in store.
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

func (g *Aggregator) sum(ctx context.Context, reports, anns cache.Store) {
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
