package admission

import (
	"container/list"
	"time"
)

// waiter is one queued Acquire. Its fields after the queue links are
// guarded by Gate.mu.
type waiter struct {
	id       uint64
	req      Request
	enqueued time.Time
	deadline time.Time // zero if none

	// ready is closed, or notify called, once lease or err is set.
	ready  chan struct{}
	notify func(*Lease, error)
	lease  *Lease
	err    error

	classElem  *list.Element // in classQueue.arrivals
	tenantElem *list.Element // in tenantQueue.waiters
	tq         *tenantQueue
	timer      stopper // deadline timer, nil if none
}

type stopper interface{ Stop() bool }

// decide records the outcome and wakes the caller: a blocked Acquire
// through ready, an AcquireFunc caller through notify, on a goroutine of
// its own because decide runs under the gate's lock.
func (w *waiter) decide(l *Lease, err error) {
	w.lease, w.err = l, err
	if w.ready != nil {
		close(w.ready)
	}
	if w.notify != nil {
		go w.notify(l, err)
	}
}

// queue orders waiters: by class, with aging; round robin across tenants
// within a class; FIFO within a tenant. It is not safe for concurrent use;
// Gate.mu guards it.
type queue struct {
	classes [numClasses]classQueue
	n       int
}

type classQueue struct {
	arrivals list.List // *waiter, oldest first
	tenants  map[string]*tenantQueue
	ring     list.List // *tenantQueue with waiters, next to serve first
}

type tenantQueue struct {
	name     string
	waiters  list.List // *waiter
	ringElem *list.Element
}

func (q *queue) len() int { return q.n }

func (q *queue) push(w *waiter) {
	cq := &q.classes[w.req.Class]
	if cq.tenants == nil {
		cq.tenants = make(map[string]*tenantQueue)
	}
	tq := cq.tenants[w.req.Tenant]
	if tq == nil {
		tq = &tenantQueue{name: w.req.Tenant}
		cq.tenants[w.req.Tenant] = tq
	}
	if tq.ringElem == nil {
		tq.ringElem = cq.ring.PushBack(tq)
	}
	w.tq = tq
	w.tenantElem = tq.waiters.PushBack(w)
	w.classElem = cq.arrivals.PushBack(w)
	q.n++
}

// remove takes w out of the queue; it reports false if w was not queued.
func (q *queue) remove(w *waiter) bool {
	if w.classElem == nil {
		return false
	}
	cq := &q.classes[w.req.Class]
	cq.arrivals.Remove(w.classElem)
	tq := w.tq
	tq.waiters.Remove(w.tenantElem)
	if tq.waiters.Len() == 0 {
		cq.ring.Remove(tq.ringElem)
		tq.ringElem = nil
		delete(cq.tenants, tq.name)
	}
	w.classElem, w.tenantElem, w.tq = nil, nil, nil
	q.n--
	return true
}

// virtualDeadline orders the classes' oldest waiters: a waiter competes as
// if it had arrived class × aging later than it did. Waiters that arrive
// together are served in class order; a lower class's waiter that has
// waited one aging period longer than a higher one's counts as one class
// better. Each waiter's key is fixed at arrival and later arrivals get
// later keys, so every waiter is eventually first: no class starves, even
// under a steady stream of higher ones.
func virtualDeadline(c Class, enqueued time.Time, aging time.Duration) time.Time {
	return enqueued.Add(time.Duration(c) * aging)
}

// pop removes and returns the next waiter to admit, nil if none.
func (q *queue) pop(aging time.Duration) *waiter {
	best := Class(-1)
	var bestKey time.Time
	for c := High; c < numClasses; c++ {
		cq := &q.classes[c]
		front := cq.arrivals.Front()
		if front == nil {
			continue
		}
		// Ties go to the better class (the loop's order).
		if key := virtualDeadline(c, front.Value.(*waiter).enqueued, aging); best < 0 || key.Before(bestKey) {
			best, bestKey = c, key
		}
	}
	if best < 0 {
		return nil
	}
	cq := &q.classes[best]
	tq := cq.ring.Front().Value.(*tenantQueue)
	w := tq.waiters.Front().Value.(*waiter)
	q.remove(w)
	if tq.ringElem != nil {
		// The tenant still has waiters: it goes to the back of the ring.
		cq.ring.MoveToBack(tq.ringElem)
	}
	return w
}

// each calls f for every waiter in class order, then arrival.
func (q *queue) each(f func(w *waiter)) {
	for c := range q.classes {
		for e := q.classes[c].arrivals.Front(); e != nil; e = e.Next() {
			f(e.Value.(*waiter))
		}
	}
}

func (q *queue) countByClass() (out [numClasses]int) {
	for c := range q.classes {
		out[c] = q.classes[c].arrivals.Len()
	}
	return out
}

// ahead counts the waiters of class c and better, an estimate of a new
// waiter's position (aging and round robin can change it).
func (q *queue) ahead(c Class) int {
	n := 0
	for k := Class(0); k <= c; k++ {
		n += q.classes[k].arrivals.Len()
	}
	return n - 1
}
