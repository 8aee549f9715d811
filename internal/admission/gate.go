package admission

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"
	"k8s.io/utils/clock"

	"github.com/startgate/startgate/internal/broadcast"
	"github.com/startgate/startgate/internal/pressure"
)

// PressureSampler is what the controller needs of the pressure package:
// *pressure.Sampler implements it.
type PressureSampler interface {
	Sample(now time.Time) (pressure.Sample, error)
}

var _ PressureSampler = (*pressure.Sampler)(nil)

// Observer receives every admission outcome; the metrics package
// implements it. Calls are made with the gate's lock held: they must be
// quick and must not call back into the gate.
type Observer interface {
	Admitted(c Class, reason AdmitReason, waited time.Duration)
	// Refused: reason is "queue-full", "deadline" or "shutdown".
	Refused(c Class, reason string)
	Cancelled(c Class, waited time.Duration)
	Released(c Class, reason ReleaseReason, held time.Duration)
}

// Config wires a Gate.
type Config struct {
	// Clock defaults to clock.RealClock; tests pass a
	// k8s.io/utils/clock/testing.FakeClock. The gate needs of it the
	// time, a ticker (Run) and AfterFunc (deadlines, hold caps, tokens).
	Clock  clock.WithTickerAndDelayedExecution
	Logger *zap.Logger
	Policy Policy
	// Cores scales the per-core floors and ceilings; defaults to
	// runtime.NumCPU().
	Cores int
	// Interval is the controller's sample interval (default 250ms).
	Interval time.Duration
	// Pressure may be nil: the static fallback limits apply.
	Pressure PressureSampler
	// Observer may be nil.
	Observer Observer
}

// ErrUnknownLease: Release by ID of a lease that is not held.
var ErrUnknownLease = errors.New("admission: no such lease")

// Gate admits starts. See the package documentation.
type Gate struct {
	// Read without the lock, so that they answer even if it is wedged.
	bypass   atomic.Bool
	running  atomic.Bool
	lastTick atomic.Int64 // unix nanoseconds of the controller's last tick

	clk      clock.WithTickerAndDelayedExecution
	fired    firedTimers
	log      *zap.Logger
	cores    int
	interval time.Duration
	sampler  PressureSampler
	obs      Observer

	// mu guards everything below. It is the package's lock; the clock's
	// and the rate limiter's own locks are taken under it and never the
	// other way round, and fired's under the clock's (a fake clock fires
	// holding its lock), around nothing else.
	mu struct {
		sync.Mutex
		policy Policy
		bounds bounds
		limits Limits
		bucket *rate.Limiter
		state  ControllerState
		sample pressure.Sample
		pErr   error // last pressure error, nil when PSI reads
		bind   binding
		// lastDecrease is when the controller last decreased the limits
		// (Policy.DecreaseEvery).
		lastDecrease time.Time
		nextID       uint64
		q            queue
		leases       map[uint64]*Lease
		paused       bool
		drain        bool
		idle         []chan struct{} // Drain callers waiting for no lease held
		closed       bool
		counts       Counters
		expiry       leaseHeap // held leases by expiry
		expiryAt     time.Time // when the expiry timer fires; zero if unarmed
		expiryT      clock.Timer
		tokenAt      time.Time // when the token timer fires; zero if unarmed
		tokenT       clock.Timer
		lastTick     time.Time
		events       broadcast.Hub[Event]
	}
}

// New returns a gate with the policy validated and the limits at their
// static values until the controller's first tick.
func New(cfg Config) (*Gate, error) {
	if err := cfg.Policy.Validate(); err != nil {
		return nil, err
	}
	g := &Gate{
		clk:      cfg.Clock,
		log:      cfg.Logger,
		cores:    cfg.Cores,
		interval: cfg.Interval,
		sampler:  cfg.Pressure,
		obs:      cfg.Observer,
	}
	if g.clk == nil {
		g.clk = clock.RealClock{}
	}
	if g.log == nil {
		g.log = zap.NewNop()
	}
	if g.cores <= 0 {
		g.cores = runtime.NumCPU()
	}
	if g.interval <= 0 {
		g.interval = 250 * time.Millisecond
	}
	if g.obs == nil {
		g.obs = nopObserver{}
	}
	now := g.clk.Now()
	g.mu.policy = cfg.Policy
	g.mu.bounds = cfg.Policy.bounds(g.cores)
	g.mu.limits, g.mu.state = staticLimits(cfg.Policy, g.mu.bounds)
	if g.sampler != nil && g.mu.state != StateManual {
		// Until the first tick the static limits apply, but the state
		// says the controller is in charge.
		g.mu.state = StateSteady
	}
	g.mu.bucket = rate.NewLimiter(rate.Limit(g.mu.limits.Rate), g.mu.limits.Burst)
	g.mu.bucket.SetBurstAt(now, g.mu.limits.Burst)
	g.mu.leases = make(map[uint64]*Lease)
	g.mu.events = newHub()
	return g, nil
}

