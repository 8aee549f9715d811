package admission

import (
	"container/heap"
	"sort"
	"time"
)

// Lease is a held start slot. It ends when its holder releases it, when its
// hold cap passes, or when the gate closes; the slot is free again at once
// in every case.
type Lease struct {
	g    *Gate
	info LeaseInfo
	done chan struct{}
	// index in Gate.mu.expiry, the heap of leases by expiry.
	index int

	// Guarded by g.mu.
	ended  bool
	reason ReleaseReason
}

// ID identifies the lease; it is the ID its waiter had in the queue.
func (l *Lease) ID() uint64 { return l.info.ID }

// Info describes the lease.
func (l *Lease) Info() LeaseInfo { return l.info }

// Release gives the slot back. It is safe to call more than once and
// after the lease expired.
func (l *Lease) Release() { l.g.end(l, ReleaseByHolder) }

// Done is closed when the lease ends, for any reason.
func (l *Lease) Done() <-chan struct{} { return l.done }

// EndReason says why the lease ended; it is empty before Done is closed.
func (l *Lease) EndReason() ReleaseReason {
	l.g.mu.Lock()
	defer l.g.mu.Unlock()
	return l.reason
}

func sortLeases(ls []LeaseInfo) {
	sort.Slice(ls, func(i, j int) bool {
		if !ls[i].Granted.Equal(ls[j].Granted) {
			return ls[i].Granted.Before(ls[j].Granted)
		}
		return ls[i].ID < ls[j].ID
	})
}

// leaseHeap orders held leases by expiry, so one timer serves them all:
// a lease costs no timer of its own, which keeps the uncontended acquire
// and release path short.
type leaseHeap []*Lease

var _ heap.Interface = (*leaseHeap)(nil)

func (h leaseHeap) Len() int { return len(h) }
func (h leaseHeap) Less(i, j int) bool {
	return h[i].info.Expires.Before(h[j].info.Expires)
}
func (h leaseHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *leaseHeap) Push(x any) {
	l := x.(*Lease)
	l.index = len(*h)
	*h = append(*h, l)
}
func (h *leaseHeap) Pop() any {
	old := *h
	l := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	l.index = -1
	return l
}

// armExpiryLocked makes sure the expiry timer fires no later than the
// earliest lease's expiry. A timer that fires early finds nothing due and
// re-arms; one armed for a lease released since is harmless.
func (g *Gate) armExpiryLocked(now time.Time) {
	if len(g.mu.expiry) == 0 {
		return
	}
	at := g.mu.expiry[0].info.Expires
	if !g.mu.expiryAt.IsZero() && !g.mu.expiryAt.After(at) {
		return
	}
	stopTimer(g.mu.expiryT)
	g.mu.expiryAt = at
	g.mu.expiryT = g.afterFunc(at.Sub(now), g.expire)
}

// expire ends the leases whose hold cap has passed.
func (g *Gate) expire() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.mu.expiryT, g.mu.expiryAt = nil, time.Time{}
	if g.mu.closed {
		return
	}
	now := g.clk.Now()
	for len(g.mu.expiry) > 0 && !g.mu.expiry[0].info.Expires.After(now) {
		g.endLocked(now, g.mu.expiry[0], ReleaseExpired)
	}
	g.armExpiryLocked(now)
	g.dispatchLocked(now)
}
