package kube

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
)

// Sink is told what the watch learns about pods; criproxy's Proxy
// implements it. Its methods must not block for long: the watch's one
// worker calls them.
type Sink interface {
	// PodGone: the pod will never need its start; a start of it that is
	// still queued must leave the queue. reason is "deleted",
	// "terminating" or "finished".
	PodGone(uid, reason string)
	// PodReady: a pod with a readiness or startup probe reports Ready;
	// its warm-up is over.
	PodReady(uid string)
}

// Config wires Pods.
type Config struct {
	// Client is the API client. When nil, NewClient is called by Run,
	// every RetryInterval until it succeeds: on a node joining a cluster
	// startgated may start before kubelet's kubeconfig is written.
	Client    kubernetes.Interface
	NewClient func() (kubernetes.Interface, error)
	// RetryInterval paces NewClient; 0 means 5 s.
	RetryInterval time.Duration
	// NodeName is this node's name as kubelet registered it.
	NodeName string
	Logger   *zap.Logger
	// TombstoneTTL is how long a gone pod's UID is remembered, so that a
	// start of it that reaches the gate after the API said so is refused
	// at once; 0 means 10 minutes (kubelet retries a failed start with a
	// back-off of at most 5 minutes).
	TombstoneTTL time.Duration
	// MaxTombstones bounds that memory; 0 means 10,000. The oldest go
	// first.
	MaxTombstones int
	// Now is the clock for tombstones; nil means time.Now.
	Now func() time.Time
}

// Pods is startgated's view of the pods bound to its node, from one watch
// (a shared informer narrowed by spec.nodeName). Its queries never block
// on the API: they read the informer's cache, and without a synced,
// healthy watch they answer what a node without API access would.
type Pods struct {
	cfg   Config
	log   *zap.Logger
	queue workqueue.TypedInterface[podKey]
	// inf is the informer, set once Run has a client; queries read it
	// without a lock.
	inf atomic.Pointer[cache.SharedIndexInformer]

	// healthy is set when the watch has delivered since its last error.
	healthy atomic.Bool

	// recorder posts Events (events.go); nil outside Run.
	recorder atomic.Pointer[record.EventRecorder]
	// client is the API client, set with inf.
	client kubernetes.Interface

	mu struct {
		sync.Mutex
		// tombstones holds the UIDs of pods known to be gone, with why
		// and when, oldest first in order.
		tombstones map[types.UID]tombstone
		order      []types.UID
	}
}

type tombstone struct {
	reason string
	at     time.Time
}

// podKey is what a handler enqueues: the store key and the UID the event
// was about (after a delete, the store no longer has it).
type podKey struct {
	key string
	uid types.UID
}

const uidIndex = "uid"

// New checks cfg; nothing talks to the API before Run.
func New(cfg Config) (*Pods, error) {
	if cfg.Client == nil && cfg.NewClient == nil {
		return nil, errors.New("kube: no client")
	}
	if cfg.NodeName == "" {
		return nil, errors.New("kube: no node name")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.TombstoneTTL <= 0 {
		cfg.TombstoneTTL = 10 * time.Minute
	}
	if cfg.MaxTombstones <= 0 {
		cfg.MaxTombstones = 10000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = 5 * time.Second
	}
	p := &Pods{cfg: cfg, log: cfg.Logger, queue: workqueue.NewTyped[podKey]()}
	p.mu.tombstones = make(map[types.UID]tombstone)
	if cfg.Client != nil {
		if err := p.setup(cfg.Client); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// setup builds the informer on client.
func (p *Pods) setup(client kubernetes.Interface) error {
	cfg := p.cfg
	// One watch per node, as kubelet's own: the API server filters by
	// spec.nodeName, so this node sees its pods only.
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
		}))
	inf := factory.Core().V1().Pods().Informer()
	// Managed fields are most of a pod object's size and never read here.
	if err := inf.SetTransform(func(obj any) (any, error) {
		if m, err := meta.Accessor(obj); err == nil {
			m.SetManagedFields(nil)
		}
		return obj, nil
	}); err != nil {
		return fmt.Errorf("kube: %w", err)
	}
	if err := inf.AddIndexers(cache.Indexers{uidIndex: func(obj any) ([]string, error) {
		if pod, ok := obj.(*corev1.Pod); ok {
			return []string{string(pod.UID)}, nil
		}
		return nil, nil
	}}); err != nil {
		return fmt.Errorf("kube: %w", err)
	}
	if err := inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		if p.healthy.Swap(false) {
			p.log.Warn("pod watch failed: warm-ups end on CPU settling alone until it is back", zap.Error(err))
		}
		p.log.Debug("pod watch error", zap.Error(err))
	}); err != nil {
		return fmt.Errorf("kube: %w", err)
	}
	// Handlers only enqueue; the worker owns what follows, so a slow
	// consumer never stalls the watch.
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { p.enqueue(obj) },
		UpdateFunc: func(_, obj any) { p.enqueue(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			p.enqueue(obj)
		},
	}); err != nil {
		return fmt.Errorf("kube: %w", err)
	}
	p.client = client
	p.inf.Store(&inf)
	return nil
}

