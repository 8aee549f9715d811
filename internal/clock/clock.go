package clock

import (
	"sort"
	"sync"
	"time"
)

// Clock is the subset of the time package that startgate uses.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f on its own goroutine (Real) or on the goroutine
	// that advances time (Manual) once d has passed.
	AfterFunc(d time.Duration, f func()) Timer
	NewTicker(d time.Duration) Ticker
}

// Timer is a pending AfterFunc call.
type Timer interface {
	// Stop prevents the call; it reports whether it did.
	Stop() bool
}

// Ticker delivers ticks on C, dropping ticks a slow reader misses.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// Real is the wall clock.
type Real struct{}

var _ Clock = Real{}

func (Real) Now() time.Time { return time.Now() }

func (Real) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

func (Real) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time { return r.t.C }
func (r realTicker) Stop()               { r.t.Stop() }

// Manual is a clock that moves only when told to.
type Manual struct {
	mu struct {
		sync.Mutex
		now    time.Time
		seq    uint64
		timers []*manualTimer
	}
}

var _ Clock = (*Manual)(nil)

// NewManual returns a manual clock set to start.
func NewManual(start time.Time) *Manual {
	m := &Manual{}
	m.mu.now = start
	return m
}

type manualTimer struct {
	m      *Manual
	at     time.Time
	seq    uint64
	f      func()
	period time.Duration // >0 for tickers
	c      chan time.Time
}

// Now returns the manual time.
func (m *Manual) Now() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mu.now
}

// AfterFunc schedules f to run when time is advanced past d from now.
func (m *Manual) AfterFunc(d time.Duration, f func()) Timer {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := &manualTimer{m: m, at: m.mu.now.Add(d), f: f}
	m.addLocked(t)
	return t
}

// NewTicker returns a ticker that ticks every d of manual time.
func (m *Manual) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("clock: non-positive ticker interval")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	t := &manualTimer{m: m, at: m.mu.now.Add(d), period: d, c: make(chan time.Time, 1)}
	m.addLocked(t)
	return manualTicker{t}
}

type manualTicker struct{ t *manualTimer }

func (k manualTicker) C() <-chan time.Time { return k.t.c }
func (k manualTicker) Stop()               { k.t.Stop() }

func (m *Manual) addLocked(t *manualTimer) {
	m.mu.seq++
	t.seq = m.mu.seq
	m.mu.timers = append(m.mu.timers, t)
}

// Pending returns the number of scheduled timers and tickers.
func (m *Manual) Pending() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.mu.timers)
}

// Advance moves time forward by d, firing every timer that falls due on the
// way in time order, with the clock reading each timer's own due time while
// it runs.
func (m *Manual) Advance(d time.Duration) {
	m.mu.Lock()
	end := m.mu.now.Add(d)
	m.mu.Unlock()
	for {
		m.mu.Lock()
		sort.Slice(m.mu.timers, func(i, j int) bool {
			a, b := m.mu.timers[i], m.mu.timers[j]
			if !a.at.Equal(b.at) {
				return a.at.Before(b.at)
			}
			return a.seq < b.seq
		})
		if len(m.mu.timers) == 0 || m.mu.timers[0].at.After(end) {
			m.mu.now = end
			m.mu.Unlock()
			return
		}
		t := m.mu.timers[0]
		m.mu.now = t.at
		if t.period > 0 {
			t.at = t.at.Add(t.period)
			select {
			case t.c <- m.mu.now:
			default:
			}
			m.mu.Unlock()
			continue
		}
		m.mu.timers = m.mu.timers[1:]
		m.mu.Unlock()
		t.f()
	}
}

func (t *manualTimer) Stop() bool {
	m := t.m
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, o := range m.mu.timers {
		if o == t {
			m.mu.timers = append(m.mu.timers[:i], m.mu.timers[i+1:]...)
			return true
		}
	}
	return false
}
