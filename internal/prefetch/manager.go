package prefetch

// The Manager (issue 4, items 1 and 2 without the webhook and the API):
// which tags to watch, seeing a new digest for one, and handing that digest
// to the Fetcher.
//
// One goroutine, the loop, owns the schedule: every jittered interval it
// refreshes the watch set from containerd's image records and resolves
// every watched tag whose registry is not backing off; Trigger wakes it to
// resolve one tag at once. Resolves run one at a time in the loop, each
// with its own timeout: they are a HEAD each, and a slow registry only
// delays the next cycle. A new digest starts a fetch goroutine, which waits
// for one of Options.Concurrency slots; Run waits for all of them.
//
// The digest compared is the one containerd's resolver returns for the
// tag (a manifest HEAD: the manifest, or the index holding this node's
// platform's). That is what the CRI stores as the image record's target
// after a pull, so "running" and "new" are comparable; the Fetcher picks
// this node's platform from an index when it fetches.
//
// The Manager also follows the node's tags as they move (refresh): a move
// to a done prefetch is a hit, and the digest left behind is protected for
// the rollback window (flight.go, rollback.go).
//
// Lock order: Manager.mu only; no call out (containerd, registry, Fetcher,
// MoveTag) is made while holding it. The logger, the Observer, subscriber
// channels (never blocking) and a fetch's wait-cancel function are used
// under it.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/clock"

	"github.com/startgate/startgate/internal/broadcast"
)

// ErrNotTag is returned (wrapped) by Add, Remove and Trigger for a
// reference that is not a tag: a digest never changes, so there is nothing
// to watch.
var ErrNotTag = errors.New("prefetch: not a tag reference")

const (
	// DefaultInterval is how often watched tags are resolved when
	// ManagerOptions.Interval is 0.
	DefaultInterval = 5 * time.Minute
	// DefaultMaxBackoff caps a failing registry's backoff when
	// ManagerOptions.MaxBackoff is 0.
	DefaultMaxBackoff = time.Hour
	// DefaultResolveTimeout bounds one resolve when
	// ManagerOptions.ResolveTimeout is 0.
	DefaultResolveTimeout = 30 * time.Second
	// jitter spreads each wait over ±jitter of its length, so that nodes
	// started together do not resolve against a registry together.
	jitter = 0.2
)

// State is where a watched reference is.
type State string

const (
	// StateIdle: the tag resolves to the digest the node runs (or has not
	// been resolved yet); nothing to do.
	StateIdle State = "idle"
	// StatePending: a new digest was seen and waits for a fetch slot.
	StatePending State = "pending"
	// StateFetching: the new digest is being fetched.
	StateFetching State = "fetching"
	// StateDone: the new digest is in containerd, held by a lease.
	StateDone State = "done"
	// StateFailed: the last resolve or fetch failed; Entry.Error says why.
	// It is retried on the next cycle its registry is not backing off.
	StateFailed State = "failed"
)

// Entry is the state of one watched reference, as List reports it.
type Entry struct {
	// Ref is the normalised tag reference.
	Ref string `json:"reference"`
	// Running is the digest the node's image record for Ref points at;
	// empty for a reference added with Add that the node does not have.
	Running string `json:"running_digest,omitempty"`
	// New is the digest Ref resolved to when it differs from Running.
	New   string `json:"new_digest,omitempty"`
	State State  `json:"state"`
	// BytesTotal is the bytes of New's blobs containerd lacked, set once
	// the manifest and config are read and before the layers move;
	// BytesDone the bytes read from the registry so far, live. Once done
	// both are the bytes read (a blob another pull committed meanwhile
	// was not needed after all).
	BytesDone  int64 `json:"bytes_done"`
	BytesTotal int64 `json:"bytes_total"`
	// LayersFetched counts the layers the fetch of New moved, and
	// FetchedLayers names them in manifest order; the others were in
	// containerd already.
	LayersFetched int      `json:"layers_fetched"`
	FetchedLayers []string `json:"fetched_layers,omitempty"`
	// Config is New's config digest (the CRI's image ID), once read.
	Config string `json:"config_digest,omitempty"`
	// Lease is the prefetch lease holding New and Expires its end, while
	// held: deleted once a pull used it (Pulled), forgotten once expired.
	Lease   string    `json:"lease,omitempty"`
	Expires time.Time `json:"expires,omitzero"`
	// Previous is the digest the node ran before it moved to Running, and
	// PreviousUntil the end of its rollback protection
	// (ManagerOptions.RollbackWindow).
	Previous      string    `json:"previous_digest,omitempty"`
	PreviousUntil time.Time `json:"previous_until,omitzero"`
	// Hits counts the pulls served from this reference's prefetches.
	Hits    int       `json:"hits"`
	Error   string    `json:"error,omitempty"`
	Updated time.Time `json:"updated"`
}

