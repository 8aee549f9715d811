package prefetch

// One fetch of a new digest, from pending to its end, and what a pull
// through the CRI proxy does with it: Join makes a pending fetch urgent
// and waits for it, Pulled counts a hit and lets the prefetch lease go.
//
// A pending fetch waits, in order, for one of ManagerOptions.Concurrency
// slots, for IO pressure to fall to its target and for a background
// admission slot. Those waits are for prefetching ahead of need; once a
// pull of the same image is waiting for it (Join), the need is now and
// the pull was admitted already by the proxy's pull lane, so the fetch
// stops waiting (all three: it may run beside Concurrency others) and
// starts. The waits run under a context of their own that Join cancels
// with errUrgent; the fetch itself runs under Run's.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	"go.uber.org/zap"

	"github.com/startgate/startgate/internal/admission"
)

var (
	// errUrgent cancels a fetch's waits: a pull joined it.
	errUrgent = errors.New("prefetch: joined by a pull")
	// errUpstreamLost cancels a fetch whose fleet upstream slot was lost.
	errUpstreamLost = errors.New("prefetch: upstream slot lost")
	// errAbandoned is a joiner's error when the fetch was dropped before
	// it ended: its ref removed, or another digest seen meanwhile.
	errAbandoned = errors.New("prefetch: fetch abandoned (reference removed or moved on)")
)

// flight is one fetch of ref at digest, pending or fetching. Fields but
// done are guarded by Manager.mu.
type flight struct {
	ref, digest string
	done        chan struct{} // closed when the fetch ends; err is set then
	err         error         // nil: done; else why not
	urgent      bool          // joined
	joiners     int           // Joins waiting now
	hurry       context.CancelCauseFunc
}

// flightLocked registers a flight of ref at d.
func (m *Manager) flightLocked(ref, d string) *flight {
	fl := &flight{ref: ref, digest: d, done: make(chan struct{})}
	m.mu.flights[ref+"@"+d] = fl
	return fl
}

// fetch runs fl: waits, fetch, entry updates; then lets joiners go and
// moves the tag if asked to.
func (m *Manager) fetch(ctx context.Context, fl *flight) {
	err := m.run(ctx, fl)
	m.mu.Lock()
	delete(m.mu.flights, fl.ref+"@"+fl.digest)
	fl.err = err
	m.mu.Unlock()
	close(fl.done)
	if err != nil || m.opts.MoveTag == nil {
		return
	}
	if merr := m.opts.MoveTag(ctx, fl.ref, fl.digest); merr != nil {
		if ctx.Err() != nil {
			return
		}
		m.log.Warn("prefetch: move tag", zap.String("ref", fl.ref), zap.String("digest", fl.digest), zap.Error(merr))
		m.update(fl.ref, fl.digest, func(e *Entry) { e.Error = "move tag: " + merr.Error() })
		return
	}
	// The tag is at the fetched digest now: the refresh counts the hit
	// and protects the digest the node ran for rollback.
	m.wake()
}

// run waits for a fetch slot, for the fleet's upstream slot, for IO
// pressure to fall to its target and for an admission slot (unless
// joined), then fetches fl's ref pinned to its digest; the entry stays
// pending until then. It returns nil once done, else why not; slots are
// given back when it returns.
func (m *Manager) run(ctx context.Context, fl *flight) (err error) {
	ref, d := fl.ref, fl.digest
	wait, hurry := context.WithCancelCause(ctx)
	defer hurry(nil)
	m.mu.Lock()
	fl.hurry = hurry
	if fl.urgent {
		hurry(errUrgent)
	}
	m.mu.Unlock()

	select {
	case m.slots <- struct{}{}:
		defer func() { <-m.slots }()
	case <-wait.Done():
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	// The cluster's slot before the node's: a node-local wait is short,
	// the fleet's may be long, and an admission slot must not be held
	// through it.
	fctx := ctx
	if m.opts.Upstream != nil {
		up, uerr := m.opts.Upstream.Acquire(wait, ref, d)
		if uerr != nil {
			if herr := m.hurried(ctx, wait); herr != nil {
				return herr
			}
			// Joined by a pull: it goes without a slot.
		} else {
			defer func() { up.End(context.WithoutCancel(ctx), err) }()
			var cancel context.CancelCauseFunc
			fctx, cancel = context.WithCancelCause(ctx)
			defer cancel(nil)
			lost := up.Lost()
			go func() {
				select {
				case <-lost:
					cancel(errUpstreamLost)
				case <-fctx.Done():
				}
			}()
		}
	}
	release, err := m.admit(ctx, wait, ref, d)
	if err != nil {
		return err
	}
	defer release()
	if !m.update(ref, d, func(e *Entry) { e.State = StateFetching }) {
		return errAbandoned
	}
	res, err := m.fetcher.FetchProgress(fctx, ref, d, Progress{
		Planned: func(config digest.Digest, total int64) {
			m.progress(ref, d, func(e *Entry) { e.Config, e.BytesTotal = config.String(), total })
		},
		Read: func(n int64) {
			m.obs.PrefetchBytes(n)
			m.progress(ref, d, func(e *Entry) { e.BytesDone += n })
		},
	})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(context.Cause(fctx), errUpstreamLost) {
			err = fmt.Errorf("%w: %w", errUpstreamLost, err)
		}
		m.log.Warn("prefetch: fetch", zap.String("ref", ref), zap.String("digest", d), zap.Error(err))
		m.obs.PrefetchFailed(ref, err)
		m.update(ref, d, func(e *Entry) {
			e.State, e.Error = StateFailed, err.Error()
			// A failing fetch backs off on its own (a resolve that
			// succeeds clears the registry's backoff, not this): a blob
			// that fails every time must not be fetched every interval.
			m.fetchFailedLocked(ref, d, m.clk.Now())
		})
		return err
	}
	m.obs.PrefetchDone(ref, res)
	var fetched []string
	for _, l := range res.Layers {
		if l.Fetched {
			fetched = append(fetched, l.Digest.String())
		}
	}
	if !m.update(ref, d, func(e *Entry) {
		delete(m.mu.fetchBackoff, ref+"@"+d)
		e.State, e.BytesDone, e.BytesTotal = StateDone, res.Bytes, res.Bytes
		e.LayersFetched, e.FetchedLayers = res.LayersFetched, fetched
		e.Config, e.Lease, e.Expires = res.Config.String(), res.Lease, res.Expires
	}) {
		// Removed, moved on, or the tag reached d by another pull
		// meanwhile: nothing will use the lease.
		m.release(ctx, ref, res.Lease)
		return errAbandoned
	}
	return nil
}

