package fleet

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	coordclient "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/utils/clock"
)

// SlotLabel marks the Leases that are upstream slots, so that one list
// (served from the API server's watch cache) reads them all.
const SlotLabel = "startgate.io/upstream-slot"

// SlotPrefix names the slots: startgate-upstream-0 .. K-1.
const SlotPrefix = "startgate-upstream-"

// BudgetOptions configure a Budget. Every node of a cluster should use
// the same Slots; a node with more uses more.
type BudgetOptions struct {
	// Leases is the namespace's Lease client (fleet.namespace).
	Leases coordclient.LeaseInterface
	// Identity is the holder written into a slot: the node's name.
	Identity string
	// Slots is K, the most upstream fetches at once in the cluster.
	Slots int
	// LeaseDuration is how long a slot outlives its holder's last
	// renewal: a node that dies holding one delays the others by at most
	// this (plus a retry). The holder renews every third of it.
	LeaseDuration time.Duration
	// RetryMin and RetryMax bound the wait between attempts while every
	// slot is held: it starts at RetryMin, doubles per attempt that finds
	// none free, up to RetryMax, each jittered ±50%.
	RetryMin, RetryMax time.Duration
	// FailOpenAfter: when the slots could not be read or written for this
	// long, Acquire gives a slot that bounds nothing (Slot.Unbounded), so
	// that a node cut off from the API still prefetches as it would
	// alone; 0 waits for the API however long.
	FailOpenAfter time.Duration
	// Clock; nil is the real one.
	Clock  clock.Clock
	Logger *zap.Logger
}

// Budget hands out the cluster's K upstream slots, each a named Lease
// (coordination.k8s.io) held by at most one node, the way client-go's
// leader election holds one: try, and retry after a while. It does not
// watch the slots: a watch would send every acquire, renewal and release
// to every node, N events per change and N² per rollout; a try is one
// list from the API server's cache and, when a slot is free, one update
// guarded by its resourceVersion, so two nodes never both win it.
//
// A slot is free when it has no holder, or when its record has not
// changed for LeaseDuration as this node has watched it (client-go's
// observed-time rule, immune to clock skew between nodes). Its holder
// stops using it (Slot.Lost) if it could not renew it within
// LeaseDuration of sending its last renewal, which is before anyone else
// can see it free: at most K fetches at once, even across a partition.
type Budget struct {
	opts BudgetOptions
	clk  clock.Clock
	log  *zap.Logger

	mu struct {
		sync.Mutex
		// seen is when this node first saw each slot's current record
		// (by resourceVersion).
		seen map[string]seenRecord
	}
}

type seenRecord struct {
	rv string
	at time.Time
}

// NewBudget validates opts.
func NewBudget(opts BudgetOptions) (*Budget, error) {
	switch {
	case opts.Leases == nil:
		return nil, errors.New("fleet: budget: no lease client")
	case opts.Identity == "":
		return nil, errors.New("fleet: budget: no identity (node name)")
	case opts.Slots < 1:
		return nil, fmt.Errorf("fleet: budget: %d slots, want at least 1", opts.Slots)
	case opts.LeaseDuration < time.Second:
		return nil, fmt.Errorf("fleet: budget: lease duration %v, want at least 1s", opts.LeaseDuration)
	case opts.RetryMin <= 0 || opts.RetryMax < opts.RetryMin:
		return nil, fmt.Errorf("fleet: budget: retry %v..%v, want 0 < min <= max", opts.RetryMin, opts.RetryMax)
	}
	b := &Budget{opts: opts, clk: opts.Clock, log: opts.Logger}
	if b.clk == nil {
		b.clk = clock.RealClock{}
	}
	if b.log == nil {
		b.log = zap.NewNop()
	}
	b.mu.seen = map[string]seenRecord{}
	return b, nil
}

// Slot is a held upstream slot.
type Slot struct {
	// unbounded: given without the API (FailOpenAfter); nothing is held.
	unbounded bool
	b         *Budget
	name      string
	// lost is closed when the slot is no longer this node's to use: a
	// renewal failed for a LeaseDuration, or another node holds it.
	lost   chan struct{}
	cancel context.CancelFunc
	done   chan struct{} // the renewer has ended
	// lease is the renewer's last written record.
	lease *coordinationv1.Lease
}

