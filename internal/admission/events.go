package admission

import (
	"time"

	"github.com/startgate/startgate/internal/broadcast"
)

// newHub is the gate's event fan-out: a subscriber whose buffer is full
// loses events and is told how many with an EventLost before the next one
// it gets; the gate never waits for a watcher.
func newHub() broadcast.Hub[Event] {
	return broadcast.Hub[Event]{
		Stamp: func(e *Event, seq uint64) { e.Seq = seq },
		Lost: func(e Event, seq, n uint64) Event {
			return Event{Seq: seq, Time: e.Time, Type: EventLost, Lost: n}
		},
	}
}

// publishLocked stamps ev with the gate's state and sends it; it costs
// nothing when nobody watches.
func (g *Gate) publishLocked(now time.Time, ev Event) {
	if !g.mu.events.Active() {
		return
	}
	ev.Time = now
	ev.InFlight = g.inFlightLocked()
	ev.Queued = g.mu.q.len()
	ev.Limits = g.mu.limits
	ev.State = g.mu.state
	ev.Pressure = g.mu.sample.Some
	g.mu.events.Send(ev)
}

// Subscribe returns a channel of events with room for buffer of them, and
// a function that ends the subscription. The channel is closed when the
// subscription ends or the gate closes.
func (g *Gate) Subscribe(buffer int) (<-chan Event, func()) {
	return g.mu.events.Subscribe(&g.mu.Mutex, buffer)
}
