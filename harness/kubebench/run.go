package kubebench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/startgate/startgate/harness/bench"
	"github.com/startgate/startgate/harness/testbed/cluster"
)

// Result is a whole benchmark.
type Result struct {
	Command           string        `json:"command"`
	Workload          string        `json:"workload"`
	Pods              int           `json:"pods"`
	Rounds            int           `json:"rounds"`
	Cores             int           `json:"cores"`
	InitCPU           time.Duration `json:"init_cpu_ns"`
	ProbePeriod       time.Duration `json:"probe_period_ns"`
	Load              int           `json:"load,omitempty"`
	IOBytes           int64         `json:"io_bytes"`
	PatchSize         int           `json:"patch_size"`
	RegistryBandwidth float64       `json:"registry_bandwidth"`
	RegistryRTT       time.Duration `json:"registry_rtt_ns"`
	RegistryToken     bool          `json:"registry_token"`
	Scenarios         []string      `json:"scenarios"`
	Modes             []string      `json:"modes"`
	ModeSpecs         []Mode        `json:"mode_specs"`
	Warmup            bool          `json:"warmup"`
	Env               Env           `json:"env"`
	Runs              []ScenarioRun `json:"runs"`
	Warnings          []string      `json:"warnings,omitempty"`
	Interrupted       bool          `json:"interrupted,omitempty"`
	Took              time.Duration `json:"took_ns"`
}

// startNode starts this machine's one-node cluster, or, with
// Options.Kubeconfig, readies the existing cluster's node; it returns the
// node and its CPU sampling period.
func startNode(ctx context.Context, opts *Options, pr *progress) (node, time.Duration, error) {
	if opts.Kubeconfig != "" {
		pr.line("using node %s of the cluster in %s", opts.Node, opts.Kubeconfig)
		r, err := startClusterNode(ctx, opts, pr)
		return r, remoteCPUEvery, err
	}
	if opts.KubeBin == "" {
		pr.line("Kubernetes binaries: hack/kubernetes/build.sh (built once, about 15 minutes, then cached)")
		var err error
		if opts.KubeBin, err = cluster.Binaries(ctx); err != nil {
			return nil, 0, err
		}
	}
	pr.line("starting the node: containerd, a registry %s away, etcd, kube-apiserver, controller-manager, scheduler", opts.RegistryRTT)
	n, err := startLocalNode(ctx, opts)
	return n, cpuSampleEvery, err
}

// runner runs the steps of one Run.
type runner struct {
	opts     *Options
	n        node
	cpuEvery time.Duration
	pods     *tracker
	pr       *progress
	res      *Result
}