func (p *Pods) enqueue(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	key, err := cache.MetaNamespaceKeyFunc(pod)
	if err != nil {
		return
	}
	if !p.healthy.Swap(true) && p.synced() {
		p.log.Info("pod watch delivering again")
	}
	p.queue.Add(podKey{key: key, uid: pod.UID})
}

// Run watches until ctx ends, telling sink what it learns, and returns nil
// then; the informer retries an unreachable API server by itself, with
// back-off. The sink is Run's, not New's, so that the proxy that consumes
// Pods' queries can be the sink.
func (p *Pods) Run(ctx context.Context, sink Sink) error {
	if sink == nil {
		return errors.New("kube: no sink")
	}
	// The worker waits in queue.Get: the queue shuts down before wg is
	// waited for (defers run last first).
	var wg sync.WaitGroup
	defer wg.Wait()
	defer p.queue.ShutDown()
	inf := p.informer()
	if inf == nil {
		client, err := p.connect(ctx)
		if err != nil {
			return nil // ctx ended first
		}
		if err := p.setup(client); err != nil {
			p.log.Error("no pod watch: starts are gated from the CRI alone", zap.Error(err))
			<-ctx.Done()
			return nil
		}
		inf = p.informer()
	}
	defer p.startEvents(p.client)()
	wg.Go(func() { inf.RunWithContext(ctx) })
	wg.Go(func() {
		for p.process(inf, sink) {
		}
	})
	start := time.Now()
	if cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		p.healthy.Store(true)
		p.log.Info("pod watch synced", zap.String("node", p.cfg.NodeName),
			zap.Int("pods", len(inf.GetStore().ListKeys())), zap.Duration("took", time.Since(start)))
	}
	<-ctx.Done()
	return nil
}

