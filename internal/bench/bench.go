package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"time"

	"github.com/startgate/startgate/internal/testbed"
)

// Defaults of Options.
const (
	DefaultInitCPU  = 200 * time.Millisecond
	DefaultDeadline = 5 * time.Minute
)

// Options configure Run. Zero fields take the defaults noted.
type Options struct {
	// Pods is the burst size; 0 means 40.
	Pods int
	// Rounds is how many times every mode runs; 0 means 1.
	Rounds int
	// Modes run in this order in odd rounds and reversed in even ones,
	// so no mode always follows the same one; nil means DefaultModes.
	Modes []Mode
	// InitCPU is the CPU time a container's init loop is calibrated to;
	// 0 means 200 ms.
	InitCPU time.Duration
	// Loops fixes the loop count and skips the calibration.
	Loops int
	// Lone is how many pods are run alone to measure one pod's time
	// (the median is used); 0 means 3.
	Lone int
	// Kubelet is the client's timeouts and back-off; zero means kubelet's.
	Kubelet Kubelet
	// Deadline bounds one burst; pods not ready by then failed. 0 means
	// 5 minutes.
	Deadline time.Duration
	// Quiet is the wait for a quiet node before each burst; zero means
	// DefaultQuiet.
	Quiet Quiet
	// Daemon is the command that runs startgated; nil re-executes this
	// binary (see RunChild). The CRI flags are appended.
	Daemon []string
	// DaemonConfig is TOML appended to startgated's generated config.
	DaemonConfig string
	// Progress receives progress lines; nil means none.
	Progress io.Writer
	// Command is how this run was invoked, for the report.
	Command string
	// Testbed, if not nil, is a started testbed to use instead of
	// starting one; Run tears its pods down but leaves it running.
	Testbed *testbed.Testbed
}

func (o *Options) withDefaults() error {
	if o.Pods == 0 {
		o.Pods = 40
	}
	if o.Rounds == 0 {
		o.Rounds = 1
	}
	if o.Modes == nil {
		m, err := ParseModes(DefaultModes)
		if err != nil {
			return err
		}
		o.Modes = m
	}
	if o.InitCPU == 0 {
		o.InitCPU = DefaultInitCPU
	}
	if o.Lone == 0 {
		o.Lone = 3
	}
	d := DefaultKubelet()
	if o.Kubelet.Timeout == 0 {
		o.Kubelet.Timeout = d.Timeout
	}
	if o.Kubelet.Backoff == 0 {
		o.Kubelet.Backoff = d.Backoff
	}
	if o.Deadline == 0 {
		o.Deadline = DefaultDeadline
	}
	if o.Quiet == (Quiet{}) {
		o.Quiet = DefaultQuiet()
	}
	switch {
	case o.Pods < 1:
		return fmt.Errorf("bench: pods %d: want at least 1", o.Pods)
	case o.Rounds < 1:
		return fmt.Errorf("bench: rounds %d: want at least 1", o.Rounds)
	case len(o.Modes) == 0:
		return errors.New("bench: no modes")
	case o.InitCPU < 0, o.Loops < 0, o.Lone < 1, o.Deadline < 0, o.Kubelet.Timeout < 0, o.Kubelet.Backoff < 0:
		return errors.New("bench: negative durations or counts")
	case o.Quiet.Interval <= 0 || o.Quiet.Samples < 1:
		return errors.New("bench: quiet: interval and samples must be positive")
	}
	return nil
}

// Calibration is what one pod does alone on a quiet node.
type Calibration struct {
	// Loops is the init loop's iteration count.
	Loops int `json:"loops"`
	// CPU is the median CPU time of a lone pod's container at its ready
	// line: the init work's CPU time.
	CPU time.Duration `json:"cpu_ns"`
	// Init is the median time from start line to ready line of a lone
	// pod: the init work's wall time, alone.
	Init time.Duration `json:"init_ns"`
	// Single is the median time from RunPodSandbox to the ready line of
	// a lone pod: the unit of the ideal bound.
	Single time.Duration `json:"single_ns"`
}

// ModeResult is one mode's figures over all rounds.
type ModeResult struct {
	Mode    string  `json:"mode"`
	Via     string  `json:"via"`
	Limit   int     `json:"limit,omitempty"`
	Summary Summary `json:"summary"`
	// VsDirect is Summary divided by direct's; absent without a direct
	// mode.
	VsDirect *Ratios `json:"vs_direct,omitempty"`
}