// ManagerOptions configure a Manager. The zero value is usable.
type ManagerOptions struct {
	// Interval between resolves of every watched tag, jittered by ±20%;
	// 0 means DefaultInterval.
	Interval time.Duration
	// MaxBackoff caps the wait before a failing registry is tried again;
	// the wait starts at Interval and doubles per failure. 0 means
	// DefaultMaxBackoff.
	MaxBackoff time.Duration
	// ResolveTimeout bounds one resolve; 0 means DefaultResolveTimeout.
	ResolveTimeout time.Duration
	// Concurrency is how many fetches run at once; 0 means 1.
	Concurrency int
	// Admitter, when set, is asked for a slot in admission's background
	// class before each fetch (tenant AdmissionTenant), held until the
	// fetch ends: prefetch yields to every start. nil means no gating.
	Admitter Admitter
	// AdmissionHold caps how long a fetch holds its slot; 0 means
	// DefaultAdmissionHold.
	AdmissionHold time.Duration
	// Throttle, when set, holds a fetch back while IO pressure is above
	// its target, before it asks for an admission slot and (giving the
	// slot back) if it rose meanwhile. Pass the same Throttle's Reader as
	// the Fetcher's Options.WrapReader for the bandwidth cap and the pause
	// between blobs. nil means none.
	Throttle *Throttle
	// Registries are the registry hosts (host or host:port; without a
	// port, any port) Add and Trigger accept besides those of the images
	// on the node, which are always accepted. No other host is fetched
	// from on request.
	Registries []string
	// Observer is told of bytes, fetches, failures and hits (metrics);
	// nil means none.
	Observer Observer
	// RollbackWindow: when the node's record for a tag moves from X to
	// Y, X's content and snapshots (as the node has them: no registry is
	// contacted) are held by a lease labelled RollbackLabel=REPO@X that
	// expires after the window, so that a rollback finds X on the node
	// even if kubelet's image GC removed its records. 0 means off.
	RollbackWindow time.Duration
	// MoveTag, when set, is called after a fetch is done to move the tag
	// to the fetched digest (the daemon: a CRI PullImage on containerd,
	// which moves no bytes since all is local). Its error is logged and
	// shown in Entry.Error, the entry staying done. nil means the tag is
	// never moved: kubelet moves it when it pulls.
	MoveTag func(ctx context.Context, ref, digest string) error
	// Upstream, when set, is asked before every fetch from a registry:
	// the fleet's budget, at most K nodes of the cluster fetching at once
	// (internal/fleet). A fetch a pull joined goes without: kubelet's own
	// pull would go to the registry anyway. nil means no bound beyond
	// this node's.
	Upstream Upstream
	// Logger; nil means zap.NewNop.
	Logger *zap.Logger
}

// Upstream bounds fetches from registries beyond this node.
type Upstream interface {
	// Acquire waits until ref at dgst may be fetched from its registry,
	// or ctx ends.
	Acquire(ctx context.Context, ref, dgst string) (UpstreamFetch, error)
}

// UpstreamFetch is a fetch Upstream let go.
type UpstreamFetch interface {
	// Lost is closed when the fetch must stop (its slot was lost).
	Lost() <-chan struct{}
	// End gives the slot back; err is the fetch's outcome.
	End(ctx context.Context, err error)
}

// resolver is the part of containerd's remotes.Resolver the Manager uses.
type resolver interface {
	Resolve(ctx context.Context, ref string) (string, ocispec.Descriptor, error)
}

// fetcher is the part of the Fetcher the Manager uses.
type fetcher interface {
	FetchProgress(ctx context.Context, ref, dgst string, p Progress) (Result, error)
	Protect(ctx context.Context, ref, dgst string, window time.Duration) (Protection, error)
	Release(ctx context.Context, lease string) error
}

