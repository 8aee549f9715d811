package admission

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/startgate/startgate/internal/pressure"
)

// TestRealCPUHogMovesLimits runs the controller on the real
// /proc/pressure. The machine may already be busy, so the test first
// measures where the controller settles on it as it is (the baseline
// limit and smoothed CPU stall), then adds busy-loop children and asserts
// direction against that baseline: the hog raises CPU pressure above the
// baseline and the target, and the in-flight limit ends below where it
// was before the hog, or, when the baseline was already the floor, stays
// at the floor instead of growing. A controller that ignores pressure
// fails either way: starts that always wait make it grow. After the hog
// the limit must climb again, checked only on ticks whose pressure leaves
// room to grow, since other work may not. Nothing is asserted about how
// fast: the waits are only deadlines.
func TestRealCPUHogMovesLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("real PSI test takes seconds")
	}
	src, err := pressure.NewProcSource("")
	if err == nil {
		_, err = src.Read()
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and PSI cannot be read: %v", err)
		}
		t.Skipf("no PSI here: %v", err)
	}
	sampler, err := pressure.NewSampler(src, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	p := DefaultPolicy()
	p.Targets[pressure.CPU] = 0.5
	// Only CPU is under test: another job's IO or reclaim on a busy
	// machine would otherwise hold the limit wherever it liked.
	p.Targets[pressure.IO], p.Targets[pressure.Memory] = 1, 1
	p.MaxInFlightPerCore = 4
	g := newGate(t, Config{Policy: p, Pressure: sampler, Interval: 100 * time.Millisecond})
	g.mu.Lock()
	b := g.mu.bounds
	g.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(1)
	go func() { defer wg.Done(); _ = g.Run(ctx) }()

	// Starts that always wait keep the limit binding, so the controller
	// raises it whenever pressure allows. They hold without using CPU;
	// there are more of them than the ceiling so that some always wait.
	holders := b.maxInFlight + 8
	for i := 0; i < holders; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				l, err := g.Acquire(ctx, Request{Class: Normal})
				if err != nil {
					if !errors.Is(err, context.Canceled) && !errors.Is(err, ErrClosed) {
						t.Errorf("Acquire: %v", err)
					}
					return
				}
				select {
				case <-ctx.Done():
				case <-time.After(500 * time.Millisecond):
				}
				l.Release()
			}
		}()
	}
	cpu := func(st Status) float64 { return st.Pressure.Some[pressure.CPU] }
	target := p.Targets[pressure.CPU]

	// Baseline: where the controller settles on this machine as it is,
	// at the ceiling or unchanged for two seconds (or wherever it is
	// after 30 s, should other work keep moving it).
	const settleTicks = 20
	var recent []float64
	same, last := 0, -1
	base := watchTicks(t, g, 30*time.Second, func(st Status) bool {
		recent = append(recent, cpu(st))
		if len(recent) > settleTicks {
			recent = recent[1:]
		}
		if st.Limits.InFlight == last {
			same++
		} else {
			same, last = 0, st.Limits.InFlight
		}
		return (st.Limits.InFlight == b.maxInFlight && same >= 5) || same >= settleTicks
	})
	baseLimit, baseCPU := base.Limits.InFlight, mean(recent)
	t.Logf("baseline: in-flight limit %d (floor %d, ceiling %d), smoothed CPU stall %.2f (target %.2f)",
		baseLimit, b.minInFlight, b.maxInFlight, baseCPU, target)

	// Under the hog. Above the floor, the limit must fall below the
	// baseline; at the floor, it must stay there for a second of ticks
	// while pressure is above the target.
	hogs := startHogs(t, 2*runtime.NumCPU()+1)
	atFloor := 0
	under := watchTicks(t, g, 20*time.Second, func(st Status) bool {
		pressed := cpu(st) > target && cpu(st) > baseCPU
		if baseLimit > b.minInFlight {
			return pressed && st.Limits.InFlight < baseLimit
		}
		if pressed && st.Limits.InFlight == b.minInFlight {
			atFloor++
		} else {
			atFloor = 0
		}
		return atFloor >= 10
	})
	low := under.Limits.InFlight
	switch {
	case !(cpu(under) > target && cpu(under) > baseCPU):
		t.Fatalf("smoothed CPU stall %.2f under %d CPU hogs, want above the target %.2f and the baseline %.2f",
			cpu(under), len(hogs), target, baseCPU)
	case baseLimit > b.minInFlight && low >= baseLimit:
		t.Fatalf("in-flight limit %d under a CPU hog (CPU stall %.2f), want below the baseline %d", low, cpu(under), baseLimit)
	case baseLimit == b.minInFlight && low != b.minInFlight:
		t.Fatalf("in-flight limit %d under a CPU hog (CPU stall %.2f), want it held at the floor %d where the baseline was",
			low, cpu(under), b.minInFlight)
	case baseLimit == b.minInFlight && atFloor < 10:
		t.Fatalf("in-flight limit left the floor %d under a CPU hog: %d ticks in a row at it above target, want 10", b.minInFlight, atFloor)
	}

	// After the hog: every tick whose pressure leaves room to grow (each
	// resource under GrowBelow of its target) must raise the binding
	// limit, so five such ticks without it ever rising above its lowest
	// point mean the controller ignores pressure. Without such ticks the
	// machine is too busy to tell.
	stopHogs(hogs)
	trough, roomy := g.Status().Limits.InFlight, 0
	after := watchTicks(t, g, 30*time.Second, func(st Status) bool {
		if st.Limits.InFlight > trough {
			return true
		}
		trough = st.Limits.InFlight
		if hasRoom(p, st.Pressure) {
			roomy++
		}
		return roomy >= 5
	})
	high := after.Limits.InFlight
	switch {
	case high > trough:
	case roomy > 0:
		t.Fatalf("in-flight limit %d after the hog ended, after %d ticks with room to grow (CPU stall %.2f); want above %d",
			high, roomy, cpu(after), trough)
	default:
		t.Logf("no tick with room to grow after the hog (CPU stall %.2f): recovery not checked", cpu(after))
	}
	t.Logf("in-flight limit: %d before the hog, %d under it, %d at its lowest after it, then %d", baseLimit, low, trough, high)
}

