package admission

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
	"k8s.io/utils/clock"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/startgate/startgate/internal/pressure"
)

// fakeSampler returns whatever pressure the script set.
type fakeSampler struct {
	mu  sync.Mutex
	s   pressure.Sample
	err error
}

func (f *fakeSampler) Sample(now time.Time) (pressure.Sample, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.s
	s.Time = now
	return s, f.err
}

func (f *fakeSampler) set(v pressure.Values, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.s = pressure.Sample{Some: v, Raw: v, Present: [pressure.NumResources]bool{true, true, true}}
	f.err = err
}

// steppedClock is a FakeClock that remembers when each AfterFunc falls
// due, so that advance can stop at each such time in turn: FakeClock.Step
// moves straight to its end and fires whatever passed on the way, where a
// scenario wants every timer to fire at its own time, seeing that time
// (a token timer that fires at 100ms and re-arms for 200ms fires twice
// within one 250ms tick). A time remembered for a timer stopped since is
// a stop where nothing fires.
type steppedClock struct {
	*testingclock.FakeClock
	mu  sync.Mutex
	due []time.Time
}

var _ clock.WithTickerAndDelayedExecution = (*steppedClock)(nil)

func (c *steppedClock) AfterFunc(d time.Duration, f func()) clock.Timer {
	c.mu.Lock()
	c.due = append(c.due, c.Now().Add(d))
	c.mu.Unlock()
	return c.FakeClock.AfterFunc(d, f)
}

// nextDue takes the earliest remembered time not after end, and every
// other time not after it.
func (c *steppedClock) nextDue(end time.Time) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var next time.Time
	for _, t := range c.due {
		if !t.After(end) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	if next.IsZero() {
		return next, false
	}
	c.due = slices.DeleteFunc(c.due, func(t time.Time) bool { return !t.After(next) })
	return next, true
}

// advance moves the clock d forward, stopping at every time a timer falls
// due on the way and waiting there for what fired (the gate runs timer
// callbacks on a goroutine of its own) before it goes on.
func (c *steppedClock) advance(d time.Duration, g *Gate) {
	end := c.Now().Add(d)
	for {
		next, ok := c.nextDue(end)
		if !ok {
			break
		}
		c.SetTime(later(next, c.Now()))
		g.fired.running.Wait()
	}
	c.SetTime(end)
	g.fired.running.Wait()
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

type result struct {
	lease *Lease
	err   error
}

// scenario drives one Gate from a testdata script.
type scenario struct {
	t       *testing.T
	clk     *steppedClock
	start   time.Time
	g       *Gate
	sampler *fakeSampler
	events  <-chan Event
	unsub   func()
	names   map[uint64]string
	results map[string]chan result
	cancels map[string]context.CancelFunc
	leases  map[string]*Lease
	wg      sync.WaitGroup
}

func (s *scenario) close() {
	if s.g == nil {
		return
	}
	for _, c := range s.cancels {
		c()
	}
	s.g.Close()
	s.wg.Wait()
	s.unsub()
}

func (s *scenario) init(d *datadriven.TestData) string {
	s.close()
	p := DefaultPolicy()
	cores := 2
	static := false
	for _, a := range d.CmdArgs {
		v := ""
		if len(a.Vals) > 0 {
			v = a.Vals[0]
		}
		switch a.Key {
		case "cores":
			d.ScanArgs(s.t, "cores", &cores)
		case "inflight":
			d.ScanArgs(s.t, "inflight", &p.StaticInFlight)
		case "rate":
			d.ScanArgs(s.t, "rate", &p.StaticRate)
		case "burst":
			d.ScanArgs(s.t, "burst", &p.Burst)
		case "max-inflight-per-core":
			d.ScanArgs(s.t, "max-inflight-per-core", &p.MaxInFlightPerCore)
		case "cpu-target":
			d.ScanArgs(s.t, "cpu-target", &p.Targets[pressure.CPU])
		case "double-below":
			d.ScanArgs(s.t, "double-below", &p.DoubleBelow)
		case "decrease-every":
			p.DecreaseEvery = mustDuration(s.t, v)
		case "aging":
			p.Aging = mustDuration(s.t, v)
		case "margin":
			p.DeadlineMargin = mustDuration(s.t, v)
		case "maxhold":
			p.MaxHold = mustDuration(s.t, v)
		case "maxqueue":
			d.ScanArgs(s.t, "maxqueue", &p.MaxQueue)
		case "refuse":
			p.DeadlineRefuse = true
		case "static":
			static = true
		default:
			s.t.Fatalf("%s: init: unknown argument %q", d.Pos, a.Key)
		}
	}
	s.start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s.clk = &steppedClock{FakeClock: testingclock.NewFakeClock(s.start)}
	s.sampler = &fakeSampler{}
	s.sampler.set(pressure.Values{}, nil)
	cfg := Config{Clock: s.clk, Policy: p, Cores: cores, Interval: 250 * time.Millisecond, Pressure: s.sampler}
	if static {
		cfg.Pressure = nil
	}
	g, err := New(cfg)
	if err != nil {
		return "error: " + err.Error()
	}
	s.g = g
	s.events, s.unsub = g.Subscribe(100000)
	s.names = map[uint64]string{}
	s.results = map[string]chan result{}
	s.cancels = map[string]context.CancelFunc{}
	s.leases = map[string]*Lease{}
	st := g.Status()
	return fmt.Sprintf("limits: inflight=%d rate=%.2f burst=%d state=%s", st.Limits.InFlight, st.Limits.Rate, st.Limits.Burst, st.State)
}

func mustDuration(t *testing.T, v string) time.Duration {
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("bad duration %q: %v", v, err)
	}
	return d
}