// imageLister is the part of containerd's image store the Manager uses.
type imageLister interface {
	List(ctx context.Context, filters ...string) ([]images.Image, error)
}

var (
	_ resolver    = (remotes.Resolver)(nil)
	_ fetcher     = (*Fetcher)(nil)
	_ imageLister = (images.Store)(nil)
)

// Manager watches the tags this node uses and prefetches their new
// digests. Its methods are safe for concurrent use; Run is called once.
type Manager struct {
	// pollingOff: the cluster resolves for this node (SetPolling).
	pollingOff atomic.Bool
	images     imageLister
	resolver   resolver
	fetcher    fetcher
	namespace  string
	opts       ManagerOptions
	log        *zap.Logger
	// clk is the wall clock; tests step a FakeClock to pass backoffs.
	clk clock.Clock

	kick  chan struct{} // wakes the loop for triggered refs; capacity 1
	slots chan struct{} // fetch slots; capacity Concurrency

	obs Observer

	mu struct {
		sync.Mutex
		node      map[string]digest.Digest // tag: the digest its image record targets
		added     map[string]bool          // by Add
		removed   map[string]bool          // by Remove: ignored even if the node has it
		entries   map[string]*Entry
		triggered []string          // refs to resolve at once, in order
		hints     map[string]string // ref: the digest a push notification said it names now
		announced map[string]string // ref: a digest announced to the cluster, to fetch as is
		// fetchBackoff holds ref@digest fetches that failed: a registry
		// that resolves fine but serves a bad blob must not be fetched
		// from every interval. A successful resolve clears its host's
		// backoff, not this.
		fetchBackoff map[string]*registryBackoff
		flights      map[string]*flight          // ref@digest being fetched (pending or fetching)
		backoff      map[string]*registryBackoff // registry host: its failures
		moves        []move                      // tags moved, to protect for rollback
		gen          uint64                      // counts Pulled hits
		pulled       map[string]uint64           // tag: gen of its last Pulled hit
		events       broadcast.Hub[Event]
	}
}

// move is a tag whose node record moved from one digest to another.
type move struct{ ref, from, to string }

// registryBackoff is a failing registry's (or fetch's) backoff: the next
// wait before it is tried again, and when the last one ends.
type registryBackoff struct {
	next  wait.Backoff
	until time.Time
}

// NewManager returns a Manager that watches the image records of the
// Fetcher's containerd namespace and resolves and fetches through f (its
// resolver, so the same host rules and transport). It contacts no one
// until Run.
func NewManager(f *Fetcher, opts ManagerOptions) (*Manager, error) {
	if f == nil {
		return nil, errors.New("prefetch: nil Fetcher")
	}
	return newManager(f.client.ImageService(), f.resolver, f, f.opts.Namespace, opts)
}

func newManager(il imageLister, r resolver, f fetcher, namespace string, opts ManagerOptions) (*Manager, error) {
	if opts.Interval < 0 || opts.MaxBackoff < 0 || opts.ResolveTimeout < 0 || opts.Concurrency < 0 || opts.AdmissionHold < 0 || opts.RollbackWindow < 0 {
		return nil, fmt.Errorf("prefetch: negative manager option in %+v", opts)
	}
	if opts.Interval == 0 {
		opts.Interval = DefaultInterval
	}
	if opts.MaxBackoff == 0 {
		opts.MaxBackoff = DefaultMaxBackoff
	}
	if opts.ResolveTimeout == 0 {
		opts.ResolveTimeout = DefaultResolveTimeout
	}
	if opts.Concurrency == 0 {
		opts.Concurrency = 1
	}
	if opts.AdmissionHold == 0 {
		opts.AdmissionHold = DefaultAdmissionHold
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	m := &Manager{
		images: il, resolver: r, fetcher: f, namespace: namespace,
		opts: opts, log: opts.Logger, clk: clock.RealClock{},
		kick:  make(chan struct{}, 1),
		slots: make(chan struct{}, opts.Concurrency),
		obs:   opts.Observer,
	}
	if m.obs == nil {
		m.obs = noObserver{}
	}
	m.mu.node = map[string]digest.Digest{}
	m.mu.added = map[string]bool{}
	m.mu.removed = map[string]bool{}
	m.mu.entries = map[string]*Entry{}
	m.mu.flights = map[string]*flight{}
	m.mu.pulled = map[string]uint64{}
	m.mu.backoff = map[string]*registryBackoff{}
	m.mu.hints = map[string]string{}
	m.mu.announced = map[string]string{}
	m.mu.events = newHub()
	m.mu.fetchBackoff = map[string]*registryBackoff{}
	return m, nil
}

// tagRef normalises ref as the CRI does and requires a tag without a digest.
func tagRef(ref string) (string, error) {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return "", fmt.Errorf("prefetch: reference %q: %w", ref, err)
	}
	if _, ok := named.(reference.Canonical); ok {
		return "", fmt.Errorf("%w: %q", ErrNotTag, ref)
	}
	return named.String(), nil
}

// Add watches ref (a tag) even if no image on the node uses it, and
// resolves it at once; a ref removed with Remove is watched again.
func (m *Manager) Add(ref string) error {
	r, err := tagRef(ref)
	if err != nil {
		return err
	}
	if err := m.checkRegistry(r); err != nil {
		return err
	}
	m.mu.Lock()
	m.mu.added[r] = true
	delete(m.mu.removed, r)
	m.mu.Unlock()
	m.log.Info("prefetch: watch added", zap.String("ref", r))
	return m.Trigger(r)
}

// Remove stops watching ref, whether Add or the node's images put it in
// the watch set, until Add is called for it again. A fetch running for it
// finishes, and its lease is deleted.
func (m *Manager) Remove(ref string) error {
	r, err := tagRef(ref)
	if err != nil {
		return err
	}
	m.mu.Lock()
	delete(m.mu.added, r)
	delete(m.mu.hints, r)
	for k := range m.mu.fetchBackoff {
		if strings.HasPrefix(k, r+"@") {
			delete(m.mu.fetchBackoff, k)
		}
	}
	m.mu.removed[r] = true
	if e := m.mu.entries[r]; e != nil {
		delete(m.mu.entries, r)
		m.publishLocked(EventRemoved, e)
	}
	m.mu.Unlock()
	m.log.Info("prefetch: watch removed", zap.String("ref", r))
	return nil
}

// Trigger resolves ref at once, without waiting for the interval or for
// its registry's backoff: a push notification or an announced patch is
// worth one request. It returns without waiting for the resolve. A ref
// that is not watched when its turn comes (after a refresh of the node's
// images) is ignored.
func (m *Manager) Trigger(ref string) error {
	r, err := tagRef(ref)
	if err != nil {
		return err
	}
	if err := m.checkRegistry(r); err != nil {
		return err
	}
	m.mu.Lock()
	if !slices.Contains(m.mu.triggered, r) {
		m.mu.triggered = append(m.mu.triggered, r)
	}
	m.mu.Unlock()
	m.wake()
	return nil
}

// Notify is Trigger for a registry's push notification of dgst to the
// tag ref. Distribution notifies from its manifest store before it moves
// the tag, so the resolve Trigger starts may still find the old digest;
// the notified digest is then fetched (pinned, so what is fetched is
// exactly what was pushed). A resolve that already finds dgst, or a newer
// notification, supersedes it. An empty dgst is Trigger.
func (m *Manager) Notify(ref, dgst string) error {
	if dgst == "" {
		return m.Trigger(ref)
	}
	r, err := tagRef(ref)
	if err != nil {
		return err
	}
	if _, err := digest.Parse(dgst); err != nil {
		return fmt.Errorf("prefetch: notified digest %q of %s: %w", dgst, r, err)
	}
	if err := m.checkRegistry(r); err != nil {
		return err
	}
	m.mu.Lock()
	m.mu.hints[r] = dgst
	m.mu.Unlock()
	return m.Trigger(r)
}

// Announced fetches ref at dgst without asking the registry what the tag
// names: a patch announced to the cluster (internal/fleet) is taken as
// said, which spares the registry a request per node. A ref not watched
// when its turn comes is ignored; a digest the node runs, or is fetching
// or has fetched, is left alone. It returns without waiting.
func (m *Manager) Announced(ref, dgst string) error {
	r, err := tagRef(ref)
	if err != nil {
		return err
	}
	if _, err := digest.Parse(dgst); err != nil {
		return fmt.Errorf("prefetch: announced digest %q of %s: %w", dgst, r, err)
	}
	m.mu.Lock()
	m.mu.announced[r] = dgst
	m.mu.Unlock()
	m.wake()
	return nil
}

// Tags are the watched tags with the digest the node runs ("" for a tag
// added that the node does not run).
func (m *Manager) Tags() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]string{}
	for ref := range m.watchSetLocked() {
		d := ""
		if e := m.mu.entries[ref]; e != nil {
			d = e.Running
		}
		out[ref] = d
	}
	return out
}

// SetPolling turns the Manager's own resolving every interval on or off
// (the cluster's elected node resolves for it, internal/fleet); triggers,
// notifications and announcements go on either way.
func (m *Manager) SetPolling(on bool) {
	if m.pollingOff.Swap(!on) == !on {
		return
	}
	m.log.Info("prefetch: polling every interval", zap.Bool("on", on))
}

// Watched reports whether ref (a tag) is watched: the node runs it, or it
// was added.
func (m *Manager) Watched(ref string) bool {
	r, err := tagRef(ref)
	return err == nil && m.watched(r)
}

// announce starts the fetch of an announced digest (Announced).
func (m *Manager) announce(ctx context.Context, wg *sync.WaitGroup, ref, d string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.mu.entries[ref]
	if e == nil || !m.watchedLocked(ref) {
		m.log.Debug("prefetch: announcement for a ref not watched", zap.String("ref", ref))
		return
	}
	before := e.State
	defer m.stateLocked(e, before)
	m.considerLocked(ctx, wg, e, ref, d, true, m.clk.Now())
}

// List returns the watched references' entries, sorted by reference.
func (m *Manager) List() []Entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Entry, 0, len(m.mu.entries))
	for _, e := range m.mu.entries {
		out = append(out, *e)
	}
	slices.SortFunc(out, func(a, b Entry) int {
		switch {
		case a.Ref < b.Ref:
			return -1
		case a.Ref > b.Ref:
			return 1
		}
		return 0
	})
	return out
}

// Run watches and prefetches until ctx ends, then waits for its fetches
// (cancelled with ctx), closes the event subscriptions and returns ctx's
// error.
func (m *Manager) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		m.mu.Lock()
		m.mu.events.CloseAll()
		m.mu.Unlock()
	}()
	m.log.Info("prefetch: manager started", zap.Duration("interval", m.opts.Interval), zap.Int("concurrency", m.opts.Concurrency))
	timer := m.clk.NewTimer(0) // the first cycle at once
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			m.log.Info("prefetch: manager stopping")
			return ctx.Err()
		case <-timer.C():
			m.refresh(ctx)
			if !m.pollingOff.Load() {
				for _, ref := range m.due() {
					m.check(ctx, &wg, ref, false)
				}
			}
			timer.Reset(jittered(m.opts.Interval))
		case <-m.kick:
			m.mu.Lock()
			refs := m.mu.triggered
			m.mu.triggered = nil
			announced := m.mu.announced
			m.mu.announced = map[string]string{}
			m.mu.Unlock()
			m.refresh(ctx)
			for ref, d := range announced {
				m.announce(ctx, &wg, ref, d)
			}
			for _, ref := range refs {
				if m.watched(ref) {
					m.check(ctx, &wg, ref, true)
				} else {
					m.log.Debug("prefetch: trigger for a ref not watched", zap.String("ref", ref))
				}
			}
		}
	}
}