// progress applies f to ref's entry while it is fetching d; no event.
func (m *Manager) progress(ref, d string, f func(*Entry)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.mu.entries[ref]; e != nil && e.New == d && e.State == StateFetching {
		f(e)
		e.Updated = m.clk.Now()
	}
}

// admit waits while IO pressure is above target, then for a background
// admission slot, under wait (a joined fetch's waits end at once). If IO
// rose above target while it waited for the slot, it gives the slot back
// and starts over: a paused fetch must not keep a slot from a start. It
// returns the slot's release, or why the fetch must not go on: ctx ended,
// or the gate refused (logged and shown; the next resolve tries again).
func (m *Manager) admit(ctx, wait context.Context, ref, d string) (release func(), err error) {
	none := func() {}
	for {
		if !m.waitIO(wait, ref, d) {
			return none, m.hurried(ctx, wait)
		}
		if m.opts.Admitter == nil {
			return none, nil
		}
		lease, err := m.opts.Admitter.Acquire(wait, admission.Request{
			Class:       admission.Background,
			Tenant:      AdmissionTenant,
			Description: "prefetch " + ref + "@" + d,
			Hold:        m.opts.AdmissionHold,
		})
		if err != nil {
			if wait.Err() != nil {
				return none, m.hurried(ctx, wait)
			}
			m.log.Warn("prefetch: admission", zap.String("ref", ref), zap.String("digest", d), zap.Error(err))
			m.update(ref, d, func(e *Entry) { e.State, e.Error = StateFailed, "admission: "+err.Error() })
			return none, fmt.Errorf("prefetch: admission: %w", err)
		}
		if !m.opts.Throttle.ioHigh() || wait.Err() != nil {
			return lease.Release, nil
		}
		lease.Release()
	}
}

// hurried says whether a wait that ended may go on: nil when a pull
// joined, ctx's error when it ended.
func (m *Manager) hurried(ctx, wait context.Context) error {
	if ctx.Err() == nil && errors.Is(context.Cause(wait), errUrgent) {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return context.Cause(wait)
}

// waitIO waits while the Throttle's IO pressure is above its target; it
// reports false when ctx ended first.
func (m *Manager) waitIO(ctx context.Context, ref, d string) bool {
	t := m.opts.Throttle
	if t.ioHigh() {
		m.log.Info("prefetch: waiting for IO pressure", zap.String("ref", ref), zap.String("digest", d), zap.Float64("target", t.target))
	}
	return t.WaitIO(ctx) == nil
}

// Join is called by the CRI proxy's PullImage of ref (any spelling,
// normalised as Add does; REPO@DIGEST joins a fetch of that digest for
// any tag of REPO). If a fetch of it is pending, it is made urgent: it
// stops waiting for IO pressure, admission and a fetch slot and starts
// now (the pull was admitted by the proxy's pull lane already). Join then
// waits for the fetch to end and returns its error (nil once done), or
// ctx's. With nothing in flight it returns at once, joined false. Safe
// for concurrent callers, who all wait for the same fetch.
func (m *Manager) Join(ctx context.Context, ref string) (joined bool, err error) {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return false, fmt.Errorf("prefetch: reference %q: %w", ref, err)
	}
	m.mu.Lock()
	fl := m.joinableLocked(named)
	if fl == nil {
		m.mu.Unlock()
		return false, nil
	}
	if !fl.urgent {
		fl.urgent = true
		if fl.hurry != nil {
			fl.hurry(errUrgent)
		}
	}
	fl.joiners++
	n := fl.joiners
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		fl.joiners--
		m.mu.Unlock()
	}()
	m.log.Info("prefetch: pull joined", zap.String("ref", fl.ref), zap.String("digest", fl.digest), zap.Int("joiners", n))
	select {
	case <-fl.done:
		return true, fl.err
	case <-ctx.Done():
		return true, ctx.Err()
	}
}

