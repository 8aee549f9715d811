package prefetch

// Events and the Observer: what the Manager tells watchers
// (startgatectl watch, through the API) and metrics. Both are fed under
// Manager.mu and never block it: a subscriber whose buffer is full loses
// events and is told how many with a "lost" event before the next one it
// gets, as admission's subscribers are.

import (
	"time"

	"github.com/startgate/startgate/internal/broadcast"
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

// newHub is the Manager's event fan-out (guarded by Manager.mu): a
// subscriber that falls behind loses events and is told how many with an
// EventLost.
func newHub() broadcast.Hub[Event] {
	return broadcast.Hub[Event]{
		Stamp: func(e *Event, seq uint64) { e.Seq = seq },
		Lost: func(e Event, seq, n uint64) Event {
			return Event{Seq: seq, Time: e.Time, Kind: EventLost, Lost: n}
		},
	}
}

// publishLocked sends an event of kind for e (copied as it is now).
func (m *Manager) publishLocked(kind EventKind, e *Entry) {
	m.mu.events.Send(Event{Time: m.clk.Now(), Kind: kind, Entry: *e})
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
	return m.mu.events.Subscribe(&m.mu.Mutex, buffer)
}