// Cores is the number of cores the per-core bounds are scaled by.
func (g *Gate) Cores() int { return g.cores }

// Interval is the controller's sample interval.
func (g *Gate) Interval() time.Duration { return g.interval }

// Acquire waits for a start slot and returns its lease. It returns at once
// for the critical class, when capacity is free, or when the caller's
// deadline is within the policy's margin (admitted, or refused with
// ErrDeadlineTooNear); it refuses with ErrQueueFull when the queue is
// full; it returns ctx's error, having left the queue, when ctx ends
// first.
func (g *Gate) Acquire(ctx context.Context, req Request) (*Lease, error) {
	if err := req.validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if req.Deadline.IsZero() {
		if d, ok := ctx.Deadline(); ok {
			req.Deadline = d
		}
	}

	g.mu.Lock()
	now := g.clk.Now()
	if g.mu.closed {
		g.obs.Refused(req.Class, "shutdown")
		g.mu.Unlock()
		return nil, ErrClosed
	}
	g.mu.nextID++
	// Decided at once: this waiter need not outlive the call, so it stays
	// on the stack and the uncontended path allocates only the lease.
	fw := waiter{id: g.mu.nextID, req: req, enqueued: now, deadline: req.Deadline}
	switch {
	case req.Class == Critical || g.bypass.Load():
		l := g.grantLocked(now, &fw, AdmitBypass)
		g.mu.Unlock()
		return l, nil
	case g.mu.q.len() == 0 && g.admissibleLocked(now):
		l := g.grantLocked(now, &fw, AdmitGranted)
		g.mu.Unlock()
		return l, nil
	case !fw.deadline.IsZero() && !fw.deadline.After(now.Add(g.mu.policy.DeadlineMargin)):
		l, err := g.deadlineLocked(now, &fw)
		g.mu.Unlock()
		return l, err
	}
	w := &waiter{id: g.mu.nextID, req: req, enqueued: now, deadline: req.Deadline}
	switch {
	case g.mu.q.len() >= g.mu.policy.MaxQueue:
		err := g.queueFullLocked(now, w)
		g.mu.Unlock()
		return nil, err
	}
	w.ready = make(chan struct{})
	g.enqueueLocked(now, w)
	var info WaiterInfo
	if req.OnQueued != nil && w.classElem != nil {
		info = WaiterInfo{ID: w.id, Class: req.Class, Tenant: req.Tenant, Description: req.Description,
			Enqueued: now, Deadline: w.deadline, Position: g.mu.q.ahead(req.Class) + 1}
	}
	g.mu.Unlock()
	if info.ID != 0 {
		req.OnQueued(info)
	}

	select {
	case <-w.ready:
		return w.lease, w.err
	case <-ctx.Done():
	}
	g.mu.Lock()
	if g.withdrawLocked(w, ctx.Err()) {
		g.mu.Unlock()
		return nil, ctx.Err()
	}
	g.mu.Unlock()
	// Decided while ctx ended: the caller has gone, so give a granted
	// slot straight back.
	<-w.ready
	if w.lease != nil {
		w.lease.Release()
	}
	return nil, ctx.Err()
}

