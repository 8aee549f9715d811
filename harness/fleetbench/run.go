package fleetbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/startgate/startgate/deploy"
	"github.com/startgate/startgate/harness/testbed/cluster"
	"github.com/startgate/startgate/internal/fleet"
)

// Options of one simulation.
type Options struct {
	Nodes     int
	Slots     int
	FetchTime time.Duration
	// LeaseDuration, RetryMin, RetryMax, StartJitter and ReportEvery are
	// the nodes' fleet settings.
	LeaseDuration, RetryMin, RetryMax, StartJitter, ReportEvery time.Duration
	// StatusEvery is the elected node's summing interval.
	StatusEvery time.Duration
	// Kill makes the first node to start fetching die mid-fetch: its API
	// connection cut, its goroutines stopped, its slot never released.
	Kill bool
	// Mirror gives every node a mirror in front of the registry: once a
	// node reports the digest done, the others fetch without a slot.
	Mirror bool
	// Candidates is how many nodes stand for election (the one elected
	// sums the reports into the announcement's status).
	Candidates int
	// Deadline bounds the wait for every node to be done.
	Deadline time.Duration
	// KubeBin is where the Kubernetes binaries are (cluster.Binaries).
	KubeBin string
	Logger  *zap.Logger
}

// Result of one simulation.
type Result struct {
	Options      Options `json:"-"`
	Nodes        int     `json:"nodes"`
	Slots        int     `json:"slots"`
	FetchTimeS   float64 `json:"fetch_time_s"`
	IdealS       float64 `json:"ideal_s"`      // N×T/K
	CompletionS  float64 `json:"completion_s"` // announcement to the last node done
	PeakFetching int     `json:"peak_fetching"`
	// PeakUpstream is the most fetches at once that held an upstream
	// slot (all of them without Mirror).
	PeakUpstream int `json:"peak_upstream"`
	// Upstream is how many fetches held a slot.
	Upstream int `json:"upstream"`
	Done     int `json:"done"`
	// KillTakeoverS is how long after the kill the dead node's slot was
	// held by another (Kill).
	KillTakeoverS float64 `json:"kill_takeover_s,omitempty"`
	// Requests are all nodes' API requests from the announcement to the
	// last node done, by verb and resource ("watch imageannouncements").
	Requests map[string]int64 `json:"requests"`
	// PerNodePerSecond is Requests summed, per node per second.
	PerNodePerSecond float64 `json:"per_node_per_second"`
	// WatchesPerNode is the watches each node holds open.
	WatchesPerNode float64 `json:"watches_per_node"`
	// ServerRequests is the API server's own count over the same time
	// (apiserver_request_total), all clients included.
	ServerRequests int64 `json:"server_requests"`
	// StatusDone is the announcement's status.done as summed by the
	// elected node once all were done.
	StatusDone int `json:"status_done"`
}

// sim is one simulation's shared state.
type sim struct {
	opts     Options
	fetching atomic.Int32
	peak     atomic.Int32
	upNow    atomic.Int32 // fetching with a slot
	upPeak   atomic.Int32
	upTotal  atomic.Int32
	done     atomic.Int32
	lastDone atomic.Int64 // unix nanos
	nodes    []*simNode

	killOnce sync.Once
	killed   chan *simNode // the victim, once killed
}

type simNode struct {
	name   string
	rt     *countingRT
	node   *fleet.Node
	ctx    context.Context // the node's life
	cancel context.CancelFunc
	wg     *sync.WaitGroup // the simulation's goroutines
}

// Run runs one simulation on a control plane of its own.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Nodes < 1 || o.Slots < 1 || o.FetchTime <= 0 {
		return nil, errors.New("fleetbench: nodes, slots and fetch time must be positive")
	}
	c, err := cluster.Start(ctx, cluster.Options{NoKubelet: true, KubeBin: o.KubeBin})
	if err != nil {
		return nil, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		_ = c.Stop(sctx)
	}()
	return RunOn(ctx, o, c)
}

// RunOn runs one simulation on a running control plane: it installs
// deploy/fleet there first.
func RunOn(ctx context.Context, o Options, c *cluster.Cluster) (*Result, error) {
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	if err := install(ctx, c); err != nil {
		return nil, err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		return nil, err
	}
	return run(ctx, o, cfg, c.Client(), log)
}