// Result is a whole run.
type Result struct {
	Command     string       `json:"command"`
	Pods        int          `json:"pods"`
	Rounds      int          `json:"rounds"`
	Cores       int          `json:"cores"`
	Runtime     string       `json:"runtime"`
	Snapshotter string       `json:"snapshotter"`
	Calibration Calibration  `json:"calibration"`
	Modes       []ModeResult `json:"modes"`
	// Ideal is Ideal(Pods, Cores, Calibration.Single).
	Ideal         Summary  `json:"ideal"`
	IdealVsDirect *Ratios  `json:"ideal_vs_direct,omitempty"`
	Bursts        []Burst  `json:"bursts"`
	Warnings      []string `json:"warnings,omitempty"`
	// Interrupted: the run ended early; the figures cover what ran.
	Interrupted bool          `json:"interrupted,omitempty"`
	Took        time.Duration `json:"took_ns"`
}

// Run runs the benchmark: a testbed, startgated when a mode needs it, the
// calibration, then every mode's burst in every round, each on a quiet
// node and torn down after. Everything it started is stopped before it
// returns, also when ctx ends. On an error after bursts have run it
// returns the result so far (Interrupted) along with the error.
func Run(ctx context.Context, opts Options) (_ *Result, err error) {
	if err := opts.withDefaults(); err != nil {
		return nil, err
	}
	t0 := time.Now()
	pr := newProgress(opts.Progress)
	withGate := slices.ContainsFunc(opts.Modes, func(m Mode) bool { return m.Via == Startgate })
	pr.line("starting a testbed containerd%s", map[bool]string{true: " and startgated in front of it", false: ""}[withGate])
	n, err := startNode(ctx, &opts, withGate)
	if err != nil {
		return nil, err
	}
	defer func() {
		pr.line("cleaning up: pods, startgated, containerd")
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		err = errors.Join(err, n.stop(stopCtx))
	}()

	res := &Result{Command: opts.Command, Pods: opts.Pods, Rounds: opts.Rounds, Cores: runtime.NumCPU(),
		Snapshotter: n.tb.Snapshotter()}
	if v, verr := n.clients[Direct].Version(ctx, "v1"); verr == nil {
		res.Runtime = v.GetRuntimeName() + " " + v.GetRuntimeVersion()
	}
	b := &bencher{opts: &opts, node: n, pr: pr, res: res}
	err = b.run(ctx)
	if err != nil && len(res.Bursts) == 0 {
		return nil, err
	}
	res.Interrupted = err != nil
	res.summarize(opts.Modes)
	res.Took = time.Since(t0)
	return res, err
}

// bencher runs the steps of one Run.
type bencher struct {
	opts *Options
	node *node
	pr   *progress
	res  *Result
}

func (b *bencher) run(ctx context.Context) error {
	if err := b.quiet(ctx, "calibration"); err != nil {
		return err
	}
	if err := b.calibrate(ctx); err != nil {
		return err
	}
	work := Workload{Kind: "cpu", Loops: b.res.Calibration.Loops}
	for r := 1; r <= b.opts.Rounds; r++ {
		order := slices.Clone(b.opts.Modes)
		if r%2 == 0 {
			slices.Reverse(order)
		}
		for _, m := range order {
			label := fmt.Sprintf("round %d/%d %s", r, b.opts.Rounds, m.Name)
			if err := b.quiet(ctx, label); err != nil {
				return err
			}
			burst, err := b.burst(ctx, m, r, b.opts.Pods, work, label, false)
			if err != nil {
				return err
			}
			b.res.Bursts = append(b.res.Bursts, burst)
			s := Summarize([]Burst{burst})
			b.pr.line("%s: %d/%d ready, p50 %s, makespan %s, %d failed, %d retries",
				label, s.Ready, s.Pods, secs(s.P50), secs(s.Makespan), s.Failed, s.Retries)
		}
	}
	return nil
}

// burst runs one burst and tears it down; the error is the teardown's or
// ctx's.
func (b *bencher) burst(ctx context.Context, m Mode, round, pods int, w Workload, label string, measureCPU bool) (Burst, error) {
	rs := b.node.clients[m.Via]
	burst := runBurst(ctx, burstSpec{
		mode: m, round: round, pods: pods, workload: w, rs: rs,
		image: AppImage, logRoot: b.node.tb.Dir() + "/pods", kubelet: b.opts.Kubelet,
		deadline: b.opts.Deadline, poll: 50 * time.Millisecond, measureCPU: measureCPU,
		progress: func(ready, failed int, el time.Duration) {
			b.pr.status("%s: %d/%d ready, %d failed, %s", label, ready, pods, failed, secs(el))
		},
	})
	if err := ctx.Err(); err != nil {
		return burst, err
	}
	b.pr.status("%s: tearing down", label)
	if err := teardown(ctx, rs); err != nil {
		return burst, err
	}
	return burst, nil
}

