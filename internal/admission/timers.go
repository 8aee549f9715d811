package admission

import (
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// afterFunc arms f to run once d has passed, on the gate's timer
// goroutine. The gate's timer callbacks take g.mu, under which the gate
// calls the clock (Now, AfterFunc, Stop). time.AfterFunc runs a callback
// on a goroutine of its own, where that is fine; FakeClock runs it on the
// goroutine that steps the clock while holding the clock's lock, where
// taking g.mu would invert the lock order and calling the clock would
// deadlock. Handing every callback to g.fired makes the gate safe with
// either.
func (g *Gate) afterFunc(d time.Duration, f func()) clock.Timer {
	return g.clk.AfterFunc(d, func() { g.fired.add(f) })
}

// firedTimers runs the callbacks of timers that fired, one at a time and
// in the order they fired, on a goroutine it starts when it has work and
// that ends when it has none. One at a time costs nothing (every callback
// takes g.mu first); in order makes a test that fires several timers at
// one step of a fake clock see them run as they fell due.
type firedTimers struct {
	// running counts the callbacks handed over and not yet returned: a
	// test that steps a fake clock waits on it before it looks.
	running sync.WaitGroup

	mu struct {
		sync.Mutex
		queue  []func()
		active bool // the goroutine runs
	}
}

func (q *firedTimers) add(f func()) {
	q.running.Add(1)
	q.mu.Lock()
	defer q.mu.Unlock()
	q.mu.queue = append(q.mu.queue, f)
	if !q.mu.active {
		q.mu.active = true
		go q.run()
	}
}

func (q *firedTimers) run() {
	for {
		q.mu.Lock()
		if len(q.mu.queue) == 0 {
			q.mu.active = false
			q.mu.Unlock()
			return
		}
		f := q.mu.queue[0]
		q.mu.queue[0] = nil
		q.mu.queue = q.mu.queue[1:]
		q.mu.Unlock()
		f()
		q.running.Done()
	}
}
