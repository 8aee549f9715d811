// Package broadcast fans events out to subscribers without ever blocking
// the publisher: the admission gate's and the prefetch manager's events,
// which both publish under their own lock.
//
// A subscriber whose buffer is full loses events and is told how many by
// a "lost" event (made by Hub.Lost) before the next one it gets, so a
// slow watcher never slows the gate and always knows what it missed.
package broadcast

import "sync"

// Hub is a set of subscribers. It is not safe for concurrent use by
// itself: its owner guards Send and CloseAll with its own lock and hands
// that lock to Subscribe. The zero value needs Stamp and Lost set.
type Hub[E any] struct {
	// Stamp sets an event's sequence number (consecutive from 1).
	Stamp func(e *E, seq uint64)
	// Lost makes the event that tells a subscriber it lost n events; seq
	// and e are the event it would have got next.
	Lost func(e E, seq, n uint64) E

	seq    uint64
	subs   map[*sub[E]]struct{}
	closed bool
}

type sub[E any] struct {
	ch   chan E
	lost uint64
}

// Active reports whether anyone subscribes, so that a publisher can skip
// building an event nobody reads.
func (h *Hub[E]) Active() bool { return len(h.subs) > 0 }

// Send numbers e and offers it to every subscriber without blocking.
func (h *Hub[E]) Send(e E) {
	if len(h.subs) == 0 {
		return
	}
	h.seq++
	h.Stamp(&e, h.seq)
	for s := range h.subs {
		if s.lost > 0 {
			select {
			case s.ch <- h.Lost(e, h.seq, s.lost):
				s.lost = 0
			default:
				s.lost++
				continue
			}
		}
		select {
		case s.ch <- e:
		default:
			s.lost++
		}
	}
}

// CloseAll closes every subscriber's channel; later subscribers get a
// closed channel at once.
func (h *Hub[E]) CloseAll() {
	for s := range h.subs {
		close(s.ch)
	}
	h.subs = nil
	h.closed = true
}

// Subscribe adds a subscriber with room for buffer events (at least one)
// under mu, the owner's lock, and returns its channel and a function that
// ends the subscription, closing the channel; it is idempotent and takes
// mu itself.
func (h *Hub[E]) Subscribe(mu sync.Locker, buffer int) (<-chan E, func()) {
	s := &sub[E]{ch: make(chan E, max(buffer, 1))}
	mu.Lock()
	defer mu.Unlock()
	if h.closed {
		close(s.ch)
		return s.ch, func() {}
	}
	if h.subs == nil {
		h.subs = map[*sub[E]]struct{}{}
	}
	h.subs[s] = struct{}{}
	var once sync.Once
	return s.ch, func() {
		once.Do(func() {
			mu.Lock()
			defer mu.Unlock()
			if _, ok := h.subs[s]; ok {
				delete(h.subs, s)
				close(s.ch)
			}
		})
	}
}
