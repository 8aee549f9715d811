package daemon

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/go-logr/zapr"
	"github.com/startgate/startgate/internal/config"
	"github.com/startgate/startgate/internal/fleet"
	"github.com/startgate/startgate/internal/kube"
	"github.com/startgate/startgate/internal/prefetch"
	"github.com/startgate/startgate/internal/version"
)

// fleetRecheck is how often a node whose cluster lacks deploy/fleet's
// resources (or whose API is out of reach) looks again.
const fleetRecheck = time.Minute

// fleetPart is the daemon's share of the fleet ([fleet], internal/fleet).
// It waits for the API and for deploy/fleet's resources, then runs this
// node's fleet.Node (and the election, when a candidate). Until then, and
// whenever it is not running, prefetch is bounded by nothing beyond this
// node: the node prefetches as it would alone.
type fleetPart struct {
	cfg      config.Fleet
	kube     config.Kubernetes
	nodeName string
	log      *zap.Logger
	manager  *prefetch.Manager
	fetcher  *prefetch.Fetcher
	// resolveEvery is prefetch.interval: the cluster resolver's.
	resolveEvery time.Duration

	// node is the running fleet.Node; nil while not running.
	node atomic.Pointer[fleet.Node]
	// announce queues the digests this node heard of (its registry
	// webhook) for the cluster, bounded: a flood of pushes drops, said.
	announce chan [2]string
}

func newFleetPart(cfg *config.Config, log *zap.Logger) *fleetPart {
	// client-go (the election, the informers) logs through klog: ours,
	// whether or not the pod watch set it already.
	klog.SetLogger(zapr.NewLogger(log.Named("client-go")))
	name := cfg.Kubernetes.NodeName
	if name == "" {
		name = kube.DefaultNodeName()
	}
	return &fleetPart{cfg: cfg.Fleet, kube: cfg.Kubernetes, nodeName: name, log: log.Named("fleet"), announce: make(chan [2]string, 64),
		resolveEvery: cfg.Prefetch.Interval.Std()}
}

// Acquire is the prefetch Manager's Upstream.
func (f *fleetPart) Acquire(ctx context.Context, ref, dgst string) (prefetch.UpstreamFetch, error) {
	n := f.node.Load()
	if n == nil {
		return unbounded{}, nil
	}
	fe, err := n.Acquire(ctx, ref, dgst)
	if err != nil {
		return nil, err
	}
	return fe, nil
}

type unbounded struct{}

func (unbounded) Lost() <-chan struct{}      { return nil }
func (unbounded) End(context.Context, error) {}

var (
	_ prefetch.Upstream      = (*fleetPart)(nil)
	_ prefetch.UpstreamFetch = (*fleet.Fetch)(nil)
	_ fleet.Prefetcher       = fleetPrefetcher{}
)

// fleetPrefetcher is the Manager and Fetcher as the fleet's Prefetcher.
type fleetPrefetcher struct {
	m *prefetch.Manager
	f *prefetch.Fetcher
}

func (p fleetPrefetcher) Wants(ref string) bool           { return p.m.Watched(ref) }
func (p fleetPrefetcher) ViaMirror(ref string) bool       { return p.f.ViaMirror(ref) }
func (p fleetPrefetcher) Prefetch(ref, dgst string) error { return p.m.Announced(ref, dgst) }
func (p fleetPrefetcher) Tags() map[string]string         { return p.m.Tags() }

// Announce queues ref at dgst for the cluster (a push this node's webhook
// received); it does not block.
func (f *fleetPart) Announce(ref, dgst string) {
	select {
	case f.announce <- [2]string{ref, dgst}:
	default:
		f.log.Warn("announcement dropped: too many queued", zap.String("reference", ref), zap.String("digest", dgst))
	}
}

// run takes part in the fleet until ctx ends.
func (f *fleetPart) run(ctx context.Context) {
	for ctx.Err() == nil {
		err := f.runOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		f.log.Warn("not coordinating with the fleet; prefetching on this node alone, trying again",
			zap.Error(err), zap.Duration("in", fleetRecheck))
		if sleepCtx(ctx, fleetRecheck) != nil {
			return
		}
	}
}

// runOnce connects, checks the resources are installed, and runs the
// node until ctx ends or it cannot go on.
func (f *fleetPart) runOnce(ctx context.Context) error {
	rc, err := kube.RESTConfig(f.kube.Kubeconfig, "startgated/"+version.Version)
	if err != nil {
		return err
	}
	// Watches must not be cut by a request timeout; client-go's HTTP/2
	// health check finds a dead connection.
	rc.Timeout = 0
	typed, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return err
	}
	gv := fleet.AnnouncementGVR.GroupVersion().String()
	if _, err := typed.Discovery().ServerResourcesForGroupVersion(gv); err != nil {
		if apierrors.IsNotFound(err) {
			return errors.New("the fleet's resources are not installed (kubectl apply -f deploy/fleet/)")
		}
		return err
	}
	c := f.cfg
	budget, err := fleet.NewBudget(fleet.BudgetOptions{
		Leases: typed.CoordinationV1().Leases(c.Namespace), Identity: f.nodeName, Slots: c.UpstreamSlots,
		LeaseDuration: c.LeaseDuration.Std(), RetryMin: c.RetryMin.Std(), RetryMax: c.RetryMax.Std(),
		FailOpenAfter: c.FailOpenAfter.Std(), Logger: f.log,
	})
	if err != nil {
		return err
	}
	node, err := fleet.NewNode(fleet.NodeOptions{
		Dynamic: dyn, Name: f.nodeName, Budget: budget, Prefetcher: fleetPrefetcher{m: f.manager, f: f.fetcher},
		StartJitter: c.StartJitter.Std(), ReportEvery: c.ReportEvery.Std(), Logger: f.log,
	})
	if err != nil {
		return err
	}
	f.log.Info("coordinating prefetch with the fleet", zap.String("node", f.nodeName), zap.String("namespace", c.Namespace),
		zap.Int("upstream_slots", c.UpstreamSlots), zap.Bool("leader_candidate", c.LeaderCandidate))
	var wg sync.WaitGroup
	defer wg.Wait()
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Go(func() { _ = node.Run(rctx) })
	f.node.Store(node)
	defer f.node.Store(nil)
	if c.LeaderCandidate {
		wg.Go(func() {
			fleet.RunLeader(rctx, typed, c.Namespace, f.nodeName, f.log, func(ctx context.Context) {
				e := &fleet.Elected{Dynamic: dyn, SumEvery: c.StatusEvery.Std(), Logger: f.log}
				if c.ClusterResolver {
					e.Resolve, e.ResolveEvery = f.fetcher.ResolveDigest, f.resolveEvery
				}
				_ = e.Run(ctx)
			})
		})
	}
	// With a cluster resolver elected, this node does not poll itself.
	var leaderCheck <-chan time.Time
	if c.ClusterResolver {
		t := time.NewTicker(leaderCheckEvery)
		defer t.Stop()
		leaderCheck = t.C
		defer f.manager.SetPolling(true)
		f.manager.SetPolling(!f.resolverElected(ctx, typed))
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-leaderCheck:
			f.manager.SetPolling(!f.resolverElected(ctx, typed))
		case a := <-f.announce:
			if _, err := fleet.Announce(ctx, dyn, a[0], a[1]); err != nil {
				f.log.Warn("announcement not made", zap.String("reference", a[0]), zap.String("digest", a[1]), zap.Error(err))
			}
		}
	}
}

// leaderCheckEvery is how often a node with fleet.cluster_resolver looks
// whether a resolver is elected (a GET of its Lease).
const leaderCheckEvery = 30 * time.Second

// resolverElected says whether the leader Lease is held and was renewed
// within its duration: the cluster's resolver is at work.
func (f *fleetPart) resolverElected(ctx context.Context, typed kubernetes.Interface) bool {
	l, err := typed.CoordinationV1().Leases(f.cfg.Namespace).Get(ctx, fleet.LeaderLease, metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" || l.Spec.RenewTime == nil {
		return false
	}
	d := 15 * time.Second
	if l.Spec.LeaseDurationSeconds != nil {
		d = time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
	}
	return time.Since(l.Spec.RenewTime.Time) < 2*d
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
