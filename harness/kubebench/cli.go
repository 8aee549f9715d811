package kubebench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/startgate/startgate/harness/bench"
)

// Main is `startgate-bench kube`; it returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("startgate-bench kube", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	var o Options
	scenarios := fs.String("scenarios", Recreate, "comma-separated: "+strings.Join(AllScenarios, ", ")+" (a mode always scales up first; the others need its pods)")
	modes := fs.String("modes", DefaultModes, "comma-separated BASE[+OPTION...]; BASE: direct (kubelet on containerd), proxy (startgated, gate bypassed: the pull path alone), gate (startgated, pull path off: the gate alone), startgate, startgate-prefetch (the patch announced and fetched before each rollout), fixed-K (startgate with its in-flight limit pinned at K), fixed (fixed-2,fixed-4,fixed-8), pacemaker (pod-pacemaker as its chart installs it), pacemaker-K (at concurrency K); OPTION: parallel-N or parallel-all (kubelet's maxParallelImagePulls), qps-N (its registryPullQPS, 0 no limit), ifnotpresent (imagePullPolicy IfNotPresent, rollouts by digest), startup (a startup probe as the readiness probe)")
	quick := fs.Bool("quick", false, "a first look: --modes "+QuickModes+", 2 rounds, no warm-up (unless those flags are given)")
	fs.IntVar(&o.Pods, "pods", DefaultPods, "the Deployment's replicas")
	fs.IntVar(&o.Rounds, "rounds", DefaultRounds, "counted rounds; every mode runs once per round, in a Williams order")
	fs.BoolVar(&o.Warmup, "warmup", true, "run a warm-up round first (every mode once, kept in the raw data, never counted)")
	fs.StringVar(&o.Workload, "workload", WorkCPU, "init work: cpu, io or mixed (the tuning set), files (read the patch's tree of 4 KiB files) or jit (the init CPU spent by a loop per core at once): held out")
	fs.StringVar(&o.CPUs, "cpus", "", "pin the node (containerd and its pods, kubelet, startgated, pod-pacemaker) to these CPUs, e.g. 0: a smaller node, held out from tuning; the control plane stays unpinned")
	fs.IntVar(&o.Load, "load", 0, "other work on the node while each scenario is measured: this many busy loops, a core each (pinned with --cpus): held out")
	fs.DurationVar(&o.ProbePeriod, "probe-period", time.Second, "the readiness probe's period (whole seconds; charts often set 10s)")
	fs.DurationVar(&o.InitCPU, "init-cpu", DefaultInitCPU, "a cpu pod's init: this much CPU time (the container's cgroup counts it)")
	ioSize := fs.String("io-size", "16MB", "an io pod's init: write, fsync and read back this many bytes")
	patchSize := fs.String("patch-size", "20MB", "size of the layer each patch replaces")
	mbps := fs.Float64("registry-mbps", bench.DefaultRegistryMbps, "registry-to-node bandwidth cap, Mbit/s; 0 is none")
	fs.DurationVar(&o.RegistryRTT, "registry-rtt", bench.DefaultRegistryRTT, "round trip between the node and the registry (and its token service)")
	fs.BoolVar(&o.RegistryToken, "registry-token", true, "the registry asks for a bearer token, as public registries do")
	fs.DurationVar(&o.PrefetchTimeout, "prefetch-timeout", DefaultPrefetchTimeout, "longest wait for startgated to fetch an announced patch; the rollout runs anyway after it")
	fs.DurationVar(&o.Deadline, "deadline", DefaultDeadline, "longest a scenario may take; pods not Ready by then failed")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "run on a node of this existing cluster instead of a one-node cluster here (modes node, node-bypass; scenarios scale-up, recreate, rolling)")
	fs.StringVar(&o.Node, "node", "", "with --kubeconfig: the node to run on (refused if it runs other workloads, unless --allow-busy-node)")
	fs.StringVar(&o.Registry, "registry", "", "with --kubeconfig: a repository prefix the node pulls from and you can push to (docker's credentials), e.g. registry.example.com/team")
	fs.BoolVar(&o.AllowBusyNode, "allow-busy-node", false, "with --kubeconfig: run on a node that has other workloads")
	fs.StringVar(&o.StartgatedSocket, "startgated-socket", "", "with --kubeconfig, run on the node itself: startgated's API socket, for the node-bypass mode (e.g. /run/startgate/startgated.sock)")
	fs.StringVar(&o.PacemakerBin, "pacemaker-bin", os.Getenv("STARTGATE_PACEMAKER_BIN"), "directory of pod-pacemaker's node-daemon and cni-plugin, for the pacemaker modes (default $STARTGATE_PACEMAKER_BIN; hack/pacemaker/build.sh builds them)")
	fs.StringVar(&o.KubeBin, "kube-bin", os.Getenv("STARTGATE_KUBE_BIN"), "directory of the Kubernetes binaries (default $STARTGATE_KUBE_BIN, else hack/kubernetes/build.sh builds them once)")
	daemonCfg := fs.String("startgated-config", "", "TOML file appended to every startgated config (tuning)")
	fs.StringVar(&o.DaemonLog, "startgated-log", "", "keep the last startgated's log here")
	variants := fs.StringArray("variant", nil, "NAME=FILE: one more mode, startgate-NAME, with FILE's TOML appended to its startgated config (tuning side by side); repeatable")
	jsonOut := fs.String("json", "", "also write every run and pod as JSON to this file (after every mode's cycle, so an interrupted run keeps what it measured)")
	resume := fs.String("resume", "", "complete the run saved in this --json file (the same flags, at the same commit): only the cycles it lacks run, into the same file")
	charts := fs.String("charts", "", "write a chart per scenario (SVG: time to Ready, a CDF per mode) into this directory as kube-SCENARIO.svg")
	report := fs.String("report", "", "run nothing: print the tables (and --charts) of the run a --json FILE holds")
	summary := fs.Bool("summary", false, "with --report: print the README's short table (startgate's modes and the best alternative against direct) and where it comes from")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: startgate-bench kube [flags]\n\n"+
			"Runs a one-node Kubernetes cluster here (containerd, a far-away registry, a real\n"+
			"control plane and kubelet) and measures a Deployment's pods from creation to\n"+
			"Ready in each scenario, once per mode and round: kubelet on containerd, on\n"+
			"startgated with a pinned limit, on startgated. Prints a markdown table per\n"+
			"scenario. Needs root and what make deps installs.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "startgate-bench kube:", err)
		return 2
	}
	if fs.NArg() > 0 {
		return fail(fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	if *report != "" {
		return reportFrom(*report, *charts, *summary, stdout, stderr)
	}
	var err error
	if *quick {
		if !fs.Changed("modes") {
			*modes = QuickModes
		}
		if !fs.Changed("rounds") {
			o.Rounds = 2
		}
		if !fs.Changed("warmup") {
			o.Warmup = false
		}
	}
	if !fs.Changed("modes") && !*quick && o.Kubeconfig == "" {
		if o.PacemakerBin != "" {
			*modes += "," + PacemakerModes
		} else {
			fmt.Fprintln(stderr, "startgate-bench kube: no --pacemaker-bin: the pod-pacemaker modes are left out (hack/pacemaker/build.sh builds it)")
		}
	}
	if o.Kubeconfig != "" && !fs.Changed("modes") {
		*modes = remoteModes
	}
	if o.Modes, err = ParseModes(*modes); err != nil {
		return fail(err)
	}
	for _, v := range *variants {
		name, file, ok := strings.Cut(v, "=")
		if !ok || name == "" || file == "" {
			return fail(fmt.Errorf("--variant %q: want NAME=FILE", v))
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return fail(fmt.Errorf("--variant %s: %w", name, err))
		}
		m := Mode{Name: "startgate-" + name, Path: PathStartgate, Config: string(b)}
		for _, have := range o.Modes {
			if have.Name == m.Name {
				return fail(fmt.Errorf("--variant %s: mode %s given twice", name, m.Name))
			}
		}
		o.Modes = append(o.Modes, m)
	}
	o.Scenarios = strings.Split(*scenarios, ",")
	if o.IOBytes, err = bench.ParseSize(*ioSize); err != nil {
		return fail(err)
	}
	ps, err := bench.ParseSize(*patchSize)
	if err != nil {
		return fail(err)
	}
	o.PatchSize = int(ps)
	if *mbps < 0 {
		return fail(errors.New("--registry-mbps: want 0 or more"))
	}
	o.RegistryBandwidth = *mbps * 1e6 / 8
	if *daemonCfg != "" {
		b, err := os.ReadFile(*daemonCfg)
		if err != nil {
			return fail(err)
		}
		o.DaemonConfig = string(b)
	}
	if err := o.withDefaults(); err != nil {
		return fail(err)
	}
	o.Progress = stderr
	o.Command = "startgate-bench kube " + strings.Join(args, " ")
	o.Save = *jsonOut
	if *resume != "" {
		if o.Resume, err = LoadResult(*resume); err != nil {
			return fail(fmt.Errorf("--resume: %w", err))
		}
		if o.Save == "" {
			o.Save = *resume
		}
		o.Command = o.Resume.Command // the command that began it; the resume is the same run
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res, err := Run(ctx, o)
	if res != nil {
		if werr := WriteMarkdown(stdout, res); werr != nil {
			err = errors.Join(err, werr)
		}
		if *charts != "" {
			paths, cerr := WriteCharts(*charts, res)
			err = errors.Join(err, cerr)
			for _, p := range paths {
				fmt.Fprintln(stderr, "startgate-bench kube: chart", p)
			}
		}
		if o.Save != "" {
			err = errors.Join(err, saveResult(o.Save, res))
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "startgate-bench kube:", err)
		return 1
	}
	return 0
}

// reportFrom prints the tables, and writes the charts into charts unless
// it is empty, of the run saved in the JSON file path.
func reportFrom(path, charts string, summary bool, stdout, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintf(stderr, "startgate-bench kube: --report %s: %v\n", path, err)
		return 1
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fail(err)
	}
	res := new(Result)
	if err := json.Unmarshal(b, res); err != nil {
		return fail(err)
	}
	if len(res.Runs) == 0 {
		return fail(errors.New("no runs in it (not a startgate-bench kube --json file?)"))
	}
	write := func() error { return WriteMarkdown(stdout, res) }
	if summary {
		write = func() error { return WriteSummary(stdout, res, path) }
	}
	if err := write(); err != nil {
		return fail(err)
	}
	if charts != "" {
		paths, err := WriteCharts(charts, res)
		if err != nil {
			return fail(err)
		}
		for _, p := range paths {
			fmt.Fprintln(stderr, "startgate-bench kube: chart", p)
		}
	}
	return 0
}