// acquire starts an Acquire on its own goroutine and returns once the gate
// has decided whether it waits.
func (s *scenario) acquire(d *datadriven.TestData) string {
	var name string
	d.ScanArgs(s.t, "name", &name)
	req := Request{Class: Normal, Description: name}
	for _, a := range d.CmdArgs {
		v := ""
		if len(a.Vals) > 0 {
			v = a.Vals[0]
		}
		switch a.Key {
		case "name":
		case "class":
			c, err := ParseClass(v)
			if err != nil {
				return "error: " + err.Error()
			}
			req.Class = c
		case "tenant":
			req.Tenant = v
		case "deadline":
			req.Deadline = s.clk.Now().Add(mustDuration(s.t, v))
		case "hold":
			req.Hold = mustDuration(s.t, v)
		default:
			s.t.Fatalf("%s: acquire: unknown argument %q", d.Pos, a.Key)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan result, 1)
	s.results[name], s.cancels[name] = ch, cancel
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		l, err := s.g.Acquire(ctx, req)
		ch <- result{l, err}
	}()
	// Every Acquire ends in exactly one of these events, or in an error
	// before any (validation), which the result channel carries.
	resc := ch
	for {
		select {
		case ev := <-s.events:
			if ev.Description == name && (ev.Type == EventQueued || ev.Type == EventGranted || ev.Type == EventRefused) {
				s.names[ev.ID] = name
				return s.format(ev) + s.drain()
			}
			s.t.Fatalf("%s: unexpected event while acquiring %s: %+v", d.Pos, name, ev)
		case r := <-resc:
			if r.err != nil && !errors.Is(r.err, ErrQueueFull) && !errors.Is(r.err, ErrDeadlineTooNear) {
				return fmt.Sprintf("%s: error: %v", name, r.err)
			}
			// Granted or refused at once: its event was published before
			// Acquire returned; put the result back for lease() and read
			// the event.
			ch <- r
			resc = nil
		case <-time.After(10 * time.Second):
			s.t.Fatalf("%s: acquire %s: no decision", d.Pos, name)
		}
	}
}

func (s *scenario) lease(name string) *Lease {
	if l, ok := s.leases[name]; ok {
		return l
	}
	select {
	case r := <-s.results[name]:
		if r.err != nil {
			s.t.Fatalf("%s has no lease: %v", name, r.err)
		}
		s.leases[name] = r.lease
		return r.lease
	case <-time.After(10 * time.Second):
		s.t.Fatalf("%s holds no lease", name)
		return nil
	}
}

func (s *scenario) format(ev Event) string {
	name := s.names[ev.ID]
	switch ev.Type {
	case EventQueued:
		return fmt.Sprintf("%s: queued (queued=%d)", name, ev.Queued)
	case EventGranted:
		return fmt.Sprintf("%s: granted %s after %v (inflight=%d/%d)", name, ev.Reason, ev.Waited, ev.InFlight, ev.Limits.InFlight)
	case EventRefused:
		return fmt.Sprintf("%s: refused: %s", name, ev.Reason)
	case EventReleased, EventExpired:
		return fmt.Sprintf("%s: %s (inflight=%d)", name, ev.Type, ev.InFlight)
	case EventCancelled:
		return fmt.Sprintf("%s: cancelled after %v", name, ev.Waited)
	case EventLimits:
		return fmt.Sprintf("limits: inflight=%d rate=%.2f burst=%d state=%s", ev.Limits.InFlight, ev.Limits.Rate, ev.Limits.Burst, ev.State)
	default:
		return string(ev.Type)
	}
}

// drain prints the events that happened since the last command, one per
// line, each on a new line.
func (s *scenario) drain() string {
	var b strings.Builder
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				return b.String() + "\n(events closed)"
			}
			b.WriteString("\n" + s.format(ev))
		default:
			return b.String()
		}
	}
}