// install applies deploy/fleet and waits for the CRDs to be served.
func install(ctx context.Context, c *cluster.Cluster) error {
	if err := c.Apply(ctx, deploy.Fleet, "fleet"); err != nil {
		return fmt.Errorf("fleetbench: install deploy/fleet: %w", err)
	}
	return nil
}

const namespace = "startgate-system"

func run(ctx context.Context, o Options, cfg *rest.Config, admin kubernetes.Interface, log *zap.Logger) (*Result, error) {
	s := &sim{opts: o, killed: make(chan *simNode, 1)}
	if _, err := admin.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{}); err != nil {
		if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
	}
	runCtx, stopAll := context.WithCancel(ctx)
	defer stopAll()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopAll()

	// Nodes share a connection per group of 50, as many nodes' traffic
	// shares an API server's load balancer; each counts its own requests.
	var group http.RoundTripper
	for i := range o.Nodes {
		if i%50 == 0 {
			gc := rest.CopyConfig(cfg)
			d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
			gc.Dial = d.DialContext // a distinct dialer: a transport of its own
			rt, err := rest.TransportFor(gc)
			if err != nil {
				return nil, err
			}
			group = rt
		}
		n := &simNode{name: fmt.Sprintf("sim-node-%04d", i), rt: &countingRT{rt: group}}
		s.nodes = append(s.nodes, n)
		nc := rest.CopyConfig(cfg)
		nc.QPS, nc.Burst = 5, 10 // client-go's defaults, as a node's
		hc := &http.Client{Transport: n.rt}
		dyn, err := dynamic.NewForConfigAndClient(nc, hc)
		if err != nil {
			return nil, err
		}
		typed, err := kubernetes.NewForConfigAndClient(nc, hc)
		if err != nil {
			return nil, err
		}
		nlog := log.Named(n.name)
		budget, err := fleet.NewBudget(fleet.BudgetOptions{Leases: typed.CoordinationV1().Leases(namespace), Identity: n.name,
			Slots: o.Slots, LeaseDuration: o.LeaseDuration, RetryMin: o.RetryMin, RetryMax: o.RetryMax, Logger: nlog})
		if err != nil {
			return nil, err
		}
		node, err := fleet.NewNode(fleet.NodeOptions{Dynamic: dyn, Name: n.name, Budget: budget, Prefetcher: simPrefetcher{s: s, n: n},
			StartJitter: o.StartJitter, ReportEvery: o.ReportEvery, Logger: nlog})
		if err != nil {
			return nil, err
		}
		nctx, cancel := context.WithCancel(runCtx)
		n.node, n.ctx, n.cancel, n.wg = node, nctx, cancel, &wg
		wg.Go(func() { _ = node.Run(nctx) })
		if i < o.Candidates {
			wg.Go(func() {
				fleet.RunLeader(nctx, typed, namespace, n.name, nlog, func(ctx context.Context) {
					_ = (&fleet.Elected{Dynamic: dyn, SumEvery: o.StatusEvery, Logger: nlog}).Run(ctx)
				})
			})
		}
	}
	// Every node's watch is open before the announcement.
	if err := waitFor(ctx, 5*time.Minute, func() bool {
		for _, n := range s.nodes {
			if n.rt.watches.Load() == 0 {
				return false
			}
		}
		return true
	}); err != nil {
		return nil, fmt.Errorf("fleetbench: nodes' watches not open: %w", err)
	}
	time.Sleep(2 * time.Second) // the initial lists and reports settle
	for _, n := range s.nodes {
		n.rt.reset()
	}
	before, err := serverRequests(ctx, admin)
	if err != nil {
		return nil, err
	}

	adminDyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	a, err := fleet.Announce(ctx, adminDyn, simRef, "sha256:"+strings.Repeat("ab", 32))
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	want := int32(o.Nodes)
	if o.Kill {
		want--
	}
	var takeover time.Duration
	if o.Kill {
		wg.Go(func() { takeover = watchTakeover(runCtx, admin, s.killed) })
	}
	deadline := o.Deadline
	if deadline == 0 {
		deadline = 3*time.Duration(float64(o.FetchTime)*float64(o.Nodes)/float64(o.Slots)) + 5*time.Minute
	}
	if err := waitFor(ctx, deadline, func() bool { return s.done.Load() >= want }); err != nil {
		return nil, fmt.Errorf("fleetbench: %d of %d nodes done: %w", s.done.Load(), want, err)
	}
	completion := time.Unix(0, s.lastDone.Load()).Sub(t0)
	after, err := serverRequests(ctx, admin)
	if err != nil {
		return nil, err
	}
	res := &Result{Options: o, Nodes: o.Nodes, Slots: o.Slots, FetchTimeS: o.FetchTime.Seconds(),
		IdealS:      (time.Duration(float64(o.FetchTime) * float64(o.Nodes) / float64(o.Slots))).Seconds(),
		CompletionS: completion.Seconds(), PeakFetching: int(s.peak.Load()), Done: int(s.done.Load()),
		PeakUpstream: int(s.upPeak.Load()), Upstream: int(s.upTotal.Load()),
		Requests: map[string]int64{}, ServerRequests: after - before}
	var total, watches int64
	for _, n := range s.nodes {
		for verb, c := range n.rt.snapshot() {
			res.Requests[verb] += c
			total += c
		}
		watches += n.rt.open.Load()
	}
	res.PerNodePerSecond = float64(total) / float64(o.Nodes) / completion.Seconds()
	res.WatchesPerNode = float64(watches) / float64(o.Nodes)
	// The elected node's sum catches up within its interval.
	_ = waitFor(ctx, 30*time.Second, func() bool {
		u, err := adminDyn.Resource(fleet.AnnouncementGVR).Get(ctx, a.Name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		st, ok := u.Object["status"].(map[string]any)
		if !ok {
			return false
		}
		d, _ := st["done"].(int64)
		res.StatusDone = int(d)
		return res.StatusDone >= int(want)
	})
	stopAll()
	wg.Wait()
	if o.Kill {
		res.KillTakeoverS = takeover.Seconds()
	}
	return res, nil
}

