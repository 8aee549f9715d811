package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/pflag"
	"k8s.io/klog/v2"
)

// Main is the startgate-bench command line; it returns the exit code.
func Main(args []string) int {
	if code, ok := RunChild(); ok {
		return code
	}
	return run(args, os.Stdout, os.Stderr)
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("startgate-bench", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	var opts Options
	modes := fs.String("modes", DefaultModes, "comma-separated modes, in round order: direct, fixed-K (at most K pods in flight, client-side), fixed (fixed-2,fixed-4,fixed-8), startgate (admission alone), startgate-prefetch (admission, and the patch prefetched by startgated before the burst)")
	fs.StringVar(&opts.Workload, "workload", WorkCPU, "init work: cpu (a busy shell loop), io (write, fsync and read back a file in the container's root filesystem, sized to take a lone pod as long as cpu), mixed (even pods cpu, odd pods io)")
	patchSize := fs.String("patch-size", "20MB", "size of the image layer each patch replaces (random, incompressible); B, KB, MB, GB (powers of 1024)")
	ioSize := fs.String("io-size", "", "fix the io work's file size (as --patch-size) instead of calibrating it")
	fs.DurationVar(&opts.PrefetchTimeout, "prefetch-timeout", DefaultPrefetchTimeout, "startgate-prefetch: longest wait for startgated to show the patch fetched; the burst runs anyway after it")
	pullOrder := fs.String("pull-order", "first", "when a pod pulls: first (before RunPodSandbox, the order issue 5 lists) or sandbox (after RunPodSandbox, kubelet's own SyncPod order)")
	mbps := fs.Float64("registry-mbps", DefaultRegistryMbps, "cap the registry-to-node bandwidth (pulls and prefetches together) at this many megabits per second, as a remote registry's link; 0 is loopback speed")
	fs.DurationVar(&opts.RegistryRTT, "registry-rtt", DefaultRegistryRTT, "round-trip time between the node and the registry (and its token service); 0 is loopback")
	fs.BoolVar(&opts.RegistryToken, "registry-token", true, "the registry asks for a bearer token on every pull, as public registries do")
	chart := fs.String("chart", "startgate-bench.svg", "write the chart (SVG: time to ready, CDF per mode) here; \"\" for none")
	fs.IntVar(&opts.Pods, "pods", 40, "pods per burst")
	fs.IntVar(&opts.Rounds, "rounds", 2, "rounds; every mode runs once per round, the order reversed in even rounds")
	fs.DurationVar(&opts.InitCPU, "init-cpu", DefaultInitCPU, "CPU time of each container's init loop (calibrated on a lone pod)")
	fs.IntVar(&opts.Loops, "loops", 0, "fix the init loop's iteration count instead of calibrating")
	fs.DurationVar(&opts.Kubelet.Timeout, "timeout", DefaultKubelet().Timeout, "per CRI call timeout, as kubelet's --runtime-request-timeout (RunPodSandbox gets twice this)")
	fs.DurationVar(&opts.Kubelet.Backoff, "backoff", DefaultKubelet().Backoff, "wait before a pod whose CRI call failed is synced again (kubelet's pod worker back-off)")
	fs.DurationVar(&opts.Deadline, "burst-timeout", DefaultDeadline, "a pod not ready this long after its burst's start counts as failed")
	fs.Float64Var(&opts.Quiet.CPU, "quiet-cpu", DefaultQuiet().CPU, "before each burst, wait until CPU \"some\" pressure is at most this")
	fs.DurationVar(&opts.Quiet.Max, "quiet-max", DefaultQuiet().Max, "longest wait for a quiet node before a burst starts anyway")
	startgated := fs.String("startgated", "", "run this startgated binary instead of re-executing startgate-bench as one")
	daemonCfg := fs.String("startgated-config", "", "TOML file appended to startgated's generated config (admission tuning, [cri] warm-up)")
	fs.StringVar(&opts.DaemonLog, "startgated-log", "", "copy startgated's log (JSON lines: admission, CRI, prefetch) to this file at the end")
	jsonOut := fs.String("json", "", "also write every figure and every pod's record as JSON to this file")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: startgate-bench [flags]\n\n"+
			"Starts a private containerd (the testbed), a loopback registry serving the app\n"+
			"image and startgated in front of the containerd. Before each burst it patches\n"+
			"the app's tag (one layer replaced); then N pods start at once through kubelet's\n"+
			"CRI client, each pulling the tag first, once per mode and round. Prints a\n"+
			"markdown table of time to ready per mode and writes a chart (--chart). Needs\n"+
			"root, containerd, runc, busybox-static and docker-registry (make deps).\n"+
			"Progress goes to stderr.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "startgate-bench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	var err error
	if opts.Modes, err = ParseModes(*modes); err != nil {
		fmt.Fprintln(stderr, "startgate-bench:", err)
		return 2
	}
	if _, err := ParseWorkload(opts.Workload); err != nil {
		fmt.Fprintln(stderr, "startgate-bench:", err)
		return 2
	}
	ps, err := ParseSize(*patchSize)
	if err == nil && ps < 1 {
		err = fmt.Errorf("bench: --patch-size %q: want at least 1 byte", *patchSize)
	}
	if err != nil {
		fmt.Fprintln(stderr, "startgate-bench:", err)
		return 2
	}
	opts.PatchSize = int(ps)
	if *mbps < 0 {
		fmt.Fprintln(stderr, "startgate-bench: --registry-mbps: want 0 or more")
		return 2
	}
	opts.RegistryBandwidth = *mbps * 1e6 / 8
	if opts.RegistryRTT < 0 {
		fmt.Fprintln(stderr, "startgate-bench: --registry-rtt: want 0 or more")
		return 2
	}
	switch *pullOrder {
	case "first":
	case "sandbox":
		opts.PullInSandbox = true
	default:
		fmt.Fprintf(stderr, "startgate-bench: --pull-order %q: want first or sandbox\n", *pullOrder)
		return 2
	}
	if *ioSize != "" {
		if opts.IOBytes, err = ParseSize(*ioSize); err != nil || opts.IOBytes < 1 {
			fmt.Fprintf(stderr, "startgate-bench: --io-size %q: want a size of at least 1 byte\n", *ioSize)
			return 2
		}
	}
	q := DefaultQuiet()
	opts.Quiet.Interval, opts.Quiet.Samples = q.Interval, q.Samples
	if *startgated != "" {
		opts.Daemon = []string{*startgated}
	}
	if *daemonCfg != "" {
		b, err := os.ReadFile(*daemonCfg)
		if err != nil {
			fmt.Fprintln(stderr, "startgate-bench:", err)
			return 2
		}
		opts.DaemonConfig = string(b)
	}
	opts.Progress = stderr
	opts.Command = "startgate-bench " + strings.Join(args, " ")

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// After the first signal, the next one kills at once. Unregistered
	// before the deferred stop, which would otherwise report a normal
	// return as an interrupt.
	unregister := context.AfterFunc(ctx, func() {
		stop()
		fmt.Fprintln(stderr, "\nstartgate-bench: interrupted; cleaning up (interrupt again to abandon it)")
	})
	defer unregister()
	// cri-client logs every failed call through klog; the benchmark
	// records them per pod instead. The zero logr.Logger discards.
	ctx = klog.NewContext(ctx, klog.Logger{})

	res, err := Run(ctx, opts)
	if res != nil {
		if *chart != "" {
			path, cerr := writeChart(*chart, res)
			if cerr != nil {
				err = errors.Join(err, cerr)
			} else {
				res.Chart = path
				fmt.Fprintln(stderr, "startgate-bench: chart:", path)
			}
		}
		if werr := WriteMarkdown(stdout, res); werr != nil && err == nil {
			err = werr
		}
		if *jsonOut != "" {
			if werr := writeJSON(*jsonOut, res); werr != nil {
				err = errors.Join(err, werr)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "startgate-bench:", err)
		return 1
	}
	return 0
}

// writeChart writes the chart to path, or when path's directory is not
// writable (a read-only checkout), to the same name in the temporary
// directory; it returns the absolute path written.
func writeChart(path string, r *Result) (string, error) {
	var b strings.Builder
	if err := WriteChart(&b, r); err != nil {
		return "", err
	}
	err := os.WriteFile(path, []byte(b.String()), 0o644)
	if err != nil && !filepath.IsAbs(path) {
		alt := filepath.Join(os.TempDir(), filepath.Base(path))
		if err2 := os.WriteFile(alt, []byte(b.String()), 0o644); err2 == nil {
			path, err = alt, nil
		}
	}
	if err != nil {
		return "", fmt.Errorf("bench: chart: %w", err)
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	return path, nil
}

// ParseSize reads a size: a number with an optional unit B, K/KB/KiB,
// M/MB/MiB, G/GB/GiB, all powers of 1024 (the layer sizes people quote
// in MB mean MiB here).
func ParseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GIB", 1 << 30}, {"MIB", 1 << 20}, {"KIB", 1 << 10}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10},
		{"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || n < 0 || math.IsInf(n, 0) || n*float64(mult) > 1<<40 {
		return 0, fmt.Errorf("bench: size %q: want a number and an optional unit (B, KB, MB, GB)", s)
	}
	return int64(n * float64(mult)), nil
}

func writeJSON(path string, r *Result) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("bench: json: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return nil
}