// refresh reads the node's tag image records. On error the last set is
// kept: a containerd restart must not drop the watch set.
func (m *Manager) refresh(ctx context.Context) {
	m.mu.Lock()
	gen := m.mu.gen
	m.mu.Unlock()
	imgs, err := m.images.List(namespaces.WithNamespace(ctx, m.namespace))
	if err != nil {
		m.log.Warn("prefetch: list images", zap.Error(err))
		// The added refs are listed all the same, so that prefetch ls
		// shows them (and their resolves) while containerd is down.
		m.mu.Lock()
		m.entriesLocked(nil, m.clk.Now())
		m.mu.Unlock()
		return
	}
	node := map[string]digest.Digest{}
	for _, img := range imgs {
		// The CRI names an image three ways: by tag, by repo digest and
		// by image ID (sha256:...). Only tags move.
		if _, err := digest.Parse(img.Name); err == nil {
			continue
		}
		named, err := reference.ParseNormalizedNamed(img.Name)
		if err != nil {
			continue
		}
		if _, ok := named.(reference.NamedTagged); !ok {
			continue
		}
		if _, ok := named.(reference.Canonical); ok {
			continue
		}
		node[named.String()] = img.Target.Digest
	}
	now := m.clk.Now()
	type hit struct{ ref, lease string }
	var hits []hit
	m.mu.Lock()
	m.mu.node = node
	for ref, e := range m.mu.entries {
		if !m.watchedLocked(ref) {
			delete(m.mu.entries, ref)
			m.publishLocked(EventRemoved, e)
			continue
		}
		if e.Lease != "" && !now.Before(e.Expires) {
			e.Lease, e.Expires = "", time.Time{} // containerd's GC drops it
		}
		running := node[ref].String()
		if running == "" || running == e.Running {
			continue
		}
		if m.mu.pulled[ref] > gen {
			// Listed before a Pulled moved e.Running: this list is the
			// older news.
			continue
		}
		// The tag moved: kubelet pulled it (not through the proxy, or
		// Pulled would have seen it), or MoveTag did.
		if e.New == running && e.State == StateDone {
			hits = append(hits, hit{ref, m.hitLocked(e, now)})
			continue
		}
		before := e.State
		m.movedLocked(e, running)
		if e.New == running {
			e.New, e.State, e.Error = "", StateIdle, ""
		}
		e.Updated = now
		m.stateLocked(e, before)
	}
	m.entriesLocked(node, now)
	for ref, g := range m.mu.pulled {
		if g <= gen {
			delete(m.mu.pulled, ref)
		}
	}
	moves := m.mu.moves
	m.mu.moves = nil
	m.mu.Unlock()
	for _, h := range hits {
		m.obs.PrefetchHit(h.ref)
		m.release(ctx, h.ref, h.lease)
	}
	for _, mv := range moves {
		m.protect(ctx, mv)
	}
}

// entriesLocked adds an idle entry for every watched ref that has none;
// node gives the digest the node runs for a tag.
func (m *Manager) entriesLocked(node map[string]digest.Digest, now time.Time) {
	for ref := range m.watchSetLocked() {
		if _, ok := m.mu.entries[ref]; !ok {
			running := ""
			if d, ok := node[ref]; ok {
				running = d.String()
			}
			e := &Entry{Ref: ref, Running: running, State: StateIdle, Updated: now}
			m.mu.entries[ref] = e
			m.publishLocked(EventState, e)
		}
	}
}

func (m *Manager) watchSetLocked() map[string]bool {
	s := map[string]bool{}
	for ref := range m.mu.node {
		s[ref] = true
	}
	for ref := range m.mu.added {
		s[ref] = true
	}
	for ref := range m.mu.removed {
		delete(s, ref)
	}
	return s
}

func (m *Manager) watchedLocked(ref string) bool {
	if m.mu.removed[ref] {
		return false
	}
	_, onNode := m.mu.node[ref]
	return onNode || m.mu.added[ref]
}

func (m *Manager) watched(ref string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.watchedLocked(ref)
}

// due returns the watched refs whose registry is not backing off, sorted.
func (m *Manager) due() []string {
	now := m.clk.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	var refs []string
	for ref := range m.watchSetLocked() {
		if b := m.mu.backoff[registryOf(ref)]; b != nil && now.Before(b.until) {
			continue
		}
		refs = append(refs, ref)
	}
	slices.Sort(refs)
	return refs
}

func registryOf(ref string) string {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return ""
	}
	return reference.Domain(named)
}

// check resolves ref and starts a fetch if it points at a digest the node
// does not run and no fetch of it is running or done. A fetch of that
// digest that failed waits out its backoff unless triggered (a push
// notification, an Add or an announced patch is worth one more try).
func (m *Manager) check(ctx context.Context, wg *sync.WaitGroup, ref string, triggered bool) {
	rctx, cancel := context.WithTimeout(ctx, m.opts.ResolveTimeout)
	_, desc, err := m.resolver.Resolve(rctx, ref)
	cancel()
	if ctx.Err() != nil {
		return
	}
	host := registryOf(ref)
	now := m.clk.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.mu.entries[ref]
	if e == nil { // removed meanwhile
		return
	}
	before := e.State
	defer m.stateLocked(e, before)
	if err != nil {
		wait := m.failedLocked(host, now)
		m.obs.PrefetchFailed(ref, err)
		// A fetch in flight keeps its state; it will report its own end.
		if e.State != StatePending && e.State != StateFetching {
			e.State, e.Error, e.Updated = StateFailed, err.Error(), now
		}
		m.log.Warn("prefetch: resolve", zap.String("ref", ref), zap.Duration("backoff", wait), zap.Error(err))
		return
	}
	delete(m.mu.backoff, host)
	d := desc.Digest.String()
	if h, ok := m.mu.hints[ref]; ok {
		delete(m.mu.hints, ref)
		if h != d && h != e.Running {
			m.log.Info("prefetch: the tag does not name the notified digest yet; fetching the notified one",
				zap.String("ref", ref), zap.String("resolved", d), zap.String("notified", h))
			d = h
		}
	}
	m.considerLocked(ctx, wg, e, ref, d, triggered, now)
}

