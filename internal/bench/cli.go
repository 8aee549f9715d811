package bench

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
	modes := fs.String("modes", DefaultModes, "comma-separated modes, in round order: direct, fixed-K (at most K pods in flight, client-side), fixed (fixed-2,fixed-4,fixed-8), startgate")
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
	jsonOut := fs.String("json", "", "also write every figure and every pod's record as JSON to this file")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: startgate-bench [flags]\n\n"+
			"Starts a private containerd (the testbed) and startgated in front of it, then\n"+
			"starts bursts of pods at once through kubelet's CRI client, once per mode and\n"+
			"round, and prints a markdown table of time to ready per mode. Needs root,\n"+
			"containerd, runc and busybox-static (make deps). Progress goes to stderr.\n\n")
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
	// After the first signal, the next one kills at once.
	context.AfterFunc(ctx, func() {
		stop()
		fmt.Fprintln(stderr, "\nstartgate-bench: interrupted; cleaning up (interrupt again to abandon it)")
	})
	// cri-client logs every failed call through klog; the benchmark
	// records them per pod instead. The zero logr.Logger discards.
	ctx = klog.NewContext(ctx, klog.Logger{})

	res, err := Run(ctx, opts)
	if res != nil {
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
