package admission

import (
	"sort"

	"github.com/startgate/startgate/internal/clock"
)

// Lease is a held start slot. It ends when its holder releases it, when its
// hold cap passes, or when the gate closes; the slot is free again at once
// in every case.
type Lease struct {
	g     *Gate
	info  LeaseInfo
	done  chan struct{}
	timer clock.Timer

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
