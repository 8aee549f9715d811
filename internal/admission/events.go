package admission

import (
	"sync"
	"time"
)

// broadcaster fans events out to subscribers without ever blocking the
// gate: a subscriber whose buffer is full loses events and is told how
// many with an EventLost before the next one it gets.
type broadcaster struct {
	seq  uint64
	subs map[*subscriber]struct{}
}

type subscriber struct {
	ch   chan Event
	lost uint64
}

func (b *broadcaster) active() bool { return len(b.subs) > 0 }

func (b *broadcaster) send(ev Event) {
	b.seq++
	ev.Seq = b.seq
	for s := range b.subs {
		if s.lost > 0 {
			select {
			case s.ch <- Event{Seq: ev.Seq, Time: ev.Time, Type: EventLost, Lost: s.lost}:
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
}

// publishLocked stamps ev with the gate's state and sends it; it costs
// nothing when nobody watches.
func (g *Gate) publishLocked(now time.Time, ev Event) {
	if !g.mu.events.active() {
		return
	}
	ev.Time = now
	ev.InFlight = g.inFlightLocked()
	ev.Queued = g.mu.q.len()
	ev.Limits = g.mu.limits
	ev.State = g.mu.state
	ev.Pressure = g.mu.sample.Some
	g.mu.events.send(ev)
}

// Subscribe returns a channel of events with room for buffer of them, and
// a function that ends the subscription. The channel is closed when the
// subscription ends or the gate closes.
func (g *Gate) Subscribe(buffer int) (<-chan Event, func()) {
	s := &subscriber{ch: make(chan Event, max(buffer, 1))}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.mu.closed {
		close(s.ch)
		return s.ch, func() {}
	}
	if g.mu.events.subs == nil {
		g.mu.events.subs = make(map[*subscriber]struct{})
	}
	g.mu.events.subs[s] = struct{}{}
	var once sync.Once
	return s.ch, func() {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			if _, ok := g.mu.events.subs[s]; ok {
				delete(g.mu.events.subs, s)
				close(s.ch)
			}
		})
	}
}
