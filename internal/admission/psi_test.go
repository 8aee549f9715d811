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
// /proc/pressure: busy-loop children make CPU pressure, which must lower
// the in-flight limit, and their end must let it climb again while starts
// keep waiting. It asserts direction only, within generous bounds, since
// other work on the machine moves the figures.
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
	p.MaxInFlightPerCore = 4
	g := newGate(t, Config{Policy: p, Pressure: sampler, Interval: 100 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(1)
	go func() { defer wg.Done(); _ = g.Run(ctx) }()

	// Starts that always wait keep the limit binding, so the controller
	// raises it whenever pressure allows. They hold without using CPU.
	const holders = 40
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

	// Let the limit settle without the hog: it climbs towards the ceiling
	// unless other work on the machine holds it down.
	baseline := waitLimit(t, g, 30*time.Second, func(n int) bool { return n >= g.mu.bounds.maxInFlight })
	hogs := startHogs(t, 2*runtime.NumCPU()+1)
	low := waitLimit(t, g, 20*time.Second, func(n int) bool { return n < baseline && n <= g.mu.bounds.minInFlight+1 })
	if low >= baseline {
		t.Fatalf("in-flight limit %d under a CPU hog, want below %d before it", low, baseline)
	}
	stopHogs(hogs)
	high := waitLimit(t, g, 30*time.Second, func(n int) bool { return n >= low+2 })
	if high < low+2 {
		t.Fatalf("in-flight limit %d after the hog ended, want at least %d", high, low+2)
	}
	t.Logf("in-flight limit: %d before the hog, %d under it, %d after it", baseline, low, high)
}

// waitLimit polls the in-flight limit until done says so or within
// passes, and returns the last value seen.
func waitLimit(t *testing.T, g *Gate, within time.Duration, done func(int) bool) int {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		st := g.Status()
		n := st.Limits.InFlight
		if testing.Verbose() {
			t.Logf("limit %d/%d cpu %.2f (raw %.2f) io %.2f mem %.2f state %s queued %d", st.InFlight, n,
				st.Pressure.Some[pressure.CPU], st.Pressure.Raw[pressure.CPU], st.Pressure.Some[pressure.IO], st.Pressure.Some[pressure.Memory], st.State, st.Queued)
		}
		if done(n) || time.Now().After(deadline) {
			return n
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