// Restore grants req a slot at once, whatever the limits and the queue: a
// start that was admitted before the daemon restarted, and still warms
// up, holds a slot again, so that the restarted gate counts it instead of
// admitting a full limit on top of it. The lease counts in flight like any
// other (the limit may be exceeded until such leases end) and ends at
// req.Hold, which the caller sets to what is left of the start's warm-up.
func (g *Gate) Restore(req Request) (*Lease, error) {
	if err := req.validate(); err != nil {
		return nil, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.clk.Now()
	if g.mu.closed {
		return nil, ErrClosed
	}
	g.mu.nextID++
	w := waiter{id: g.mu.nextID, req: req, enqueued: now}
	return g.grantLocked(now, &w, AdmitRestored), nil
}

// AcquireFunc is Acquire without a goroutine to block: it queues req and
// calls done exactly once with the lease or the error, on a goroutine of
// its own (never under the gate's lock, so done may call back into the
// gate), possibly before AcquireFunc returns. The deadline is
// req.Deadline. When the request queues, queued describes the waiter (ID
// and estimated position; ID 0 means it was decided at once and done is on
// its way). cancel withdraws the request if it still waits, in which case
// done gets context.Canceled; it reports whether it did. A server that
// holds many waiters for one client uses this, so that a waiting request
// costs the queue entry and no stack. req.OnQueued is not called: queued
// is the answer.
func (g *Gate) AcquireFunc(req Request, done func(*Lease, error)) (queued WaiterInfo, cancel func() bool) {
	never := func() bool { return false }
	if err := req.validate(); err != nil {
		go done(nil, err)
		return WaiterInfo{}, never
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.clk.Now()
	if g.mu.closed {
		g.obs.Refused(req.Class, "shutdown")
		go done(nil, ErrClosed)
		return WaiterInfo{}, never
	}
	g.mu.nextID++
	// notify is set only once w queues: a decision made here calls done
	// itself.
	w := &waiter{id: g.mu.nextID, req: req, enqueued: now, deadline: req.Deadline}
	switch {
	case req.Class == Critical || g.bypass.Load():
		go done(g.grantLocked(now, w, AdmitBypass), nil)
		return WaiterInfo{}, never
	case g.mu.q.len() == 0 && g.admissibleLocked(now):
		go done(g.grantLocked(now, w, AdmitGranted), nil)
		return WaiterInfo{}, never
	case !w.deadline.IsZero() && !w.deadline.After(now.Add(g.mu.policy.DeadlineMargin)):
		l, err := g.deadlineLocked(now, w)
		go done(l, err)
		return WaiterInfo{}, never
	case g.mu.q.len() >= g.mu.policy.MaxQueue:
		err := g.queueFullLocked(now, w)
		go done(nil, err)
		return WaiterInfo{}, never
	}
	w.notify = done
	g.enqueueLocked(now, w)
	if w.classElem != nil { // still queued after the dispatch
		queued = WaiterInfo{ID: w.id, Class: req.Class, Tenant: req.Tenant, Description: req.Description,
			Enqueued: now, Deadline: w.deadline, Position: g.mu.q.ahead(req.Class) + 1}
	}
	return queued, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		if !g.withdrawLocked(w, context.Canceled) {
			return false
		}
		w.decide(nil, context.Canceled)
		return true
	}
}

func (g *Gate) queueFullLocked(now time.Time, w *waiter) error {
	g.mu.counts.Refused++
	g.obs.Refused(w.req.Class, "queue-full")
	g.publishLocked(now, Event{Type: EventRefused, ID: w.id, Class: w.req.Class, Tenant: w.req.Tenant,
		Description: w.req.Description, Reason: "queue full"})
	return fmt.Errorf("%w: %d waiters queued, the most allowed (admission.max_queue)", ErrQueueFull, g.mu.policy.MaxQueue)
}

// enqueueLocked queues w, arms its deadline and dispatches: capacity may
// be free while others queue ahead, or tokens may be what is missing.
func (g *Gate) enqueueLocked(now time.Time, w *waiter) {
	g.mu.q.push(w)
	if !w.deadline.IsZero() {
		at := w.deadline.Add(-g.mu.policy.DeadlineMargin)
		w.timer = g.afterFunc(at.Sub(now), func() { g.deadlineFired(w) })
	}
	g.publishLocked(now, Event{Type: EventQueued, ID: w.id, Class: w.req.Class, Tenant: w.req.Tenant, Description: w.req.Description})
	g.dispatchLocked(now)
}

// withdrawLocked takes a waiter whose caller gave up out of the queue; it
// reports false if w was decided already.
func (g *Gate) withdrawLocked(w *waiter, why error) bool {
	if !g.mu.q.remove(w) {
		return false
	}
	now := g.clk.Now()
	stopTimer(w.timer)
	waited := now.Sub(w.enqueued)
	g.mu.counts.Cancelled++
	g.obs.Cancelled(w.req.Class, waited)
	g.publishLocked(now, Event{Type: EventCancelled, ID: w.id, Class: w.req.Class, Tenant: w.req.Tenant,
		Description: w.req.Description, Waited: waited, Reason: why.Error()})
	// A removed waiter can change which class is next.
	g.dispatchLocked(now)
	return true
}

// admissibleLocked reports whether a non-critical start may be granted now,
// taking a token if so, and records which limit binds if not.
func (g *Gate) admissibleLocked(now time.Time) bool {
	if g.mu.paused {
		return false
	}
	if g.inFlightLocked() >= g.mu.limits.InFlight {
		g.mu.bind.inFlight = true
		return false
	}
	if !g.mu.bucket.AllowN(now, 1) {
		g.mu.bind.rate = true
		g.armTokenTimerLocked(now)
		return false
	}
	return true
}

func (g *Gate) inFlightLocked() int { return len(g.mu.leases) }

// armTokenTimerLocked schedules a dispatch for when the bucket next holds a
// token.
func (g *Gate) armTokenTimerLocked(now time.Time) {
	tokens := g.mu.bucket.TokensAt(now)
	r := float64(g.mu.bucket.Limit())
	if r <= 0 {
		return
	}
	wait := time.Duration((1 - tokens) / r * float64(time.Second))
	wait = max(wait, time.Millisecond)
	at := now.Add(wait)
	if !g.mu.tokenAt.IsZero() && !g.mu.tokenAt.After(at) {
		return
	}
	stopTimer(g.mu.tokenT)
	g.mu.tokenAt = at
	g.mu.tokenT = g.afterFunc(wait, func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.mu.tokenAt = time.Time{}
		g.mu.tokenT = nil
		g.dispatchLocked(g.clk.Now())
	})
}

// dispatchLocked grants queued waiters while capacity allows.
func (g *Gate) dispatchLocked(now time.Time) {
	for g.mu.q.len() > 0 && !g.mu.closed && g.admissibleLocked(now) {
		w := g.mu.q.pop(g.mu.policy.Aging)
		stopTimer(w.timer)
		g.grantLocked(now, w, AdmitGranted)
	}
}

// deadlineFired runs when a queued waiter's deadline comes within the
// margin.
func (g *Gate) deadlineFired(w *waiter) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.mu.q.remove(w) {
		return // granted or gone meanwhile
	}
	now := g.clk.Now()
	if _, err := g.deadlineLocked(now, w); err != nil {
		w.decide(nil, err)
	}
	g.dispatchLocked(now)
}

// deadlineLocked admits or refuses w, whose deadline is within the margin.
func (g *Gate) deadlineLocked(now time.Time, w *waiter) (*Lease, error) {
	if !g.mu.policy.DeadlineRefuse {
		return g.grantLocked(now, w, AdmitDeadline), nil
	}
	g.mu.counts.Refused++
	g.obs.Refused(w.req.Class, "deadline")
	g.publishLocked(now, Event{Type: EventRefused, ID: w.id, Class: w.req.Class, Tenant: w.req.Tenant,
		Description: w.req.Description, Waited: now.Sub(w.enqueued), Reason: "deadline too near"})
	return nil, fmt.Errorf("%w: deadline in %v, margin %v (admission.on_deadline = refuse)",
		ErrDeadlineTooNear, w.deadline.Sub(now).Round(time.Millisecond), g.mu.policy.DeadlineMargin)
}

