package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/startgate/startgate/internal/pressure"
)

// Quiet says when the node counts as quiet between two bursts, so that
// one mode's teardown (CPU "some" pressure near 0.3 here while 40 pods go)
// does not land in the next mode's burst.
type Quiet struct {
	// CPU is the highest CPU "some" stall fraction that counts as quiet.
	CPU float64
	// Interval is the sampling interval; Samples in a row must be quiet.
	Interval time.Duration
	Samples  int
	// Max bounds the wait; past it the next burst starts anyway, with a
	// warning (a busy machine shared with other work never gets quiet).
	Max time.Duration
}

// DefaultQuiet: 0.1 CPU some for two 500 ms samples in a row, at most 60 s.
func DefaultQuiet() Quiet {
	return Quiet{CPU: 0.1, Interval: 500 * time.Millisecond, Samples: 2, Max: 60 * time.Second}
}

// WaitQuiet waits until the node is quiet, ctx ends or q.Max passes. It
// returns the last CPU pressure seen and whether the node got quiet; with
// no PSI it waits one interval per sample and calls that quiet.
func WaitQuiet(ctx context.Context, q Quiet, report func(cpu float64, waited time.Duration)) (float64, bool, error) {
	src, err := pressure.NewProcSource("")
	var s *pressure.Sampler
	if err == nil {
		s, err = pressure.NewSampler(src, 1)
	}
	if err == nil {
		_, err = s.Sample(time.Now())
	}
	noPSI := err != nil
	t0 := time.Now()
	tick := time.NewTicker(q.Interval)
	defer tick.Stop()
	quiet := 0
	var cpu float64
	for {
		select {
		case <-ctx.Done():
			return cpu, false, ctx.Err()
		case now := <-tick.C:
			if noPSI {
				quiet++
			} else {
				smp, err := s.Sample(now)
				if err != nil {
					return cpu, false, fmt.Errorf("bench: read CPU pressure: %w", err)
				}
				cpu = smp.Raw[pressure.CPU]
				if cpu <= q.CPU {
					quiet++
				} else {
					quiet = 0
				}
			}
			if report != nil {
				report(cpu, now.Sub(t0))
			}
			if quiet >= q.Samples {
				return cpu, true, nil
			}
			if now.Sub(t0) >= q.Max {
				return cpu, false, nil
			}
		}
	}
}