// simPrefetcher is a node's prefetcher: its fetch takes FetchTime under
// the node's fleet.Acquire, as the real Manager's does; or it kills its
// node.
type simPrefetcher struct {
	s *sim
	n *simNode
}

func (simPrefetcher) Wants(string) bool       { return true }
func (p simPrefetcher) ViaMirror(string) bool { return p.s.opts.Mirror }

// Tags: every node runs the announced tag, at the digest before it.
func (simPrefetcher) Tags() map[string]string {
	return map[string]string{simRef: "sha256:" + strings.Repeat("cd", 32)}
}

const simRef = "registry.example.com/app:1"

func (p simPrefetcher) Prefetch(ref, dgst string) error {
	p.n.wg.Go(func() {
		ctx := p.n.ctx
		f, err := p.n.node.Acquire(ctx, ref, dgst)
		if err != nil {
			return
		}
		err = p.fetch(ctx, f.Lost(), f.Lost() != nil)
		f.End(context.WithoutCancel(ctx), err)
	})
	return nil
}

func (p simPrefetcher) fetch(ctx context.Context, lost <-chan struct{}, upstream bool) error {
	s := p.s
	cur := s.fetching.Add(1)
	defer s.fetching.Add(-1)
	raise(&s.peak, cur)
	if upstream {
		s.upTotal.Add(1)
		raise(&s.upPeak, s.upNow.Add(1))
		defer s.upNow.Add(-1)
	}
	if s.opts.Kill {
		victim := false
		s.killOnce.Do(func() { victim = true })
		if victim {
			// Dies mid-fetch: cut off from the API, then stopped; its
			// slot is never released.
			p.n.rt.dead.Store(true)
			p.n.cancel()
			s.killed <- p.n
			return errors.New("killed")
		}
	}
	t := time.NewTimer(s.opts.FetchTime)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-lost:
		return errors.New("upstream slot lost")
	case <-t.C:
	}
	s.done.Add(1)
	s.lastDone.Store(time.Now().UnixNano())
	return nil
}

// raise sets peak to v if v is higher.
func raise(peak *atomic.Int32, v int32) {
	for p := peak.Load(); v > p && !peak.CompareAndSwap(p, v); p = peak.Load() {
	}
}

// watchTakeover waits for the killed node, then for its slot to have
// another holder, and returns how long that took.
func watchTakeover(ctx context.Context, admin kubernetes.Interface, killed <-chan *simNode) time.Duration {
	var victim *simNode
	select {
	case victim = <-killed:
	case <-ctx.Done():
		return 0
	}
	at := time.Now()
	leases := admin.CoordinationV1().Leases(namespace)
	slot := ""
	for ctx.Err() == nil {
		list, err := leases.List(ctx, metav1.ListOptions{LabelSelector: fleet.SlotLabel + "=true"})
		if err == nil {
			for _, l := range list.Items {
				h := ""
				if l.Spec.HolderIdentity != nil {
					h = *l.Spec.HolderIdentity
				}
				if slot == "" && h == victim.name {
					slot = l.Name
				}
				if slot != "" && l.Name == slot && h != victim.name {
					return time.Since(at)
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return 0
}

// serverRequests is the API server's apiserver_request_total, summed.
func serverRequests(ctx context.Context, admin kubernetes.Interface) (int64, error) {
	b, err := admin.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return 0, fmt.Errorf("fleetbench: API server metrics: %w", err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(b)))
	if err != nil {
		return 0, fmt.Errorf("fleetbench: API server metrics: %w", err)
	}
	var n float64
	if f, ok := fams["apiserver_request_total"]; ok {
		for _, m := range f.GetMetric() {
			n += m.GetCounter().GetValue()
		}
	}
	return int64(n), nil
}

func waitFor(ctx context.Context, d time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// countingRT counts a node's requests by verb; dead, it fails them all.
type countingRT struct {
	rt   http.RoundTripper
	dead atomic.Bool

	watches atomic.Int64 // watches ever opened
	open    atomic.Int64 // watches open now
	mu      sync.Mutex
	byVerb  map[string]int64
}

func (c *countingRT) RoundTrip(req *http.Request) (*http.Response, error) {
	if c.dead.Load() {
		return nil, errors.New("fleetbench: node is dead")
	}
	verb := strings.ToLower(req.Method)
	watch := req.URL.Query().Get("watch") == "true"
	if watch {
		verb = "watch"
		c.watches.Add(1)
	} else if verb == "get" && isList(req.URL.Path) {
		verb = "list"
	}
	verb += " " + resourceOf(req.URL.Path)
	c.mu.Lock()
	if c.byVerb == nil {
		c.byVerb = map[string]int64{}
	}
	c.byVerb[verb]++
	c.mu.Unlock()
	resp, err := c.rt.RoundTrip(req)
	if watch && err == nil {
		c.open.Add(1)
		resp.Body = &closeCounter{ReadCloser: resp.Body, open: &c.open}
	}
	return resp, err
}

// resourceOf names the resource an API path is about: leases,
// imageannouncements (with /status), nodeprefetches.
func resourceOf(path string) string {
	for _, r := range []string{"leases", "imageannouncements", "nodeprefetches"} {
		if i := strings.Index(path, "/"+r); i >= 0 {
			if strings.HasSuffix(path, "/status") {
				return r + "/status"
			}
			return r
		}
	}
	return "other"
}

func (c *countingRT) reset() {
	c.mu.Lock()
	c.byVerb = map[string]int64{}
	c.mu.Unlock()
}

func (c *countingRT) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.byVerb))
	for k, v := range c.byVerb {
		out[k] = v
	}
	return out
}

// isList says whether an API path names a collection: its resource is
// the last segment (…/leases, …/imageannouncements).
func isList(path string) bool {
	for _, r := range []string{"/leases", "/imageannouncements", "/nodeprefetches"} {
		if strings.HasSuffix(path, r) {
			return true
		}
	}
	return false
}

// closeCounter counts a watch as closed when its body is.
type closeCounter struct {
	io.ReadCloser
	open *atomic.Int64
	once sync.Once
}

func (c *closeCounter) Close() error {
	c.once.Do(func() { c.open.Add(-1) })
	return c.ReadCloser.Close()
}