// considerLocked starts a fetch of ref at d for entry e unless the node
// runs d, a fetch of it is running or done, or a failed one is backing
// off (unless triggered).
func (m *Manager) considerLocked(ctx context.Context, wg *sync.WaitGroup, e *Entry, ref, d string, triggered bool, now time.Time) {
	switch {
	case d == e.Running:
		// Nothing new (any more): a fetch in flight reports its own end;
		// an idle entry keeps what it says of its last prefetch.
		if e.State != StatePending && e.State != StateFetching && (e.State != StateIdle || e.New != "") {
			resetFetch(e)
			e.New, e.State, e.Error, e.Updated = "", StateIdle, "", now
		}
		return
	case m.mu.flights[ref+"@"+d] != nil:
		return
	case d == e.New && e.State == StateDone:
		return
	}
	if b := m.mu.fetchBackoff[ref+"@"+d]; b != nil && !triggered && now.Before(b.until) {
		m.log.Debug("prefetch: fetch backing off", zap.String("ref", ref), zap.String("digest", d), zap.Time("until", b.until))
		return
	}
	m.log.Info("prefetch: new digest", zap.String("ref", ref), zap.String("running", e.Running), zap.String("new", d))
	resetFetch(e)
	e.New, e.State, e.Error, e.Updated = d, StatePending, "", now
	fl := m.flightLocked(ref, d)
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.fetch(ctx, fl)
	}()
}

// resetFetch clears what e says of a fetch of New.
func resetFetch(e *Entry) {
	e.BytesDone, e.BytesTotal, e.LayersFetched, e.FetchedLayers = 0, 0, 0, nil
	e.Config, e.Lease, e.Expires = "", "", time.Time{}
}

// failedLocked records a failure of host and returns its backoff.
func (m *Manager) failedLocked(host string, now time.Time) time.Duration {
	return m.backoffLocked(m.mu.backoff, host, now)
}

// fetchFailedLocked records a failed fetch of ref@d and returns its
// backoff; the next resolve that finds d again waits for it to pass.
func (m *Manager) fetchFailedLocked(ref, d string, now time.Time) time.Duration {
	return m.backoffLocked(m.mu.fetchBackoff, ref+"@"+d, now)
}

// backoffLocked counts a failure of key in set and returns the wait
// before it is tried again.
func (m *Manager) backoffLocked(set map[string]*registryBackoff, key string, now time.Time) time.Duration {
	b := set[key]
	if b == nil {
		b = &registryBackoff{next: backoff(m.opts.Interval, m.opts.MaxBackoff)}
		set[key] = b
	}
	d := jittered(b.next.Step())
	b.until = now.Add(d)
	return d
}

// backoff starts at base and doubles per failure, up to max.
func backoff(base, max time.Duration) wait.Backoff {
	return wait.Backoff{Duration: base, Factor: 2, Cap: max, Steps: math.MaxInt32}
}

// jittered spreads d over [d*(1-jitter), d*(1+jitter)): wait.Jitter adds
// up to a factor, so it starts from the low end.
func jittered(d time.Duration) time.Duration {
	low := time.Duration(float64(d) * (1 - jitter))
	return wait.Jitter(low, 2*jitter/(1-jitter))
}

// update applies f to ref's entry if it still waits for digest d.
func (m *Manager) update(ref, d string, f func(*Entry)) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.mu.entries[ref]
	if e == nil || e.New != d {
		return false
	}
	before := e.State
	f(e)
	e.Updated = m.clk.Now()
	m.stateLocked(e, before)
	return true
}