// Name is the slot's Lease name ("" when unbounded).
func (s *Slot) Name() string { return s.name }

// Unbounded reports whether the slot was given without the API
// (FailOpenAfter): it holds nothing.
func (s *Slot) Unbounded() bool { return s.unbounded }

// Lost is closed when the slot stopped being this node's: the fetch
// using it must stop.
func (s *Slot) Lost() <-chan struct{} { return s.lost }

// Acquire waits until this node holds a slot, or ctx ends. The slot is
// renewed in the background until Release.
func (b *Budget) Acquire(ctx context.Context) (*Slot, error) {
	retry := b.retry()
	var failingSince time.Time
	for {
		lease, sent, err := b.try(ctx)
		if lease != nil {
			return b.hold(lease, sent), nil
		}
		pause := retry.Step()
		switch {
		case err == nil:
			failingSince = time.Time{}
		case ctx.Err() != nil:
		default:
			// The API unreachable or refusing: said, and tried again
			// like a full budget, up to FailOpenAfter.
			now := b.clk.Now()
			if failingSince.IsZero() {
				failingSince = now
			}
			if b.opts.FailOpenAfter > 0 && now.Sub(failingSince) >= b.opts.FailOpenAfter {
				b.log.Warn("upstream slots out of reach: fetching without one, as a node alone would",
					zap.Duration("failing_for", now.Sub(failingSince)), zap.Error(err))
				return &Slot{unbounded: true, lost: make(chan struct{})}, nil
			}
			b.log.Warn("upstream slots unreadable; trying again", zap.Error(err), zap.Duration("in", pause))
		}
		if err := sleep(ctx, b.clk, jitter(pause)); err != nil {
			return nil, err
		}
	}
}

// retry is the wait between attempts: RetryMin, doubling, up to RetryMax.
func (b *Budget) retry() wait.Backoff {
	return wait.Backoff{Duration: b.opts.RetryMin, Factor: 2, Cap: b.opts.RetryMax, Steps: math.MaxInt32}
}

// try lists the slots and takes a free one, if any: the lease written and
// when its write was sent.
func (b *Budget) try(ctx context.Context) (*coordinationv1.Lease, time.Time, error) {
	list, err := b.opts.Leases.List(ctx, metav1.ListOptions{LabelSelector: SlotLabel + "=true", ResourceVersion: "0"})
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("fleet: list upstream slots: %w", err)
	}
	byName := make(map[string]*coordinationv1.Lease, len(list.Items))
	for i := range list.Items {
		byName[list.Items[i].Name] = &list.Items[i]
	}
	now := b.clk.Now()
	for _, i := range rand.Perm(b.opts.Slots) {
		name := SlotPrefix + strconv.Itoa(i)
		cur, ok := byName[name]
		if ok && !b.free(cur, now) {
			continue
		}
		sent := b.clk.Now()
		l, err := b.take(ctx, name, cur, sent)
		switch {
		case err == nil:
			return l, sent, nil
		case apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err):
			// Another node was quicker.
			continue
		default:
			return nil, time.Time{}, fmt.Errorf("fleet: take upstream slot %s: %w", name, err)
		}
	}
	return nil, time.Time{}, nil
}

// free says whether slot l may be taken: no holder, this node's own (a
// restart), or unchanged for LeaseDuration since this node first saw it.
func (b *Budget) free(l *coordinationv1.Lease, now time.Time) bool {
	holder := ""
	if l.Spec.HolderIdentity != nil {
		holder = *l.Spec.HolderIdentity
	}
	if holder == "" || holder == b.opts.Identity {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.mu.seen[l.Name]
	if !ok || s.rv != l.ResourceVersion {
		b.mu.seen[l.Name] = seenRecord{rv: l.ResourceVersion, at: now}
		return false
	}
	return now.Sub(s.at) >= b.leaseDuration(l)
}

// leaseDuration is the slot's own duration when it has one (its holder's
// setting), else this node's.
func (b *Budget) leaseDuration(l *coordinationv1.Lease) time.Duration {
	if l.Spec.LeaseDurationSeconds != nil && *l.Spec.LeaseDurationSeconds > 0 {
		return time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
	}
	return b.opts.LeaseDuration
}

// take writes this node as the holder of slot name: a create when it does
// not exist (cur nil), else an update guarded by cur's resourceVersion.
func (b *Budget) take(ctx context.Context, name string, cur *coordinationv1.Lease, now time.Time) (*coordinationv1.Lease, error) {
	id := b.opts.Identity
	secs := int32(b.opts.LeaseDuration / time.Second)
	t := metav1.NewMicroTime(now)
	spec := coordinationv1.LeaseSpec{HolderIdentity: &id, LeaseDurationSeconds: &secs, AcquireTime: &t, RenewTime: &t}
	if cur == nil {
		return b.opts.Leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{SlotLabel: "true"}},
			Spec:       spec,
		}, metav1.CreateOptions{})
	}
	l := cur.DeepCopy()
	transitions := int32(0)
	if l.Spec.LeaseTransitions != nil {
		transitions = *l.Spec.LeaseTransitions
	}
	transitions++
	spec.LeaseTransitions = &transitions
	l.Spec = spec
	return b.opts.Leases.Update(ctx, l, metav1.UpdateOptions{})
}