// connect calls NewClient every RetryInterval until it succeeds or ctx
// ends, logging each new reason it fails for.
func (p *Pods) connect(ctx context.Context) (kubernetes.Interface, error) {
	last := ""
	t := time.NewTicker(p.cfg.RetryInterval)
	defer t.Stop()
	for {
		client, err := p.cfg.NewClient()
		if err == nil {
			if last != "" {
				p.log.Info("API client ready")
			}
			return client, nil
		}
		if err.Error() != last {
			last = err.Error()
			p.log.Warn("no API access yet: starts are gated from the CRI alone; retrying",
				zap.Duration("every", p.cfg.RetryInterval), zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// informer is the pod informer, nil until there is a client.
func (p *Pods) informer() cache.SharedIndexInformer {
	if inf := p.inf.Load(); inf != nil {
		return *inf
	}
	return nil
}

func (p *Pods) synced() bool {
	inf := p.informer()
	return inf != nil && inf.HasSynced()
}

// process handles one queued pod; it reports false once the queue is shut
// down.
func (p *Pods) process(inf cache.SharedIndexInformer, sink Sink) bool {
	k, quit := p.queue.Get()
	if quit {
		return false
	}
	defer p.queue.Done(k)
	obj, exists, err := inf.GetIndexer().GetByKey(k.key)
	var pod *corev1.Pod
	if err == nil && exists {
		pod, _ = obj.(*corev1.Pod)
	}
	switch {
	case pod == nil || pod.UID != k.uid:
		// Deleted, or replaced by a pod of the same name (a StatefulSet's).
		p.gone(sink, k, "deleted")
	case pod.DeletionTimestamp != nil:
		p.gone(sink, k, "terminating")
	case pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
		p.gone(sink, k, "finished")
	case readinessProbed(pod) && podReady(pod):
		sink.PodReady(string(k.uid))
	}
	return true
}

func (p *Pods) gone(sink Sink, k podKey, reason string) {
	now := p.cfg.Now()
	p.mu.Lock()
	_, known := p.mu.tombstones[k.uid]
	if !known {
		p.mu.tombstones[k.uid] = tombstone{reason: reason, at: now}
		p.mu.order = append(p.mu.order, k.uid)
		p.pruneLocked(now)
	}
	p.mu.Unlock()
	if !known {
		p.log.Debug("pod gone", zap.String("pod", k.key), zap.String("uid", string(k.uid)), zap.String("reason", reason))
	}
	// Told every time: a start may have queued since the last event.
	sink.PodGone(string(k.uid), reason)
}

func (p *Pods) pruneLocked(now time.Time) {
	n := 0
	for _, uid := range p.mu.order {
		t := p.mu.tombstones[uid]
		if now.Sub(t.at) < p.cfg.TombstoneTTL && len(p.mu.order)-n <= p.cfg.MaxTombstones {
			break
		}
		delete(p.mu.tombstones, uid)
		n++
	}
	p.mu.order = p.mu.order[n:]
}

// Gone reports whether the pod with this UID is known to be deleted,
// terminating or finished, and which. An unknown UID is not gone: the
// watch may simply not have seen the pod yet.
func (p *Pods) Gone(uid string) (reason string, gone bool) {
	if uid == "" {
		return "", false
	}
	p.mu.Lock()
	t, ok := p.mu.tombstones[types.UID(uid)]
	p.mu.Unlock()
	if ok && p.cfg.Now().Sub(t.at) < p.cfg.TombstoneTTL {
		return t.reason, true
	}
	pod := p.byUID(uid)
	switch {
	case pod == nil:
		return "", false
	case pod.DeletionTimestamp != nil:
		return "terminating", true
	case pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
		return "finished", true
	}
	return "", false
}

// WaitsForReady reports whether the pod's warm-up should end at Ready
// rather than when its CPU use settles: the watch is healthy, the pod has
// a readiness or startup probe, and it is not Ready yet. Without a probe,
// kubelet reports Ready as soon as the containers run, which says nothing
// about warm-up; without a healthy watch, Ready might never be seen.
func (p *Pods) WaitsForReady(uid string) bool {
	if !p.Healthy() {
		return false
	}
	pod := p.byUID(uid)
	return pod != nil && readinessProbed(pod) && !podReady(pod)
}

// Healthy reports whether the watch has synced and has delivered since its
// last error.
func (p *Pods) Healthy() bool {
	return p.healthy.Load() && p.synced()
}

func (p *Pods) byUID(uid string) *corev1.Pod {
	inf := p.informer()
	if inf == nil {
		return nil
	}
	objs, err := inf.GetIndexer().ByIndex(uidIndex, uid)
	if err != nil || len(objs) == 0 {
		return nil
	}
	pod, _ := objs[0].(*corev1.Pod)
	return pod
}

// readinessProbed: some container's readiness or startup probe decides
// when the pod is Ready (sidecars, init containers that keep running,
// count too).
func readinessProbed(pod *corev1.Pod) bool {
	for _, c := range pod.Spec.Containers {
		if c.ReadinessProbe != nil || c.StartupProbe != nil {
			return true
		}
	}
	for _, c := range pod.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways &&
			(c.ReadinessProbe != nil || c.StartupProbe != nil) {
			return true
		}
	}
	return false
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
