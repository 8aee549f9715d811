package kubebench

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// podSeen is what the watch saw of one pod: its own timestamps (the API
// server's and the kubelet's, one-second resolution) and when the watch
// delivered each change, in this process's clock.
type podSeen struct {
	name     string
	created  time.Time // metadata.creationTimestamp
	readyAt  time.Time // the Ready condition's lastTransitionTime, while Ready
	added    time.Time // the watch's first sight: creation + delivery
	deleted  time.Time // when it left the API; zero while it exists
	ready    time.Time // the last transition to Ready seen; zero if not Ready
	restarts int32
	// container is the app container's ID as last seen; readyWith the ID
	// it had when the pod last became Ready.
	container, readyWith string
}

// tracker watches the app's pods (one informer, the label selector) and
// keeps when each was added, became Ready and went away. Waiters are woken
// on every change.
type tracker struct {
	mu      sync.Mutex
	pods    map[string]*podSeen // by UID
	changed chan struct{}       // closed and replaced on every change
}

func newTracker() *tracker {
	return &tracker{pods: map[string]*podSeen{}, changed: make(chan struct{})}
}

// run watches until ctx ends; it returns once the informer has synced.
func (t *tracker) run(ctx context.Context, client kubernetes.Interface, ns string) {
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(ns),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = labels.SelectorFromSet(labels.Set{"app": appName}).String()
		}))
	inf := f.Core().V1().Pods().Informer()
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { t.update(obj, false) },
		UpdateFunc: func(_, obj any) { t.update(obj, false) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			t.update(obj, true)
		},
	})
	f.Start(ctx.Done())
	f.WaitForCacheSync(ctx.Done())
	go func() {
		<-ctx.Done()
		f.Shutdown()
	}()
}

func (t *tracker) update(obj any, deleted bool) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.pods[string(p.UID)]
	if s == nil {
		s = &podSeen{name: p.Name, created: p.CreationTimestamp.Time, added: now}
		t.pods[string(p.UID)] = s
	}
	if deleted {
		s.deleted = now
	}
	for _, cs := range p.Status.ContainerStatuses {
		s.restarts = max(s.restarts, cs.RestartCount)
		s.container = cs.ContainerID
	}
	ready := false
	var readyAt time.Time
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			ready, readyAt = true, c.LastTransitionTime.Time
		}
	}
	switch {
	case ready && (s.ready.IsZero() || s.readyWith != s.container):
		s.ready, s.readyAt, s.readyWith = now, readyAt, s.container
	case !ready:
		s.ready, s.readyAt = time.Time{}, time.Time{}
	}
	close(t.changed)
	t.changed = make(chan struct{})
}

// snapshot copies every pod seen, and the channel closed at the next
// change.
func (t *tracker) snapshot() (map[string]podSeen, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]podSeen, len(t.pods))
	for uid, s := range t.pods {
		out[uid] = *s
	}
	return out, t.changed
}

// forgetGone drops pods that left the API: a run looks at the pods of
// its own scenario only.
func (t *tracker) forgetGone() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for uid, s := range t.pods {
		if !s.deleted.IsZero() {
			delete(t.pods, uid)
		}
	}
}

// waitFor waits until done holds for the pods seen, ctx ends or d passes;
// it reports whether done held.
func (t *tracker) waitFor(ctx context.Context, d time.Duration, done func(map[string]podSeen) bool) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		pods, changed := t.snapshot()
		if done(pods) {
			return true
		}
		select {
		case <-changed:
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}