// hold starts the renewer of a freshly taken slot.
func (b *Budget) hold(l *coordinationv1.Lease, sent time.Time) *Slot {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Slot{b: b, name: l.Name, lost: make(chan struct{}), cancel: cancel, done: make(chan struct{}), lease: l}
	go func() {
		defer close(s.done)
		s.renew(ctx, sent)
	}()
	return s
}

// renew rewrites the slot's renewTime every third of LeaseDuration until
// ctx ends. It closes lost when a renewal has not succeeded within
// LeaseDuration of sending the last one that did (others may then see the
// slot free), or when another node holds it.
func (s *Slot) renew(ctx context.Context, lastSent time.Time) {
	b := s.b
	every := b.opts.LeaseDuration / 3
	for {
		deadline := lastSent.Add(b.opts.LeaseDuration)
		wait := min(every, deadline.Sub(b.clk.Now()))
		if err := sleep(ctx, b.clk, wait); err != nil {
			return
		}
		if !b.clk.Now().Before(deadline) {
			b.log.Warn("upstream slot not renewed in time: giving it up", zap.String("slot", s.name))
			close(s.lost)
			return
		}
		sent := b.clk.Now()
		l := s.lease.DeepCopy()
		t := metav1.NewMicroTime(sent)
		l.Spec.RenewTime = &t
		nl, err := b.opts.Leases.Update(ctx, l, metav1.UpdateOptions{})
		switch {
		case err == nil:
			s.lease, lastSent = nl, sent
		case apierrors.IsConflict(err):
			// Someone else wrote it: still ours only if the holder is.
			cur, gerr := b.opts.Leases.Get(ctx, s.name, metav1.GetOptions{})
			if gerr == nil && (cur.Spec.HolderIdentity == nil || *cur.Spec.HolderIdentity != b.opts.Identity) {
				b.log.Warn("upstream slot taken by another node: giving it up", zap.String("slot", s.name))
				close(s.lost)
				return
			}
			if gerr == nil {
				s.lease = cur
			}
		default:
			if ctx.Err() != nil {
				return
			}
			b.log.Warn("upstream slot renewal failed; trying again", zap.String("slot", s.name), zap.Error(err))
		}
	}
}

// Release gives the slot back: the renewer stops and the holder is
// cleared, so a waiting node can take it at its next try. A slot lost or
// not clearable (the API unreachable) simply expires.
func (s *Slot) Release(ctx context.Context) {
	if s.unbounded {
		return
	}
	s.cancel()
	<-s.done
	select {
	case <-s.lost:
		return
	default:
	}
	l := s.lease.DeepCopy()
	l.Spec.HolderIdentity = nil
	l.Spec.AcquireTime, l.Spec.RenewTime = nil, nil
	if _, err := s.b.opts.Leases.Update(ctx, l, metav1.UpdateOptions{}); err != nil {
		s.b.log.Info("upstream slot not cleared; it expires instead", zap.String("slot", s.name), zap.Error(err))
	}
}

// jitter spreads d over [d/2, 3d/2).
func jitter(d time.Duration) time.Duration {
	return wait.Jitter(d/2, 2)
}

// sleep waits d on clk, or until ctx ends.
func sleep(ctx context.Context, clk clock.Clock, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C():
		return nil
	}
}
