package kubebench

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/procfs"

	"github.com/startgate/startgate/harness/testbed"
	pb "github.com/startgate/startgate/proto/startgate/v1"
)

// CPUSample is one interval of the node's CPU during a run.
type CPUSample struct {
	At time.Duration `json:"at_ns"` // the interval's end, since the run's start
	// Idle is the interval's idle time (idle and iowait over every core)
	// in cores: 2 on an idle 2-core node.
	Idle float64 `json:"idle_cores"`
	// Queued is startgated's queue at the interval's start; -1 when no
	// startgated runs or its Status failed.
	Queued int32 `json:"queued"`
}

// cpuSampleEvery is the CPU sampler's period on this machine's node.
const cpuSampleEvery = 250 * time.Millisecond

// procIdle is this machine's idle time so far, idle and iowait, in
// seconds, over the CPUs of list ("" is every CPU), and their count.
func procIdle(list string) (float64, int, error) {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return 0, 0, err
	}
	st, err := fs.Stat()
	if err != nil {
		return 0, 0, err
	}
	if list == "" {
		return st.CPUTotal.Idle + st.CPUTotal.Iowait, len(st.CPU), nil
	}
	set, err := testbed.ParseCPUs(list)
	if err != nil {
		return 0, 0, err
	}
	var idle float64
	for _, c := range set.List() {
		s, ok := st.CPU[int64(c)]
		if !ok {
			return 0, 0, fmt.Errorf("kubebench: CPU %d of %q is not in /proc/stat", c, list)
		}
		idle += s.Idle + s.Iowait
	}
	return idle, set.Size(), nil
}

// sampleCPU reads the node's idle CPU counter (and startgated's queue,
// when api is set) every every until ctx ends, and returns the intervals.
func sampleCPU(ctx context.Context, read func(context.Context) (float64, int, bool), api pb.StartgateClient, start time.Time, every time.Duration) []CPUSample {
	idle := func() (float64, bool) {
		v, _, ok := read(ctx)
		return v, ok
	}
	queued := func() int32 {
		if api == nil {
			return -1
		}
		st, err := api.Status(ctx, &pb.StatusRequest{})
		if err != nil {
			return -1
		}
		return st.GetQueueLength()
	}
	var out []CPUSample
	prevIdle, ok := idle()
	if !ok {
		return nil
	}
	prevAt, q := time.Now(), queued()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return out
		case <-tick.C:
		}
		now := time.Now()
		cur, ok := idle()
		if !ok {
			continue
		}
		if dt := now.Sub(prevAt).Seconds(); dt > 0 {
			out = append(out, CPUSample{At: now.Sub(start), Idle: (cur - prevIdle) / dt, Queued: q})
		}
		prevIdle, prevAt, q = cur, now, queued()
	}
}

// IdleCPU is what a run left idle.
type IdleCPU struct {
	// Run is the idle share of the node's CPU over the whole run (idle
	// core-seconds over cores × the run's length).
	Run float64 `json:"run"`
	// WhileWaiting is the idle core-seconds of the intervals that began
	// with starts queued in startgated, over cores × the run's length:
	// the CPU a work-conserving gate would have used. -1 without
	// startgated.
	WhileWaiting float64 `json:"while_waiting"`
	// Waiting is the time with starts queued.
	Waiting time.Duration `json:"waiting_ns"`
}

// idleOf sums the samples of a run on cores cores.
func idleOf(samples []CPUSample, cores int) IdleCPU {
	out := IdleCPU{WhileWaiting: -1}
	if len(samples) == 0 || cores < 1 {
		return out
	}
	var all, waiting float64
	var prev time.Duration
	gate := false
	for _, s := range samples {
		dt := (s.At - prev).Seconds()
		prev = s.At
		all += s.Idle * dt
		if s.Queued >= 0 {
			gate = true
		}
		if s.Queued > 0 {
			waiting += s.Idle * dt
			out.Waiting += time.Duration(dt * float64(time.Second))
		}
	}
	total := float64(cores) * samples[len(samples)-1].At.Seconds()
	if total <= 0 {
		return out
	}
	out.Run = all / total
	if gate {
		out.WhileWaiting = waiting / total
	}
	return out
}