func (b *bencher) quiet(ctx context.Context, before string) error {
	cpu, ok, err := waitQuiet(ctx, b.opts.Quiet, func(cpu float64, waited time.Duration) {
		b.pr.status("waiting for a quiet node before %s: CPU pressure %.2f (%s)", before, cpu, secs(waited))
	})
	if err != nil {
		return err
	}
	if !ok {
		w := fmt.Sprintf("the node was not quiet before %s: CPU pressure %.2f after %s", before, cpu, secs(b.opts.Quiet.Max))
		b.res.Warnings = append(b.res.Warnings, w)
		b.pr.line("warning: %s", w)
	}
	return nil
}

// probeLoops is the calibration probe's loop count: about 0.15 s of
// busybox shell on this kind of machine.
const probeLoops = 50000

// calibrate sizes the init loop to opts.InitCPU of CPU time (unless
// opts.Loops fixes it): probe pods, up to three, each rescaling the loop
// count from the containers' CPU time so far (CRI stats, which other work
// on the machine stretches less than wall time) until one lands within
// 10%. Then opts.Lone pods run alone, one after the other, and the
// medians are kept.
func (b *bencher) calibrate(ctx context.Context) error {
	loops := b.opts.Loops
	if loops == 0 {
		loops = probeLoops
		// Per-loop cost, pooled over the probes so far: one probe's
		// noise does not swing the next.
		var sumLoops int
		var sumCPU time.Duration
		for i := range 3 {
			if err := b.quiet(ctx, "a calibration probe"); err != nil {
				return err
			}
			pod, err := b.lonePod(ctx, "probe", i, loops)
			if err != nil {
				return err
			}
			if pod.CPU <= 0 {
				return fmt.Errorf("bench: calibration probe: no CPU time from ContainerStats: %v", pod.Errors)
			}
			b.pr.line("calibration probe %d: %d loops used %s of CPU", i+1, loops, secs(pod.CPU))
			off := float64(pod.CPU)/float64(b.opts.InitCPU) - 1
			if off > -0.1 && off < 0.1 {
				break
			}
			sumLoops += loops
			sumCPU += pod.CPU
			loops = max(1, int(float64(sumLoops)*float64(b.opts.InitCPU)/float64(sumCPU)))
		}
	}
	var inits, cpus, singles []time.Duration
	for i := range b.opts.Lone {
		if err := b.quiet(ctx, "a lone pod"); err != nil {
			return err
		}
		pod, err := b.lonePod(ctx, "alone", i, loops)
		if err != nil {
			return err
		}
		inits = append(inits, pod.Init)
		cpus = append(cpus, pod.CPU)
		singles = append(singles, pod.Ready)
	}
	for _, xs := range [][]time.Duration{inits, cpus, singles} {
		slices.Sort(xs)
	}
	c := Calibration{Loops: loops, Init: Percentile(inits, 50), CPU: Percentile(cpus, 50), Single: Percentile(singles, 50)}
	b.res.Calibration = c
	b.pr.line("calibrated: %d loops = %s of CPU, %s of init alone; one pod alone is ready %s after RunPodSandbox",
		loops, secs(c.CPU), secs(c.Init), secs(c.Single))
	return nil
}

// lonePod runs one pod alone, direct, and tears it down.
func (b *bencher) lonePod(ctx context.Context, name string, i, loops int) (Pod, error) {
	burst, err := b.burst(ctx, Mode{Name: name, Via: Direct}, i, 1, Workload{Kind: "cpu", Loops: loops}, name, true)
	if err != nil {
		return Pod{}, err
	}
	pod := burst.Pods[0]
	if pod.Failed() {
		return pod, fmt.Errorf("bench: %s pod failed: %s %v", name, pod.FailReason, pod.Errors)
	}
	return pod, nil
}

// summarize fills in the per-mode figures, the ideal bound and the ratios
// to direct.
func (r *Result) summarize(modes []Mode) {
	r.Modes = r.Modes[:0]
	direct := -1
	for _, m := range modes {
		var bursts []Burst
		for _, b := range r.Bursts {
			if b.Mode == m.Name {
				bursts = append(bursts, b)
			}
		}
		if len(bursts) == 0 {
			continue
		}
		r.Modes = append(r.Modes, ModeResult{Mode: m.Name, Via: m.Via.String(), Limit: m.Limit, Summary: Summarize(bursts)})
		if m.Via == Direct && m.Limit == 0 {
			direct = len(r.Modes) - 1
		}
	}
	r.Ideal = Ideal(r.Pods, r.Cores, r.Calibration.Single)
	if direct < 0 {
		return
	}
	base := r.Modes[direct].Summary
	for i := range r.Modes {
		rt := RatiosTo(r.Modes[i].Summary, base)
		r.Modes[i].VsDirect = &rt
	}
	rt := RatiosTo(r.Ideal, base)
	r.IdealVsDirect = &rt
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }
