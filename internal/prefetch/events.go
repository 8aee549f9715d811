package prefetch

// Events and the Observer: what the Manager tells watchers
// (startgatectl watch, through the API) and metrics. Both are fed under
// Manager.mu and never block it: a subscriber whose buffer is full loses
// events and is told how many with a "lost" event before the next one it
// gets, as admission's subscribers are.

import (
	"sync"
	"time"
)

// EventKind says what an Event reports.
type EventKind string

const (
	// EventState: the entry changed state (pending, fetching, done,
	// failed, idle), or appeared (idle).
	EventState EventKind = "state"
	// EventHit: a pull was served from the entry's prefetch.
	EventHit EventKind = "hit"
	// EventRollback: the digest the node ran before (Entry.Previous) is
	// protected until Entry.PreviousUntil.
	EventRollback EventKind = "rollback"
	// EventRemoved: the reference is no longer watched.
	EventRemoved EventKind = "removed"
	// EventLost: the subscriber fell behind and lost Lost events.
	EventLost EventKind = "lost"
)

// Event is a change of a watched reference's entry.
type Event struct {
	// Seq numbers the Manager's events from 1; a subscriber that lost
	// events sees the gap too.
	Seq  uint64
	Time time.Time
	Kind EventKind
	// Entry is the entry after the change (for EventRemoved, as it was);
	// zero for EventLost.
	Entry Entry
	// Lost is how many events were lost, for EventLost.
	Lost uint64
}

// Observer is told of prefetch activity, for metrics. Its methods are
// called synchronously, some under the Manager's lock: they must not
// block or call the Manager.
type Observer interface {
	// PrefetchBytes: n bytes were just read from a registry.
	PrefetchBytes(n int64)
	// PrefetchDone: a fetch of ref ended well.
	PrefetchDone(ref string, r Result)
	// PrefetchFailed: a resolve or a fetch of ref failed.
	PrefetchFailed(ref string, err error)
	// PrefetchHit: a pull of ref was served from prefetched content.
	PrefetchHit(ref string)
}

type noObserver struct{}

func (noObserver) PrefetchBytes(int64)          {}
func (noObserver) PrefetchDone(string, Result)  {}
func (noObserver) PrefetchFailed(string, error) {}
func (noObserver) PrefetchHit(string)           {}

var _ Observer = noObserver{}

// broadcaster fans events out to subscribers without blocking; guarded
// by Manager.mu.
type broadcaster struct {
	seq    uint64
	subs   map[*subscriber]struct{}
	closed bool // Run returned: no new subscriber, every channel closed
}

type subscriber struct {
	ch   chan Event
	lost uint64
}

func (b *broadcaster) send(ev Event) {
	if len(b.subs) == 0 {
		return
	}
	b.seq++
	ev.Seq = b.seq
	for s := range b.subs {
		if s.lost > 0 {
			select {
			case s.ch <- Event{Seq: ev.Seq, Time: ev.Time, Kind: EventLost, Lost: s.lost}:
				s.lost = 0
			default:
				s.lost++
				continue
			}
		}
		select {
		case s.ch <- ev:
		default:
			s.lost++
		}
	}
}

func (b *broadcaster) closeAll() {
	for s := range b.subs {
		close(s.ch)
	}
	b.subs = nil
	b.closed = true
}

// publishLocked sends an event of kind for e (copied as it is now).
func (m *Manager) publishLocked(kind EventKind, e *Entry) {
	m.mu.events.send(Event{Time: m.now(), Kind: kind, Entry: *e})
}

// stateLocked publishes an EventState if e's state is not before.
func (m *Manager) stateLocked(e *Entry, before State) {
	if e.State != before {
		m.publishLocked(EventState, e)
	}
}

// Subscribe returns a channel of the Manager's events with room for
// buffer of them, and a function that ends the subscription (closing the
// channel; idempotent). The channel is also closed when Run returns, or
// at once if it has. A subscriber that falls behind loses events, never
// slows the Manager, and is told with an EventLost.
func (m *Manager) Subscribe(buffer int) (<-chan Event, func()) {
	s := &subscriber{ch: make(chan Event, max(buffer, 1))}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.mu.events.closed {
		close(s.ch)
		return s.ch, func() {}
	}
	if m.mu.events.subs == nil {
		m.mu.events.subs = map[*subscriber]struct{}{}
	}
	m.mu.events.subs[s] = struct{}{}
	var once sync.Once
	return s.ch, func() {
		once.Do(func() {
			m.mu.Lock()
			defer m.mu.Unlock()
			if _, ok := m.mu.events.subs[s]; ok {
				delete(m.mu.events.subs, s)
				close(s.ch)
			}
		})
	}
}