func (s *scenario) print() string {
	st := s.g.Status()
	var b strings.Builder
	fmt.Fprintf(&b, "inflight=%d/%d rate=%.2f tokens=%.2f queued=%d paused=%t state=%s\n",
		st.InFlight, st.Limits.InFlight, st.Limits.Rate, st.Tokens, st.Queued, st.Paused, st.State)
	fmt.Fprintf(&b, "counters: admitted=%d deadline=%d bypassed=%d refused=%d cancelled=%d expired=%d",
		st.Counters.Admitted, st.Counters.DeadlineAdmitted, st.Counters.Bypassed, st.Counters.Refused, st.Counters.Cancelled, st.Counters.Expired)
	for _, w := range s.g.Queue() {
		fmt.Fprintf(&b, "\nqueue %d: %s class=%s tenant=%q", w.Position, s.names[w.ID], w.Class, w.Tenant)
	}
	var held []string
	for _, l := range s.g.Leases() {
		held = append(held, s.names[l.ID])
	}
	sort.Strings(held)
	if len(held) > 0 {
		fmt.Fprintf(&b, "\nheld: %s", strings.Join(held, " "))
	}
	return b.String()
}

func (s *scenario) run(d *datadriven.TestData) string {
	switch d.Cmd {
	case "init":
		return s.init(d)
	case "acquire":
		return s.acquire(d)
	case "release":
		var name string
		d.ScanArgs(s.t, "name", &name)
		s.lease(name).Release()
		return strings.TrimPrefix(s.drain(), "\n")
	case "cancel":
		var name string
		d.ScanArgs(s.t, "name", &name)
		s.cancels[name]()
		r := <-s.results[name]
		out := strings.TrimPrefix(s.drain(), "\n")
		if r.err != nil {
			out += fmt.Sprintf("\n%s returned: %v", name, r.err)
		}
		return out
	case "advance":
		s.clk.advance(mustDuration(s.t, d.CmdArgs[0].Key), s.g)
		return fmt.Sprintf("t=%v", s.clk.Now().Sub(s.start)) + s.drain()
	case "pressure":
		var v pressure.Values
		var err error
		for _, a := range d.CmdArgs {
			if a.Key == "unavailable" {
				err = pressure.ErrUnavailable
				continue
			}
			r, perr := pressure.ParseResource(a.Key)
			if perr != nil {
				s.t.Fatalf("%s: %v", d.Pos, perr)
			}
			d.ScanArgs(s.t, a.Key, &v[r])
		}
		s.sampler.set(v, err)
		return "ok"
	case "tick":
		// One controller interval: time moves, then the controller runs.
		n := 1
		if d.HasArg("n") {
			d.ScanArgs(s.t, "n", &n)
		}
		var b strings.Builder
		for i := 0; i < n; i++ {
			s.clk.advance(s.g.interval, s.g)
			s.g.tick(s.clk.Now())
			st := s.g.Status()
			fmt.Fprintf(&b, "tick %d: inflight=%d/%d rate=%.2f state=%s\n", i+1, st.InFlight, st.Limits.InFlight, st.Limits.Rate, st.State)
		}
		// Limits events are in the ticks' lines already.
		var rest []string
		for _, l := range strings.Split(strings.TrimPrefix(s.drain(), "\n"), "\n") {
			if l != "" && !strings.HasPrefix(l, "limits:") {
				rest = append(rest, l)
			}
		}
		return strings.TrimSuffix(b.String(), "\n") + strings.Join(append([]string{""}, rest...), "\n")
	case "pause":
		s.g.Pause()
		return "ok" + s.drain()
	case "resume":
		s.g.Resume()
		return "ok" + s.drain()
	case "set":
		_, err := s.g.UpdatePolicy(func(p *Policy) {
			for _, a := range d.CmdArgs {
				switch a.Key {
				case "inflight":
					d.ScanArgs(s.t, "inflight", &p.FixedInFlight)
				case "rate":
					d.ScanArgs(s.t, "rate", &p.FixedRate)
				case "cpu-target":
					d.ScanArgs(s.t, "cpu-target", &p.Targets[pressure.CPU])
				default:
					s.t.Fatalf("%s: set: unknown argument %q", d.Pos, a.Key)
				}
			}
		})
		if err != nil {
			return "error: " + err.Error()
		}
		return "ok" + s.drain()
	case "print":
		return s.print()
	case "close":
		s.g.Close()
		s.wg.Wait()
		var errs []string
		for name, ch := range s.results {
			select {
			case r := <-ch:
				if r.err != nil {
					errs = append(errs, fmt.Sprintf("%s: %v", name, r.err))
				}
			default:
			}
		}
		sort.Strings(errs)
		out := strings.TrimPrefix(s.drain(), "\n")
		if len(errs) > 0 {
			out += "\n" + strings.Join(errs, "\n")
		}
		return out
	default:
		s.t.Fatalf("%s: unknown command %q", d.Pos, d.Cmd)
		return ""
	}
}

func TestScenarios(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		s := &scenario{t: t}
		defer s.close()
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string { return s.run(d) })
	})
}
