package fleet

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/clock"
)

// maxEntries bounds a node's report (the CRD's maxItems): the oldest
// finished entries go first.
const maxEntries = 256

// Reporter writes this node's NodePrefetch: its state on each
// announcement it acts on. Changes are coalesced into at most one write
// per interval, so a node costs the API server a few writes per
// announcement (waiting, fetching, done) whatever happens in between.
// Nobody but the elected startgated reads the reports (Elected):
// nodes do not watch each other.
type Reporter struct {
	client   dynamic.ResourceInterface
	node     string
	interval time.Duration
	clk      clock.Clock
	log      *zap.Logger
	wake     chan struct{}

	mu struct {
		sync.Mutex
		entries map[string]Entry  // by announcement
		tags    map[string]string // reference: running digest
		dirty   bool
	}
	// last is the object last written (for its resourceVersion); only
	// Run touches it.
	last *unstructured.Unstructured
}

// NewReporter reports for node through client (the dynamic client),
// writing at most once per interval.
func NewReporter(client dynamic.Interface, node string, interval time.Duration, clk clock.Clock, log *zap.Logger) *Reporter {
	if clk == nil {
		clk = clock.RealClock{}
	}
	r := &Reporter{client: client.Resource(NodePrefetchGVR), node: node, interval: interval, clk: clk, log: log, wake: make(chan struct{}, 1)}
	r.mu.entries = map[string]Entry{}
	return r
}

// Set records e (by e.Announcement) for the next write.
func (r *Reporter) Set(e Entry) {
	r.mu.Lock()
	old, ok := r.mu.entries[e.Announcement]
	if ok && old.State == e.State && old.Message == e.Message {
		r.mu.Unlock()
		return
	}
	e.Updated = r.clk.Now()
	r.mu.entries[e.Announcement] = e
	r.mu.dirty = true
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// State is this node's state on announcement ("" when it has none).
func (r *Reporter) State(announcement string) State {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.mu.entries[announcement].State
}

// SetTags records the tags the node runs (reference: running digest)
// for the next write, if they changed.
func (r *Reporter) SetTags(tags map[string]string) {
	r.mu.Lock()
	if maps.Equal(r.mu.tags, tags) {
		r.mu.Unlock()
		return
	}
	r.mu.tags = maps.Clone(tags)
	r.mu.dirty = true
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Forget drops announcement from the report (it was deleted).
func (r *Reporter) Forget(announcement string) {
	r.mu.Lock()
	if _, ok := r.mu.entries[announcement]; ok {
		delete(r.mu.entries, announcement)
		r.mu.dirty = true
	}
	r.mu.Unlock()
}

// Run writes the report when it changed, at most once per interval,
// until ctx ends. A failed write is retried at the next interval.
func (r *Reporter) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		}
		for {
			r.mu.Lock()
			dirty := r.mu.dirty
			entries := slices.Collect(maps.Values(r.mu.entries))
			tags := maps.Clone(r.mu.tags)
			r.mu.dirty = false
			r.mu.Unlock()
			if !dirty {
				break
			}
			if err := r.write(ctx, entries, tags); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				r.log.Warn("node prefetch report not written; trying again", zap.Error(err))
				r.mu.Lock()
				r.mu.dirty = true
				r.mu.Unlock()
			}
			if err := sleep(ctx, r.clk, r.interval); err != nil {
				return nil
			}
		}
	}
}

// write replaces the node's report with entries and tags.
func (r *Reporter) write(ctx context.Context, entries []Entry, tags map[string]string) error {
	slices.SortFunc(entries, func(a, b Entry) int { return b.Updated.Compare(a.Updated) })
	if len(entries) > maxEntries {
		entries = entries[:maxEntries]
	}
	items := make([]any, 0, len(entries))
	for _, e := range entries {
		items = append(items, map[string]any{
			"announcement": e.Announcement, "reference": e.Reference, "digest": e.Digest,
			"state": string(e.State), "message": truncate(e.Message, 1024),
			"updated": e.Updated.UTC().Format(time.RFC3339),
		})
	}
	obj := r.last
	if obj == nil {
		obj = &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": apiVersion, "kind": nodePrefetchKind,
			"metadata": map[string]any{"name": r.node},
		}}
	} else {
		obj = obj.DeepCopy()
	}
	if err := unstructured.SetNestedSlice(obj.Object, items, "status", "entries"); err != nil {
		return err
	}
	tagItems := make([]any, 0, len(tags))
	for _, ref := range slices.Sorted(maps.Keys(tags)) {
		if len(tagItems) == maxEntries {
			break
		}
		tagItems = append(tagItems, map[string]any{"reference": ref, "running": tags[ref]})
	}
	if err := unstructured.SetNestedSlice(obj.Object, tagItems, "status", "tags"); err != nil {
		return err
	}
	var out *unstructured.Unstructured
	var err error
	if r.last == nil {
		out, err = r.client.Create(ctx, obj, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			// Written before this daemon started: take it over.
			var cur *unstructured.Unstructured
			if cur, err = r.client.Get(ctx, r.node, metav1.GetOptions{}); err == nil {
				r.last = cur
				return r.write(ctx, entries, tags)
			}
		}
	} else {
		out, err = r.client.Update(ctx, obj, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			// Changed or deleted behind our back: start from the API's.
			r.last = nil
			if cur, gerr := r.client.Get(ctx, r.node, metav1.GetOptions{}); gerr == nil {
				r.last = cur
			}
			return fmt.Errorf("fleet: NodePrefetch %s: %w", r.node, err)
		}
	}
	if err != nil {
		return fmt.Errorf("fleet: NodePrefetch %s: %w", r.node, err)
	}
	r.last = out
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