// hasRoom says whether a sample leaves the controller room to grow: every
// measured resource under GrowBelow of its target.
func hasRoom(p Policy, s pressure.Sample) bool {
	for _, r := range pressure.Resources {
		if s.Present[r] && s.Some[r] >= p.GrowBelow*p.Targets[r] {
			return false
		}
	}
	return true
}

func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	sum := 0.0
	for _, x := range xs {
		sum += x
	}
	return sum / float64(len(xs))
}

// watchTicks calls done with the gate's status once per controller tick
// it sees (by LastTick) until done says so or within passes, and returns
// the last status seen.
func watchTicks(t *testing.T, g *Gate, within time.Duration, done func(Status) bool) Status {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var seen time.Time
	var st Status
	for {
		st = g.Status()
		if !st.LastTick.Equal(seen) {
			seen = st.LastTick
			if testing.Verbose() {
				t.Logf("limit %d/%d cpu %.2f (raw %.2f) io %.2f mem %.2f state %s queued %d", st.InFlight, st.Limits.InFlight,
					st.Pressure.Some[pressure.CPU], st.Pressure.Raw[pressure.CPU], st.Pressure.Some[pressure.IO], st.Pressure.Some[pressure.Memory], st.State, st.Queued)
			}
			if done(st) {
				return st
			}
		}
		if time.Now().After(deadline) {
			return st
		}
		<-tick.C
	}
}

func startHogs(t *testing.T, n int) []*exec.Cmd {
	t.Helper()
	var cmds []*exec.Cmd
	for i := 0; i < n; i++ {
		c := exec.Command("/bin/sh", "-c", "while :; do :; done")
		if err := c.Start(); err != nil {
			t.Fatalf("start CPU hog: %v", err)
		}
		cmds = append(cmds, c)
	}
	t.Cleanup(func() { stopHogs(cmds) })
	return cmds
}

func stopHogs(cmds []*exec.Cmd) {
	for _, c := range cmds {
		if c.ProcessState == nil {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	}
}
