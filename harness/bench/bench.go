package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/startgate/startgate/harness/testbed"
)

// Defaults of Options.
const (
	DefaultInitCPU         = 200 * time.Millisecond
	DefaultDeadline        = 5 * time.Minute
	DefaultPatchSize       = 20 << 20
	DefaultPrefetchTimeout = 2 * time.Minute
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
	// Workload is the init work's kind: WorkCPU (""), WorkIO or
	// WorkMixed.
	Workload string
	// InitCPU is the CPU time a container's init loop is calibrated to;
	// 0 means 200 ms.
	InitCPU time.Duration
	// Loops fixes the loop count and skips the CPU calibration.
	Loops int
	// IOBytes fixes the IO work's size and skips its calibration (which
	// sizes it so that a lone pod's IO init takes as long as its CPU
	// init).
	IOBytes int64
	// PatchSize is the size of the layer each patch replaces; 0 means
	// 20 MiB.
	PatchSize int
	// RegistryBandwidth, when positive, caps the bytes per second from
	// the registry to the node (pulls and prefetches, all together)
	// across a testbed.Link: a remote registry's link. 0 is loopback
	// speed.
	RegistryBandwidth float64
	// RegistryRTT is the round trip between the node and the registry
	// (testbed.Link); 0 is loopback.
	RegistryRTT time.Duration
	// RegistryToken: the registry asks for a bearer token, from a token
	// service as far away as itself, as public registries do.
	RegistryToken bool
	// PullInSandbox pulls after RunPodSandbox, inside the pod's sync as
	// kubelet's SyncPod does (sandbox, then for the container: pull,
	// create, start); false pulls before the sandbox, the order issue 5
	// lists. Pulls are serialized node-wide either way.
	PullInSandbox bool
	// PrefetchTimeout bounds the wait for startgated to show a patch
	// prefetched; past it the burst runs anyway, with a warning. 0 means
	// 2 minutes.
	PrefetchTimeout time.Duration
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
	// DaemonLog, if set, is where startgated's log (JSON lines) is
	// copied when it has stopped; it is otherwise removed with its
	// directory.
	DaemonLog string
	// Progress receives progress lines; nil means none.
	Progress io.Writer
	// Command is how this run was invoked, for the report.
	Command string
	// Testbed, if not nil, is a started testbed to use instead of
	// starting one; Run tears its pods down but leaves it running.
	Testbed *testbed.Testbed
	// Registry, if not nil, is a started testbed registry to push the
	// app image to instead of starting one; Run leaves it running.
	Registry *testbed.Registry
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
	if o.Workload == "" {
		o.Workload = WorkCPU
	}
	if _, err := ParseWorkload(o.Workload); err != nil {
		return err
	}
	if o.InitCPU == 0 {
		o.InitCPU = DefaultInitCPU
	}
	if o.PatchSize == 0 {
		o.PatchSize = DefaultPatchSize
	}
	if o.PrefetchTimeout == 0 {
		o.PrefetchTimeout = DefaultPrefetchTimeout
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
	case o.InitCPU < 0, o.Loops < 0, o.IOBytes < 0, o.RegistryBandwidth < 0, o.RegistryRTT < 0, o.PatchSize < 0, o.PrefetchTimeout < 0,
		o.Lone < 1, o.Deadline < 0, o.Kubelet.Timeout < 0, o.Kubelet.Backoff < 0:
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
	// IOBytes is the IO work's size; IOInit the median init time of a
	// lone IO pod. Zero for the cpu workload.
	IOBytes int64         `json:"io_bytes,omitempty"`
	IOInit  time.Duration `json:"io_init_ns,omitempty"`
	// Single is the median time from RunPodSandbox to the ready line of
	// a lone pod (of each kind the workload has): the unit of the ideal
	// bound.
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
	Command   string `json:"command"`
	Workload  string `json:"workload"`
	PatchSize int    `json:"patch_size"`
	// RegistryBandwidth is Options.RegistryBandwidth, bytes per second.
	RegistryBandwidth float64       `json:"registry_bandwidth,omitempty"`
	RegistryRTT       time.Duration `json:"registry_rtt_ns,omitempty"`
	RegistryToken     bool          `json:"registry_token,omitempty"`
	Pods              int           `json:"pods"`
	Rounds            int           `json:"rounds"`
	Cores             int           `json:"cores"`
	Runtime           string        `json:"runtime"`
	Snapshotter       string        `json:"snapshotter"`
	Calibration       Calibration   `json:"calibration"`
	Modes             []ModeResult  `json:"modes"`
	// Ideal is Ideal(Pods, Cores, Calibration.Single).
	Ideal         Summary  `json:"ideal"`
	IdealVsDirect *Ratios  `json:"ideal_vs_direct,omitempty"`
	Bursts        []Burst  `json:"bursts"`
	Warnings      []string `json:"warnings,omitempty"`
	// Interrupted: the run ended early; the figures cover what ran.
	Interrupted bool          `json:"interrupted,omitempty"`
	Took        time.Duration `json:"took_ns"`
	// Chart is where the chart was written, when it was.
	Chart string `json:"chart,omitempty"`
}

// Run runs the benchmark: a testbed and its registry, the app image
// pulled, startgated when a mode needs it, the calibration, then every
// mode's burst in every round, each after a patch of the app image (and
// for startgate-prefetch, its prefetch), on a quiet node, torn down
// after. Everything it started is stopped before it
// returns, also when ctx ends. On an error after bursts have run it
// returns the result so far (Interrupted) along with the error.
func Run(ctx context.Context, opts Options) (_ *Result, err error) {
	if err := opts.withDefaults(); err != nil {
		return nil, err
	}
	t0 := time.Now()
	pr := newProgress(opts.Progress)
	withGate := slices.ContainsFunc(opts.Modes, func(m Mode) bool { return m.Via == Startgate })
	withPrefetch := slices.ContainsFunc(opts.Modes, func(m Mode) bool { return m.Prefetch })
	pr.line("starting a testbed containerd, its registry (app image: busybox + %s layer)%s", mib(int64(opts.PatchSize)),
		map[bool]string{true: " and startgated in front of it", false: ""}[withGate])
	n, err := startNode(ctx, &opts, withGate, withPrefetch)
	if err != nil {
		return nil, err
	}
	defer func() {
		pr.line("cleaning up: pods, startgated, containerd, the registry")
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		err = errors.Join(err, n.stop(stopCtx))
	}()

	res := &Result{Command: opts.Command, Workload: opts.Workload, PatchSize: opts.PatchSize, RegistryBandwidth: opts.RegistryBandwidth,
		RegistryRTT: opts.RegistryRTT, RegistryToken: opts.RegistryToken, Pods: opts.Pods, Rounds: opts.Rounds, Cores: runtime.NumCPU(),
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
	lone int // lone pods so far, for their names
}

func (b *bencher) run(ctx context.Context) error {
	if err := b.quiet(ctx, "calibration"); err != nil {
		return err
	}
	if err := b.calibrate(ctx); err != nil {
		return err
	}
	c := b.res.Calibration
	work := Workload{Kind: b.opts.Workload, Loops: c.Loops, IOBytes: c.IOBytes}
	total := b.opts.Rounds * len(b.opts.Modes)
	for r := 1; r <= b.opts.Rounds; r++ {
		order := slices.Clone(b.opts.Modes)
		if r%2 == 0 {
			slices.Reverse(order)
		}
		for _, m := range order {
			label := fmt.Sprintf("burst %d/%d, round %d/%d %s", len(b.res.Bursts)+1, total, r, b.opts.Rounds, m.Name)
			if err := b.quiet(ctx, label); err != nil {
				return err
			}
			burst, err := b.patchAndBurst(ctx, m, r, work, label)
			if err != nil {
				return err
			}
			b.res.Bursts = append(b.res.Bursts, burst)
			s := Summarize([]Burst{burst})
			b.pr.line("%s: %d/%d ready, p50 %s, p99 %s, makespan %s, first pull %s, %d failed, %d retries",
				label, s.Ready, s.Pods, secs(s.P50), secs(s.P99), secs(s.Makespan), secs(s.FirstPull), s.Failed, s.Retries)
		}
	}
	return nil
}

// patchAndBurst pushes a patch of the app image, prefetches it for a
// prefetch mode, waits for a quiet node again and runs the burst, every
// pod pulling the patched tag first.
func (b *bencher) patchAndBurst(ctx context.Context, m Mode, round int, work Workload, label string) (Burst, error) {
	b.pr.status("%s: pushing a patch (%s layer)", label, mib(int64(b.opts.PatchSize)))
	digest, err := b.node.patch(ctx)
	if err != nil {
		return Burst{}, err
	}
	var took time.Duration
	var perr error
	if m.Prefetch {
		b.pr.status("%s: PrefetchAdd, waiting for startgated to fetch %s", label, short(digest))
		took, perr = b.node.prefetch(ctx, digest, b.opts.PrefetchTimeout)
		if err := ctx.Err(); err != nil {
			return Burst{}, err
		}
		if perr != nil {
			w := fmt.Sprintf("%s: the burst ran without the patch prefetched: %v", label, perr)
			b.res.Warnings = append(b.res.Warnings, w)
			b.pr.line("warning: %s", w)
		} else {
			b.pr.line("%s: startgated prefetched %s in %s", label, short(digest), secs(took))
		}
		// The fetch's unpack is IO and CPU of its own: let it settle.
		if err := b.quiet(ctx, label); err != nil {
			return Burst{}, err
		}
	}
	var gate []GateSample
	watchDone := make(chan struct{})
	watchCtx, stopWatch := context.WithCancel(ctx)
	if m.Via == Startgate && b.node.api != nil {
		go func() {
			defer close(watchDone)
			gate = WatchGate(watchCtx, b.node.api, time.Now())
		}()
	} else {
		close(watchDone)
	}
	burst, err := b.burst(ctx, m, round, b.opts.Pods, work, label, false, true, stopWatch)
	stopWatch()
	<-watchDone
	burst.Patch, burst.Prefetch, burst.Gate = digest, took, gate
	if len(gate) > 0 {
		first, mean, hi := gateSummary(gate)
		b.pr.line("%s: gate in-flight limit %d at the start, mean %.1f, max %d", label, first, mean, hi)
	}
	if perr != nil {
		burst.PrefetchError = perr.Error()
	}
	return burst, err
}

// short is a digest's first 12 hex digits, for progress lines.
func short(d string) string {
	_, hex, _ := strings.Cut(d, ":")
	if len(hex) > 12 {
		hex = hex[:12]
	}
	return hex
}

// burst runs one burst and tears it down; the error is the teardown's or
// ctx's. With pull, every pod pulls the app's tag first.
//
// done, if not nil, is called when the burst's pods are all ready or
// failed, before the teardown.
func (b *bencher) burst(ctx context.Context, m Mode, round, pods int, w Workload, label string, measureCPU, pull bool, done func()) (Burst, error) {
	rs := b.node.clients[m.Via]
	burst := runBurst(ctx, burstSpec{
		mode: m, round: round, pods: pods, workload: w, rs: rs, images: b.node.images[m.Via], pull: pull, pullInSandbox: b.opts.PullInSandbox,
		image: b.node.appRef, logRoot: b.node.tb.Dir() + "/pods", kubelet: b.opts.Kubelet,
		deadline: b.opts.Deadline, poll: 50 * time.Millisecond, measureCPU: measureCPU,
		progress: func(ready, failed int, el time.Duration) {
			b.pr.bar(label, ready, failed, pods, el)
		},
	})
	if done != nil {
		done()
	}
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
	cpu, ok, err := WaitQuiet(ctx, b.opts.Quiet, func(cpu float64, waited time.Duration) {
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

// Calibration probes' starting points: about 0.15 s of busybox shell, and
// 16 MiB written and read, on this kind of machine.
const (
	probeLoops   = 50000
	probeIOBytes = 16 << 20
)

// calibrate sizes the init work, then times lone pods. The CPU loop is
// sized to opts.InitCPU of CPU time (unless opts.Loops fixes it): probe
// pods, up to three, each rescaling the loop count from the containers'
// CPU time so far (CRI stats, which other work on the machine stretches
// less than wall time) until one lands within 10%. For the io and mixed
// workloads the IO work is then sized the same way (unless opts.IOBytes
// fixes it), on wall time: a lone IO pod's init should take as long as a
// lone CPU pod's. Then opts.Lone pods of each kind the workload has run
// alone, one after the other, and the medians are kept.
func (b *bencher) calibrate(ctx context.Context) error {
	loops := b.opts.Loops
	if loops == 0 {
		n, err := b.probe(ctx, probeLoops, b.opts.InitCPU, 0.1, func(n int64) (time.Duration, error) {
			pod, err := b.lonePod(ctx, "probe", Workload{Kind: WorkCPU, Loops: int(n)})
			if err == nil && pod.CPU <= 0 {
				err = fmt.Errorf("bench: calibration probe: no CPU time from ContainerStats: %v", pod.Errors)
			}
			if err == nil {
				b.pr.line("calibration probe: %d loops used %s of CPU", n, secs(pod.CPU))
			}
			return pod.CPU, err
		})
		if err != nil {
			return err
		}
		loops = int(n)
	}
	c := Calibration{Loops: loops}
	kinds := []string{WorkCPU}
	var cpuInits, cpus, singles []time.Duration
	for range b.opts.Lone {
		pod, err := b.lonePod(ctx, "alone", Workload{Kind: WorkCPU, Loops: loops})
		if err != nil {
			return err
		}
		cpuInits = append(cpuInits, pod.Init)
		cpus = append(cpus, pod.CPU)
		if b.opts.Workload != WorkIO {
			singles = append(singles, pod.Ready)
		}
	}
	c.Init, c.CPU = median(cpuInits), median(cpus)
	if b.opts.Workload != WorkCPU {
		kinds = append(kinds, WorkIO)
		c.IOBytes = b.opts.IOBytes
		if c.IOBytes == 0 {
			target := max(c.Init, 50*time.Millisecond)
			var err error
			c.IOBytes, err = b.probe(ctx, probeIOBytes, target, 0.15, func(n int64) (time.Duration, error) {
				pod, err := b.lonePod(ctx, "probe", Workload{Kind: WorkIO, IOBytes: n})
				if err == nil {
					b.pr.line("calibration probe: %s of IO took %s", mib(n), secs(pod.Init))
				}
				return pod.Init, err
			})
			if err != nil {
				return err
			}
			c.IOBytes = max(ioBlock, c.IOBytes/ioBlock*ioBlock)
		}
		var ioInits []time.Duration
		for range b.opts.Lone {
			pod, err := b.lonePod(ctx, "alone", Workload{Kind: WorkIO, IOBytes: c.IOBytes})
			if err != nil {
				return err
			}
			ioInits = append(ioInits, pod.Init)
			singles = append(singles, pod.Ready)
		}
		c.IOInit = median(ioInits)
	}
	c.Single = median(singles)
	b.res.Calibration = c
	b.pr.line("calibrated (%s): %s; one pod alone is ready %s after RunPodSandbox",
		strings.Join(kinds, ", "), Workload{Kind: b.opts.Workload}.describe(c), secs(c.Single))
	return nil
}

// probe sizes a work unit n so that measure(n) comes within tolerance of
// target: up to three probes, each rescaling n from the pooled cost per
// unit of the probes so far.
func (b *bencher) probe(ctx context.Context, n int64, target time.Duration, tolerance float64,
	measure func(n int64) (time.Duration, error)) (int64, error) {
	var sumN int64
	var sumT time.Duration
	for range 3 {
		got, err := measure(n)
		if err != nil {
			return 0, err
		}
		if got <= 0 {
			return 0, fmt.Errorf("bench: calibration probe of %d measured nothing", n)
		}
		off := float64(got)/float64(target) - 1
		if off > -tolerance && off < tolerance {
			break
		}
		sumN += n
		sumT += got
		n = max(1, int64(float64(sumN)*float64(target)/float64(sumT)))
	}
	return n, nil
}

func median(xs []time.Duration) time.Duration {
	xs = slices.Clone(xs)
	slices.Sort(xs)
	return Percentile(xs, 50)
}

// lonePod runs one pod alone, direct, on a quiet node, without a pull
// (the node has the image), and tears it down.
func (b *bencher) lonePod(ctx context.Context, name string, w Workload) (Pod, error) {
	if err := b.quiet(ctx, "a lone pod"); err != nil {
		return Pod{}, err
	}
	b.lone++
	burst, err := b.burst(ctx, Mode{Name: name, Via: Direct}, b.lone, 1, w, name, w.Kind == WorkCPU, false, nil)
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