// grantLocked turns w into a held lease and wakes its caller, if queued.
func (g *Gate) grantLocked(now time.Time, w *waiter, reason AdmitReason) *Lease {
	hold := w.req.Hold
	if hold == 0 {
		hold = g.mu.policy.MaxHold
	}
	l := &Lease{
		g:    g,
		done: make(chan struct{}),
		info: LeaseInfo{
			ID: w.id, Class: w.req.Class, Tenant: w.req.Tenant, Description: w.req.Description,
			Granted: now, Expires: now.Add(hold), Reason: reason, Waited: now.Sub(w.enqueued),
		},
	}
	g.mu.leases[l.info.ID] = l
	heap.Push(&g.mu.expiry, l)
	g.armExpiryLocked(now)
	g.mu.counts.Admitted++
	switch reason {
	case AdmitDeadline:
		g.mu.counts.DeadlineAdmitted++
	case AdmitBypass:
		g.mu.counts.Bypassed++
	}
	g.obs.Admitted(w.req.Class, reason, l.info.Waited)
	g.publishLocked(now, Event{Type: EventGranted, ID: w.id, Class: w.req.Class, Tenant: w.req.Tenant,
		Description: w.req.Description, Reason: string(reason), Waited: l.info.Waited})
	if w.ready != nil || w.notify != nil {
		w.decide(l, nil)
	}
	return l
}

// end ends l for reason; it is a no-op for a lease already ended.
func (g *Gate) end(l *Lease, reason ReleaseReason) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.endLocked(g.clk.Now(), l, reason)
	g.dispatchLocked(g.clk.Now())
}

func (g *Gate) endLocked(now time.Time, l *Lease, reason ReleaseReason) {
	if l.ended {
		return
	}
	l.ended = true
	l.reason = reason
	heap.Remove(&g.mu.expiry, l.index)
	delete(g.mu.leases, l.info.ID)
	held := now.Sub(l.info.Granted)
	if reason == ReleaseExpired {
		g.mu.counts.Expired++
		g.log.Warn("start slot taken back at its hold cap",
			zap.Uint64("lease", l.info.ID), zap.Stringer("class", l.info.Class),
			zap.String("tenant", l.info.Tenant), zap.String("description", l.info.Description),
			zap.Duration("held", held))
	}
	g.obs.Released(l.info.Class, reason, held)
	typ := EventReleased
	if reason == ReleaseExpired {
		typ = EventExpired
	}
	g.publishLocked(now, Event{Type: typ, ID: l.info.ID, Class: l.info.Class, Tenant: l.info.Tenant,
		Description: l.info.Description, Reason: string(reason)})
	close(l.done)
	if len(g.mu.leases) == 0 {
		for _, ch := range g.mu.idle {
			close(ch)
		}
		g.mu.idle = nil
	}
}

// Release ends the lease with the given ID, whoever holds it.
func (g *Gate) Release(id uint64) error {
	g.mu.Lock()
	l, ok := g.mu.leases[id]
	g.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %d", ErrUnknownLease, id)
	}
	g.end(l, ReleaseByHolder)
	return nil
}

// Pause stops granting (critical starts and near-deadline admissions still
// pass) until Resume.
func (g *Gate) Pause() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.mu.paused {
		return
	}
	g.mu.paused = true
	g.publishLocked(g.clk.Now(), Event{Type: EventPaused})
}

// Resume undoes Pause and Drain.
func (g *Gate) Resume() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.mu.paused {
		return
	}
	g.mu.paused, g.mu.drain = false, false
	now := g.clk.Now()
	g.publishLocked(now, Event{Type: EventResumed})
	g.dispatchLocked(now)
}

// Drain pauses the gate and waits until no lease is held, for maintenance
// of the runtime behind it. The gate stays paused, its queue intact, until
// Resume.
func (g *Gate) Drain(ctx context.Context) error {
	g.mu.Lock()
	if g.mu.closed {
		g.mu.Unlock()
		return ErrClosed
	}
	now := g.clk.Now()
	if !g.mu.paused {
		g.mu.paused = true
		g.publishLocked(now, Event{Type: EventPaused})
	}
	if !g.mu.drain {
		g.mu.drain = true
		g.publishLocked(now, Event{Type: EventDraining})
	}
	if len(g.mu.leases) == 0 {
		g.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	g.mu.idle = append(g.mu.idle, ch)
	g.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("admission: drain: %d leases still held: %w", g.inFlight(), ctx.Err())
	}
}

func (g *Gate) inFlight() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.mu.leases)
}

// UpdatePolicy applies update to a copy of the policy and installs it if it
// validates. Limits are re-resolved at once, so pinning a limit takes effect
// without waiting for a tick.
func (g *Gate) UpdatePolicy(update func(p *Policy)) (Policy, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.mu.policy
	update(&p)
	if err := p.Validate(); err != nil {
		return g.mu.policy, err
	}
	now := g.clk.Now()
	g.mu.policy = p
	g.mu.bounds = p.bounds(g.cores)
	g.publishLocked(now, Event{Type: EventPolicy})
	var l Limits
	var state ControllerState
	if g.sampler == nil || g.mu.pErr != nil {
		l, state = staticLimits(p, g.mu.bounds)
	} else {
		// Clamp the current limits into the new bounds, re-applying pins.
		l = g.mu.limits
		l.Burst = g.mu.bounds.burst
		if p.FixedInFlight == 0 {
			l.InFlight = min(max(l.InFlight, g.mu.bounds.minInFlight), g.mu.bounds.maxInFlight)
		}
		if p.FixedRate == 0 {
			l.Rate = min(max(l.Rate, g.mu.bounds.minRate), g.mu.bounds.maxRate)
		}
		state = g.mu.state
		if state == StateManual || state == StateStatic {
			state = StateSteady
		}
		l, state = pinned(p, l, state)
	}
	g.setLimitsLocked(now, l, state, "policy")
	g.dispatchLocked(now)
	return p, nil
}

// Policy returns the policy in force.
func (g *Gate) Policy() Policy {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.mu.policy
}

func (g *Gate) setLimitsLocked(now time.Time, l Limits, state ControllerState, why string) {
	changed := l != g.mu.limits
	g.mu.state = state
	if !changed {
		return
	}
	g.mu.limits = l
	g.mu.bucket.SetLimitAt(now, rate.Limit(l.Rate))
	g.mu.bucket.SetBurstAt(now, l.Burst)
	// The token timer was computed for the old rate.
	stopTimer(g.mu.tokenT)
	g.mu.tokenT, g.mu.tokenAt = nil, time.Time{}
	g.publishLocked(now, Event{Type: EventLimits, Reason: why})
}

// Run samples pressure and resizes the limits every interval until ctx
// ends.
func (g *Gate) Run(ctx context.Context) error {
	t := g.clk.NewTicker(g.interval)
	defer t.Stop()
	g.running.Store(true)
	defer g.running.Store(false)
	g.tick(g.clk.Now())
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C():
			g.tick(now)
		}
	}
}

// tick is one controller step.
func (g *Gate) tick(now time.Time) {
	var s pressure.Sample
	var err error
	if g.sampler != nil {
		// Read outside the lock: a slow /proc must not stall admission.
		s, err = g.sampler.Sample(now)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.mu.closed {
		return
	}
	g.mu.lastTick = now
	g.lastTick.Store(now.UnixNano())
	var l Limits
	var state ControllerState
	switch {
	case g.sampler == nil:
		l, state = staticLimits(g.mu.policy, g.mu.bounds)
	case err != nil:
		if g.mu.pErr == nil {
			g.log.Warn("pressure unavailable: using static limits until it can be read",
				zap.Error(err), zap.Int("inflight", g.mu.bounds.staticInFlight), zap.Float64("rate", g.mu.bounds.staticRate))
		}
		g.mu.pErr = err
		l, state = staticLimits(g.mu.policy, g.mu.bounds)
	default:
		if g.mu.pErr != nil {
			g.log.Info("pressure readable again: controller resumes", zap.NamedError("was", g.mu.pErr))
			g.mu.pErr = nil
		}
		g.mu.sample = s
		bind := g.mu.bind
		// A queue still waiting at the tick is binding too, whichever
		// limit stopped it last.
		if g.mu.q.len() > 0 && !g.mu.paused {
			if g.inFlightLocked() >= g.mu.limits.InFlight {
				bind.inFlight = true
			} else {
				bind.rate = true
			}
		}
		bind.idle = g.mu.q.len() == 0 && g.inFlightLocked() == 0 && !bind.inFlight && !bind.rate
		mayDecrease := g.mu.lastDecrease.IsZero() || now.Sub(g.mu.lastDecrease) >= g.mu.policy.DecreaseEvery
		l, state = nextLimits(g.mu.policy, g.mu.bounds, g.mu.limits, s, bind, mayDecrease)
		if state == StateDecrease {
			g.mu.lastDecrease = now
		}
	}
	g.mu.bind = binding{}
	g.setLimitsLocked(now, l, state, "controller")
	g.dispatchLocked(now)
}

// Alive reports whether the controller is ticking: true while Run has
// not started (the static limits are in force), false once Run has gone
// more than ten intervals (at least two seconds) without a tick. It takes
// no lock, so a wedged gate cannot hide from it.
func (g *Gate) Alive(now time.Time) bool {
	if !g.running.Load() {
		return true
	}
	stale := max(10*g.interval, 2*time.Second)
	return now.Sub(time.Unix(0, g.lastTick.Load())) <= stale
}

// SetBypass turns the gate off (on = true) or back on. While bypassed
// every Acquire is granted at once (reason bypass), and the CRI proxy
// does not call Acquire at all: calls pass straight through.
func (g *Gate) SetBypass(on bool) {
	if g.bypass.Swap(on) == on {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.clk.Now()
	typ := EventBypassOff
	if on {
		typ = EventBypassOn
	}
	g.publishLocked(now, Event{Type: typ})
	if !on {
		g.dispatchLocked(now)
	}
}

// Bypassed reports whether the gate is bypassed; it takes no lock.
func (g *Gate) Bypassed() bool { return g.bypass.Load() }

// Close fails every waiter with ErrClosed, ends every lease and closes the
// event subscriptions. The gate refuses everything afterwards.
func (g *Gate) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.mu.closed {
		return
	}
	now := g.clk.Now()
	g.mu.closed = true
	g.publishLocked(now, Event{Type: EventShutdown})
	var ws []*waiter
	g.mu.q.each(func(w *waiter) { ws = append(ws, w) })
	for _, w := range ws {
		g.mu.q.remove(w)
		stopTimer(w.timer)
		g.mu.counts.Refused++
		g.obs.Refused(w.req.Class, "shutdown")
		w.decide(nil, ErrClosed)
	}
	for _, l := range g.mu.leases {
		g.endLocked(now, l, ReleaseShutdown)
	}
	stopTimer(g.mu.tokenT)
	stopTimer(g.mu.expiryT)
	g.mu.events.CloseAll()
}

// Status returns a snapshot.
func (g *Gate) Status() Status {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.clk.Now()
	st := Status{
		Limits:        g.mu.limits,
		Tokens:        g.mu.bucket.TokensAt(now),
		InFlight:      g.inFlightLocked(),
		Queued:        g.mu.q.len(),
		QueuedByClass: g.mu.q.countByClass(),
		Paused:        g.mu.paused,
		Draining:      g.mu.drain,
		Bypassed:      g.bypass.Load(),
		State:         g.mu.state,
		Pressure:      g.mu.sample,
		Policy:        g.mu.policy,
		Counters:      g.mu.counts,
		LastTick:      g.mu.lastTick,
		Cores:         g.cores,
	}
	if g.mu.pErr != nil {
		st.PressureErr = g.mu.pErr.Error()
	} else if g.sampler == nil {
		st.PressureErr = "no pressure source configured"
	}
	return st
}

// Queue lists the waiters in class order, then arrival.
func (g *Gate) Queue() []WaiterInfo {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]WaiterInfo, 0, g.mu.q.len())
	g.mu.q.each(func(w *waiter) {
		out = append(out, WaiterInfo{
			ID: w.id, Class: w.req.Class, Tenant: w.req.Tenant, Description: w.req.Description,
			Enqueued: w.enqueued, Deadline: w.deadline, Position: len(out) + 1,
		})
	})
	return out
}

// Leases lists the held leases, oldest grant first.
func (g *Gate) Leases() []LeaseInfo {
	g.mu.Lock()
	out := make([]LeaseInfo, 0, len(g.mu.leases))
	for _, l := range g.mu.leases {
		out = append(out, l.info)
	}
	g.mu.Unlock()
	sortLeases(out)
	return out
}

func stopTimer(t stopper) {
	if t != nil {
		t.Stop()
	}
}

type nopObserver struct{}

func (nopObserver) Admitted(Class, AdmitReason, time.Duration)   {}
func (nopObserver) Refused(Class, string)                        {}
func (nopObserver) Cancelled(Class, time.Duration)               {}
func (nopObserver) Released(Class, ReleaseReason, time.Duration) {}