// joinableLocked finds the flight a pull of named would wait for: for a
// tag, the one of the entry's New; for a digest, one of that digest in
// the same repository.
func (m *Manager) joinableLocked(named reference.Named) *flight {
	c, ok := named.(reference.Canonical)
	if !ok {
		e := m.mu.entries[named.String()]
		if e == nil || e.New == "" {
			return nil
		}
		return m.mu.flights[e.Ref+"@"+e.New]
	}
	repo := reference.TrimNamed(named).String()
	for _, fl := range m.mu.flights {
		if fl.digest == c.Digest().String() && reference.TrimNamed(mustParse(fl.ref)).String() == repo {
			return fl
		}
	}
	return nil
}

func mustParse(ref string) reference.Named {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		panic(fmt.Sprintf("prefetch: stored reference %q does not parse: %v", ref, err))
	}
	return named
}

// Pulled is called once the CRI pulled ref (any spelling) and answered
// imageID (PullImageResponse.image_ref: the config digest). If ref's
// entry is done and its Config is imageID, the pull was served from the
// prefetch: a hit (Observer.PrefetchHit, Hits, an EventHit), the entry
// goes idle with Running = New, and the prefetch lease is deleted (the
// CRI's image records hold the content now). It returns whether it was
// a hit. It does no I/O but that delete; it wakes Run to read the node's
// images (a pull may have moved a tag: rollback window).
func (m *Manager) Pulled(ctx context.Context, ref, imageID string) (hit bool) {
	defer m.wake()
	r, err := tagRef(ref)
	if err != nil {
		return false
	}
	m.mu.Lock()
	e := m.mu.entries[r]
	if e == nil || e.State != StateDone || e.Config == "" || e.Config != imageID {
		m.mu.Unlock()
		return false
	}
	lease := m.hitLocked(e, m.clk.Now())
	m.mu.gen++
	m.mu.pulled[r] = m.mu.gen
	m.mu.Unlock()
	m.obs.PrefetchHit(r)
	m.release(ctx, r, lease)
	return true
}

// Moved reports whether ref's tag is known to point at a digest the node
// has not pulled yet (noticed by a resolve or a notification: pending,
// running, done or failed). The CRI proxy stops sharing an older pull's
// answer for ref then. A digest reference never moves.
func (m *Manager) Moved(ref string) bool {
	r, err := tagRef(ref)
	if err != nil {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.mu.entries[r]
	return e != nil && e.New != ""
}

// hitLocked records a pull served from e's done prefetch: the node runs
// New now. It returns the lease to delete (outside the lock).
func (m *Manager) hitLocked(e *Entry, now time.Time) (lease string) {
	e.Hits++
	m.movedLocked(e, e.New)
	lease = e.Lease
	e.New, e.State, e.Error, e.Lease, e.Expires, e.Updated = "", StateIdle, "", "", time.Time{}, now
	m.publishLocked(EventHit, e)
	m.publishLocked(EventState, e)
	m.log.Info("prefetch: hit", zap.String("ref", e.Ref), zap.String("digest", e.Running), zap.Int("hits", e.Hits))
	return lease
}

// movedLocked sets e.Running to running and, with a rollback window,
// queues the digest it leaves for protection.
func (m *Manager) movedLocked(e *Entry, running string) {
	if m.opts.RollbackWindow > 0 && e.Running != "" && e.Running != running {
		m.mu.moves = append(m.mu.moves, move{ref: e.Ref, from: e.Running, to: running})
	}
	e.Running = running
}

// protect holds mv.from for the rollback window.
func (m *Manager) protect(ctx context.Context, mv move) {
	p, err := m.fetcher.Protect(ctx, mv.ref, mv.from, m.opts.RollbackWindow)
	if err != nil {
		if ctx.Err() == nil {
			m.log.Warn("prefetch: rollback protection", zap.String("ref", mv.ref), zap.String("digest", mv.from), zap.Error(err))
		}
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.mu.entries[mv.ref]; e != nil {
		e.Previous, e.PreviousUntil, e.Updated = mv.from, p.Expires, m.clk.Now()
		m.publishLocked(EventRollback, e)
	}
}

// release deletes a prefetch lease no longer needed; a failure is logged
// (the lease expires anyway).
func (m *Manager) release(ctx context.Context, ref, lease string) {
	if lease == "" {
		return
	}
	if err := m.fetcher.Release(context.WithoutCancel(ctx), lease); err != nil {
		m.log.Warn("prefetch: release lease", zap.String("ref", ref), zap.String("lease", lease), zap.Error(err))
	}
}

// wake makes Run read the node's images (and resolve any triggered refs)
// now.
func (m *Manager) wake() {
	select {
	case m.kick <- struct{}{}:
	default: // the loop has a wake-up queued already
	}
}