// Run starts the node, runs every mode's scenarios in every round and
// stops everything, also when ctx ends. With an error after runs have
// completed it returns the result so far, Interrupted.
func Run(ctx context.Context, opts Options) (_ *Result, err error) {
	if err := opts.withDefaults(); err != nil {
		return nil, err
	}
	t0 := time.Now()
	pr := &progress{w: opts.Progress}
	n, cpuEvery, err := startNode(ctx, &opts, pr)
	if err != nil {
		return nil, err
	}
	defer func() {
		pr.line("cleaning up")
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
		defer cancel()
		err = errors.Join(err, n.stop(stopCtx))
	}()
	_, cores, _ := n.idle(ctx)
	res := &Result{Command: opts.Command, Workload: opts.Workload, Pods: opts.Pods, Rounds: opts.Rounds, Cores: cores,
		InitCPU: opts.InitCPU, IOBytes: opts.IOBytes, PatchSize: opts.PatchSize, RegistryBandwidth: opts.RegistryBandwidth,
		RegistryRTT: opts.RegistryRTT, RegistryToken: opts.RegistryToken, Scenarios: opts.Scenarios}
	for _, m := range opts.Modes {
		res.Modes = append(res.Modes, m.Name)
	}
	res.ModeSpecs, res.Warmup, res.Env, res.ProbePeriod, res.Load = opts.Modes, opts.Warmup, hostEnv(), opts.ProbePeriod, opts.Load
	if p := opts.Resume; p != nil {
		if err := sameBenchmark(p, res); err != nil {
			return nil, err
		}
		res.Runs, res.Warnings, res.Env = p.Runs, p.Warnings, p.Env
		res.Took = p.Took
		pr.line("resuming: %d scenario runs already done", len(p.Runs))
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	b := &runner{opts: &opts, n: n, cpuEvery: cpuEvery, pods: newTracker(), pr: pr, res: res}
	b.pods.run(watchCtx, n.client(), n.namespace())
	took := res.Took
	err = b.run(ctx)
	res.Took = took + time.Since(t0)
	if err != nil && len(res.Runs) == 0 {
		return nil, err
	}
	res.Interrupted = err != nil
	return res, err
}

func (b *runner) run(ctx context.Context) error {
	script := initScript(b.opts.Workload, b.opts.InitCPU, b.opts.IOBytes)
	dep := deployment(b.n.namespace(), b.n.nodeName(), b.n.appRef(), 0, script, b.opts.ProbePeriod)
	if _, err := b.n.client().AppsV1().Deployments(b.n.namespace()).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("kubebench: create the Deployment: %w", err)
	}
	first := 1
	if b.opts.Warmup {
		first = 0
	}
	for r := first; r <= b.opts.Rounds; r++ {
		order := roundOrder(b.opts.Modes, r, b.opts.Rounds)
		for i, m := range order {
			label := fmt.Sprintf("round %d/%d, mode %d/%d %s", r, b.opts.Rounds, i+1, len(order), m.Name)
			if r == 0 {
				label = fmt.Sprintf("warm-up round (not counted), mode %d/%d %s", i+1, len(order), m.Name)
			}
			if b.res.done(m.Name, r) {
				continue
			}
			if err := b.cycle(ctx, m, r, i, label); err != nil {
				return err
			}
			if b.opts.Save != "" {
				if err := saveResult(b.opts.Save, b.res); err != nil {
					return fmt.Errorf("kubebench: save the run so far: %w", err)
				}
			}
		}
	}
	return nil
}

// roundOrder is the modes' order in round r of rounds: row r of a
// Williams design over the modes (row i, position j holds mode
// (i + f(j)) mod M, f = 0, 1, M-1, 2, M-2, ...), so over M rounds every
// mode runs once in every position, and with an even M follows every
// other mode once. With fewer rounds than modes the rows are spread
// evenly over the square. Round 0, the warm-up, runs the modes as given.
func roundOrder(modes []Mode, r, rounds int) []Mode {
	m := len(modes)
	if r == 0 || m < 2 {
		return slices.Clone(modes)
	}
	row := r - 1
	if rounds < m {
		row = (r - 1) * m / rounds
	}
	out := make([]Mode, m)
	for j := range m {
		f := (j + 1) / 2
		if j%2 == 0 && j > 0 {
			f = m - j/2
		}
		out[j] = modes[(row+f)%m]
	}
	return out
}

// cycle runs one mode's scenarios in one round: kubelet (and startgated)
// for the mode on an empty node, N pods up, the scenarios asked for, the
// pods gone again.
func (b *runner) cycle(ctx context.Context, m Mode, round, position int, label string) error {
	b.pr.line("%s: %s", label, m.Describe())
	if err := b.n.setMode(ctx, m); err != nil {
		return err
	}
	if b.res.Env.Kubelet == "" {
		if err := b.res.Env.nodeEnv(ctx, b.n.client(), b.n.nodeName()); err != nil {
			b.res.Warnings = append(b.res.Warnings, err.Error())
		}
	}
	b.pods.forgetGone()
	// The pods of this mode run the tag, with the mode's pull policy.
	if err := b.updateApp(ctx, func(d *appsv1.Deployment) {
		c := &d.Spec.Template.Spec.Containers[0]
		c.Image, c.ImagePullPolicy = b.n.appRef(), m.pullPolicy()
		c.StartupProbe = nil
		if m.StartupProbe {
			c.StartupProbe = startupProbe(c.ReadinessProbe)
		}
	}); err != nil {
		return fmt.Errorf("kubebench: %s: set the pods' image and pull policy: %w", label, err)
	}
	one := func(scenario string, do func(*ScenarioRun) error) error {
		if err := b.quiet(ctx, label+" "+scenario); err != nil {
			return err
		}
		run := ScenarioRun{Scenario: scenario, Mode: m.Name, Round: round, Position: position}
		b.pr.status("%s %s", label, scenario)
		if err := do(&run); err != nil {
			return err
		}
		if b.opts.wants(scenario) {
			b.res.Runs = append(b.res.Runs, run)
			f := figures(run)
			b.pr.line("%s %s: %d/%d Ready, p50 %s, p99 %s, completion %s, pull p50 %s, %d restarts, idle CPU %.0f%%%s",
				label, scenario, f.Pods-f.Failed, f.Pods, secs(f.P50), secs(f.P99), secs(f.Completion), secs(f.PullP50), f.Restarts,
				100*f.Idle.Run, gateLine(run.Gate))
		}
		b.pods.forgetGone()
		return nil
	}
	// Scale-up brings the pods the other scenarios need, measured or not.
	if err := one(ScaleUp, func(r *ScenarioRun) error { return b.scaleUp(ctx, r) }); err != nil {
		return err
	}
	if b.opts.wants(Recreate) {
		if err := one(Recreate, func(r *ScenarioRun) error {
			return b.rollout(ctx, r, m, appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}, label)
		}); err != nil {
			return err
		}
	}
	if b.opts.wants(Rolling) {
		if err := one(Rolling, func(r *ScenarioRun) error { return b.rollout(ctx, r, m, rollingUpdate(), label) }); err != nil {
			return err
		}
	}
	if b.opts.wants(Reboot) {
		if err := one(Reboot, func(r *ScenarioRun) error { return b.reboot(ctx, r, m) }); err != nil {
			return err
		}
	}
	b.pr.status("%s: scaling to 0", label)
	if err := b.scale(ctx, 0); err != nil {
		return err
	}
	if !b.pods.waitFor(ctx, b.opts.Deadline, func(pods map[string]podSeen) bool {
		for _, p := range pods {
			if p.deleted.IsZero() {
				return false
			}
		}
		return true
	}) {
		if err := ctx.Err(); err != nil {
			return err
		}
		return fmt.Errorf("kubebench: %s: pods left %s after scaling to 0", label, b.opts.Deadline)
	}
	b.pods.forgetGone()
	return nil
}

func (b *runner) quiet(ctx context.Context, before string) error {
	last, ok, err := b.n.quiet(ctx, b.opts.Quiet)
	if err != nil {
		return err
	}
	if !ok {
		w := fmt.Sprintf("the node was not quiet before %s: %s after %s", before, last, secs(b.opts.Quiet.Max))
		b.res.Warnings = append(b.res.Warnings, w)
		b.pr.line("warning: %s", w)
	}
	return nil
}

// gateLine summarizes a run's gate samples for the progress line.
func gateLine(g []bench.GateSample) string {
	if len(g) == 0 {
		return ""
	}
	var sum int64
	var hi int32
	for _, s := range g {
		sum += int64(s.Limit)
		hi = max(hi, s.Limit)
	}
	return fmt.Sprintf(", gate limit %d at the start, mean %.1f, max %d", g[0].Limit, float64(sum)/float64(len(g)), hi)
}

// progress prints progress lines, if it has a writer.
type progress struct{ w io.Writer }

func (p *progress) line(format string, args ...any) {
	if p.w != nil {
		fmt.Fprintf(p.w, "startgate-bench kube: "+format+"\n", args...)
	}
}

func (p *progress) status(format string, args ...any) { p.line(format, args...) }

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }
