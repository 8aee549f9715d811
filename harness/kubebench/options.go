package kubebench

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/startgate/startgate/harness/bench"
	"github.com/startgate/startgate/harness/testbed"
)

// Scenarios, in the order a mode runs them.
const (
	ScaleUp  = "scale-up"
	Recreate = "recreate"
	Rolling  = "rolling"
	Reboot   = "reboot"
)

// AllScenarios is every scenario in run order.
var AllScenarios = []string{ScaleUp, Recreate, Rolling, Reboot}

// Defaults of Options.
const (
	DefaultPods            = 40
	DefaultRounds          = 5
	DefaultInitCPU         = 200 * time.Millisecond
	DefaultIOBytes         = 16 << 20
	DefaultPatchSize       = 20 << 20
	DefaultDeadline        = 10 * time.Minute
	DefaultPrefetchTimeout = 2 * time.Minute
)

// Options configure Run. Zero fields take the defaults.
type Options struct {
	// Scenarios to run, a subset of AllScenarios; nil means recreate.
	Scenarios []string
	// Modes, in the first round's order (see order); nil means
	// DefaultModes.
	Modes  []Mode
	Pods   int
	Rounds int
	// Warmup runs a round 0 first, every mode once: it fills the page
	// cache and the image store as later rounds find them, and is kept in
	// the raw data but never counted.
	Warmup bool
	// CPUs pins the node (containerd and its pods, the kubelet,
	// startgated, pod-pacemaker) to these CPUs, a Linux CPU list: a
	// smaller node on this machine, never tuned on ("" is all of them).
	// The control plane and the registry stay off the list's CPUs' count.
	CPUs string
	// ProbePeriod is the readiness probe's period, whole seconds; 0
	// means 1 s. Charts commonly set 10 s: a pod then reports Ready up
	// to 10 s after it could, and a gate that holds its slot till Ready
	// holds it that long.
	ProbePeriod time.Duration
	// Load is other work on the node while each scenario is measured:
	// this many busy loops, a core each (pinned with CPUs), started
	// when the scenario starts and stopped when it ends: the tenants a
	// node's rollout shares it with, which the gate sees in its pressure
	// and direct does not. 0 is none.
	Load int
	// Workload is WorkCPU (""), WorkIO or WorkMixed.
	Workload string
	// InitCPU is a cpu pod's init work, in CPU time.
	InitCPU time.Duration
	// IOBytes is an io pod's file size.
	IOBytes   int64
	PatchSize int
	// RegistryBandwidth (bytes/s), RegistryRTT and RegistryToken make
	// the registry far away (testbed.Link, token auth); zero values are
	// loopback.
	RegistryBandwidth float64
	RegistryRTT       time.Duration
	RegistryToken     bool
	// PrefetchTimeout bounds the wait for a prefetch before a rollout.
	PrefetchTimeout time.Duration
	// Deadline bounds one scenario run; pods not Ready by then failed.
	Deadline time.Duration
	// Quiet is the wait for a quiet node before each scenario.
	Quiet bench.Quiet
	// KubeBin is the Kubernetes binaries' directory; "" builds or finds
	// them (cluster.Binaries).
	KubeBin string
	// Kubeconfig and Node run the scenarios on a node of an existing
	// cluster instead of this machine's (remote.go); Registry is where
	// the app and its patches are pushed (the node must pull from it,
	// the harness push to it with the user's docker credentials).
	// AllowBusyNode runs on a node that has other workloads;
	// StartgatedSocket, when the harness runs on that node, lets the
	// node-bypass mode bypass its startgated.
	Kubeconfig       string
	Node             string
	Registry         string
	AllowBusyNode    bool
	StartgatedSocket string
	// Save, when set, is where the result is written after every mode's
	// cycle (resume.go); Resume is a saved result to complete.
	Save   string
	Resume *Result
	// PacemakerBin holds pod-pacemaker's node-daemon and cni-plugin
	// (hack/pacemaker/build.sh); needed by the pacemaker modes only.
	PacemakerBin string
	// Daemon runs startgated instead of this binary re-executed.
	Daemon []string
	// DaemonConfig is TOML appended to every startgated config.
	DaemonConfig string
	// DaemonLog keeps the last startgated's log there.
	DaemonLog string
	Progress  io.Writer
	Command   string
}

func (o *Options) withDefaults() error {
	if o.Scenarios == nil {
		o.Scenarios = []string{Recreate}
	}
	if o.Modes == nil {
		list := DefaultModes
		if o.Kubeconfig != "" {
			list = remoteModes
		}
		m, err := ParseModes(list)
		if err != nil {
			return err
		}
		o.Modes = m
	}
	if o.Pods == 0 {
		o.Pods = DefaultPods
	}
	if o.Rounds == 0 {
		o.Rounds = DefaultRounds
	}
	if o.Workload == "" {
		o.Workload = WorkCPU
	}
	if o.InitCPU == 0 {
		o.InitCPU = DefaultInitCPU
	}
	if o.IOBytes == 0 {
		o.IOBytes = DefaultIOBytes
	}
	if o.PatchSize == 0 {
		o.PatchSize = DefaultPatchSize
	}
	if o.PrefetchTimeout == 0 {
		o.PrefetchTimeout = DefaultPrefetchTimeout
	}
	if o.ProbePeriod == 0 {
		o.ProbePeriod = time.Second
	}
	if o.Deadline == 0 {
		o.Deadline = DefaultDeadline
	}
	if o.Quiet == (bench.Quiet{}) {
		o.Quiet = bench.DefaultQuiet()
	}
	for _, s := range o.Scenarios {
		if !slices.Contains(AllScenarios, s) {
			return fmt.Errorf("kubebench: scenario %q: want one of %v", s, AllScenarios)
		}
	}
	if err := o.checkRemote(); err != nil {
		return err
	}
	if o.Load > 0 && o.Kubeconfig != "" {
		return errors.New("kubebench: --load runs on this machine's node; an existing cluster's node has its own")
	}
	if o.CPUs != "" {
		if o.Kubeconfig != "" {
			return errors.New("kubebench: --cpus pins this machine's node; an existing cluster's node is its own size")
		}
		if _, err := testbed.ParseCPUs(o.CPUs); err != nil {
			return fmt.Errorf("kubebench: --cpus: %w", err)
		}
	}
	for _, m := range o.Modes {
		if m.Path != PathPacemaker {
			continue
		}
		if o.PacemakerBin == "" {
			return fmt.Errorf("kubebench: mode %s needs pod-pacemaker's binaries: --pacemaker-bin DIR (hack/pacemaker/build.sh builds them)", m.Name)
		}
		for _, b := range []string{"node-daemon", "cni-plugin"} {
			if _, err := os.Stat(filepath.Join(o.PacemakerBin, b)); err != nil {
				return fmt.Errorf("kubebench: mode %s: --pacemaker-bin %s: %w", m.Name, o.PacemakerBin, err)
			}
		}
	}
	switch o.Workload {
	case WorkCPU, WorkIO, WorkMixed, WorkFiles, WorkJIT:
	default:
		return fmt.Errorf("kubebench: workload %q: want cpu, io, mixed, files or jit", o.Workload)
	}
	switch {
	case o.Pods < 1 || o.Pods > 200:
		return fmt.Errorf("kubebench: pods %d: want 1 to 200 (the pod network is a /24, the rolling update surges 25%%)", o.Pods)
	case o.Rounds < 1:
		return fmt.Errorf("kubebench: rounds %d: want at least 1", o.Rounds)
	case len(o.Modes) == 0:
		return errors.New("kubebench: no modes")
	case o.Load < 0 || o.Load > 64:
		return fmt.Errorf("kubebench: load %d: want 0 to 64 busy loops", o.Load)
	case o.ProbePeriod < time.Second || o.ProbePeriod > 5*time.Minute || o.ProbePeriod%time.Second != 0:
		return fmt.Errorf("kubebench: probe period %s: want whole seconds from 1s to 5m", o.ProbePeriod)
	case o.InitCPU < 0, o.IOBytes < 0, o.PatchSize < 1, o.RegistryBandwidth < 0, o.RegistryRTT < 0,
		o.PrefetchTimeout < 0, o.Deadline < 0:
		return errors.New("kubebench: negative durations, sizes or counts")
	}
	return nil
}

// wants reports whether scenario s was asked for.
func (o *Options) wants(s string) bool { return slices.Contains(o.Scenarios, s) }

// checkRemote checks the options of a run on an existing cluster: what
// the benchmark cannot change there is refused up front.
func (o *Options) checkRemote() error {
	if o.Kubeconfig == "" {
		for _, m := range o.Modes {
			if m.Path == PathNode || m.Path == PathNodeBypass {
				return fmt.Errorf("kubebench: mode %s runs on an existing cluster's node: give --kubeconfig and --node", m.Name)
			}
		}
		if o.Node != "" || o.Registry != "" || o.StartgatedSocket != "" || o.AllowBusyNode {
			return errors.New("kubebench: --node, --registry, --startgated-socket and --allow-busy-node go with --kubeconfig")
		}
		return nil
	}
	switch {
	case o.Node == "":
		return errors.New("kubebench: --kubeconfig needs --node: the node to run on")
	case o.Registry == "":
		return errors.New("kubebench: --kubeconfig needs --registry: a repository prefix the node pulls from and you can push to (the app and its patches go there)")
	case o.wants(Reboot):
		return errors.New("kubebench: the reboot scenario runs only on this machine's node: an existing cluster's node is not the benchmark's to reboot")
	}
	for _, m := range o.Modes {
		if m.Path != PathNode && m.Path != PathNodeBypass {
			return fmt.Errorf("kubebench: mode %s: on an existing cluster only node and node-bypass run, with +ifnotpresent or +startup (its kubelet and startgated are not the benchmark's to reconfigure)", m.Name)
		}
		if m.ParallelPulls != 0 || m.PullQPS != nil {
			return fmt.Errorf("kubebench: mode %s: kubelet's pull settings are the node's own on an existing cluster", m.Name)
		}
		if m.Prefetch || m.Limit > 0 {
			return fmt.Errorf("kubebench: mode %s: not on an existing cluster", m.Name)
		}
	}
	return nil
}
