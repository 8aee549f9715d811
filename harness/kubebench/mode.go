package kubebench

import (
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Path is what stands between the kubelet and containerd in a mode.
type Path string

const (
	// PathDirect: the kubelet on containerd's socket.
	PathDirect Path = "direct"
	// PathProxy: the kubelet on startgated with the gate bypassed
	// (SetBypass, as `startgatectl bypass on` does): the CRI proxy and
	// its pull path (lane, shared resolutions) alone.
	PathProxy Path = "proxy"
	// PathGate: the kubelet on startgated with [cri.pulls] enabled =
	// false: admission alone, every pull forwarded as the kubelet sent it.
	PathGate Path = "gate"
	// PathStartgate: the kubelet on startgated as shipped, gate and pull
	// path both.
	PathStartgate Path = "startgate"
	// PathPacemaker: the kubelet on containerd, with pod-pacemaker's CNI
	// plugin chained on the pod network and its node daemon running.
	PathPacemaker Path = "pacemaker"
	// PathNode: an existing cluster's node as it runs (--kubeconfig).
	PathNode Path = "node"
	// PathNodeBypass: that node with its startgated's gate bypassed
	// (--startgated-socket): what the gate buys there.
	PathNodeBypass Path = "node-bypass"
)

// UnlimitedPulls as Mode.ParallelPulls: serializeImagePulls false and no
// maxParallelImagePulls, every pull at once.
const UnlimitedPulls = -1

// Mode is one way of running the node: what is in the kubelet's path, and
// how the kubelet and the pods are configured. A mode's name is its
// spelling in --modes, which ParseModes reads back.
type Mode struct {
	Name string `json:"name"`
	Path Path   `json:"path"`
	// Limit pins startgated's in-flight limit (fixed-K: [admission.limits]
	// inflight = K, rate 1000/s), or sets pod-pacemaker's concurrency
	// (pacemaker-K); 0 is the product's own setting.
	Limit int `json:"limit,omitempty"`
	// Prefetch: [prefetch] on, and before each rollout the patch is
	// announced (PrefetchAdd) and fetched; the fetch is not counted.
	Prefetch bool `json:"prefetch,omitempty"`
	// ParallelPulls: 0 is the kubelet's default (one pull at a time),
	// N > 0 is maxParallelImagePulls N, UnlimitedPulls every pull at once.
	ParallelPulls int `json:"parallel_pulls,omitempty"`
	// PullQPS, when set, is the kubelet's registryPullQPS (0: no limit);
	// nil is its default, 5 a second with a burst of 10.
	PullQPS *int32 `json:"pull_qps,omitempty"`
	// PullPolicy is the app container's imagePullPolicy; "" is Always.
	// With IfNotPresent a rollout moves the pod template to the patch's
	// digest (a tag the node has is never pulled again), as users of
	// IfNotPresent roll out a patch.
	PullPolicy corev1.PullPolicy `json:"pull_policy,omitempty"`
	// StartupProbe gives the app a startup probe, the readiness probe's
	// HTTP GET every second: what pod-pacemaker waits for before it
	// releases a slot (else it releases at the container's start).
	StartupProbe bool `json:"startup_probe,omitempty"`
	// Config is more startgated TOML for this mode alone (--variant).
	Config string `json:"config,omitempty"`
}

// viaGate reports whether the mode puts startgated in the kubelet's path.
func (m Mode) viaGate() bool {
	switch m.Path {
	case PathProxy, PathGate, PathStartgate:
		return true
	}
	return false
}

// pullPolicy is the app container's imagePullPolicy.
func (m Mode) pullPolicy() corev1.PullPolicy {
	if m.PullPolicy == "" {
		return corev1.PullAlways
	}
	return m.PullPolicy
}

// Attribution is the modes that take startgate apart: direct, the
// proxy's pull path alone, the gate alone, both, both with prefetch.
const Attribution = "direct,proxy,gate,startgate,startgate-prefetch"

// Alternatives is what a user can do without startgate: kubelet's
// parallel pulls, no registry QPS limit, IfNotPresent, a constant limit.
const Alternatives = "direct+parallel-2,direct+parallel-4,direct+parallel-all,direct+qps-0,direct+ifnotpresent,startgate+ifnotpresent,fixed-4"

// DefaultModes is --modes' default: every attribution mode and every
// user alternative, in one run.
const DefaultModes = Attribution + "," + Alternatives

// PacemakerModes is pod-pacemaker at its chart's default and at fixed
// limits around startgate's (with a startup probe, so that its slot
// covers the app's init as startgate's does): run with the defaults when
// --pacemaker-bin is given.
const PacemakerModes = "pacemaker,pacemaker-2+startup,pacemaker-4+startup,pacemaker-8+startup"

// QuickModes is --quick's: direct, its best-known alternative, the gate
// alone and startgate with and without prefetch.
const QuickModes = "direct,direct+parallel-4,gate,startgate,startgate-prefetch"

// ParseModes reads --modes: a comma-separated list of BASE[+OPTION...].
//
// BASE is direct, proxy, gate, startgate, startgate-prefetch, fixed-K
// (startgate with its in-flight limit pinned at K), fixed (fixed-2,
// fixed-4, fixed-8), pacemaker (pod-pacemaker at its documented
// settings) or pacemaker-K (at concurrency K).
//
// OPTION is parallel-N (the kubelet's maxParallelImagePulls N),
// parallel-all (serializeImagePulls false, no maximum), qps-N (its
// registryPullQPS N; 0 is no limit), ifnotpresent (imagePullPolicy
// IfNotPresent) or startup (a startup probe). Order is kept; a mode
// named twice is refused.
func ParseModes(s string) ([]Mode, error) {
	var modes []Mode
	seen := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			return nil, fmt.Errorf("kubebench: empty mode in %q", s)
		}
		base, opts, _ := strings.Cut(f, "+")
		var ms []Mode
		if base == "fixed" {
			for _, k := range []int{2, 4, 8} {
				ms = append(ms, Mode{Name: "fixed-" + strconv.Itoa(k), Path: PathStartgate, Limit: k})
			}
		} else {
			m, err := parseBase(base)
			if err != nil {
				return nil, err
			}
			ms = []Mode{m}
		}
		for i := range ms {
			if opts != "" {
				if err := ms[i].parseOptions(opts); err != nil {
					return nil, fmt.Errorf("kubebench: mode %q: %w", f, err)
				}
				ms[i].Name += "+" + opts
			}
			if seen[ms[i].Name] {
				return nil, fmt.Errorf("kubebench: mode %s given twice", ms[i].Name)
			}
			seen[ms[i].Name] = true
			modes = append(modes, ms[i])
		}
	}
	return modes, nil
}

func parseBase(base string) (Mode, error) {
	m := Mode{Name: base}
	positive := func(prefix string) (int, error) {
		k, err := strconv.Atoi(strings.TrimPrefix(base, prefix))
		if err != nil || k < 1 || k > 1000 {
			return 0, fmt.Errorf("kubebench: mode %q: want %sK with K from 1 to 1000", base, prefix)
		}
		return k, nil
	}
	var err error
	switch {
	case base == "direct":
		m.Path = PathDirect
	case base == "proxy":
		m.Path = PathProxy
	case base == "gate":
		m.Path = PathGate
	case base == "startgate":
		m.Path = PathStartgate
	case base == "startgate-prefetch":
		m.Path, m.Prefetch = PathStartgate, true
	case base == "pacemaker":
		m.Path = PathPacemaker
	case base == "node":
		m.Path = PathNode
	case base == "node-bypass":
		m.Path = PathNodeBypass
	case strings.HasPrefix(base, "fixed-"):
		m.Path = PathStartgate
		m.Limit, err = positive("fixed-")
	case strings.HasPrefix(base, "pacemaker-"):
		m.Path = PathPacemaker
		m.Limit, err = positive("pacemaker-")
	default:
		err = fmt.Errorf("kubebench: unknown mode %q (want direct, proxy, gate, startgate, startgate-prefetch, fixed-K, fixed, pacemaker or pacemaker-K; on an existing cluster node or node-bypass; each with +OPTIONs)", base)
	}
	return m, err
}

// parseOptions applies "+"-separated options to m.
func (m *Mode) parseOptions(opts string) error {
	seen := map[string]bool{}
	for _, o := range strings.Split(opts, "+") {
		kind, _, _ := strings.Cut(o, "-")
		if seen[kind] {
			return fmt.Errorf("option %s given twice", kind)
		}
		seen[kind] = true
		switch {
		case o == "parallel-all":
			m.ParallelPulls = UnlimitedPulls
		case strings.HasPrefix(o, "parallel-"):
			n, err := strconv.Atoi(strings.TrimPrefix(o, "parallel-"))
			if err != nil || n < 1 || n > 1000 {
				return fmt.Errorf("option %q: want parallel-N with N from 1 to 1000, or parallel-all", o)
			}
			m.ParallelPulls = n
		case strings.HasPrefix(o, "qps-"):
			n, err := strconv.ParseInt(strings.TrimPrefix(o, "qps-"), 10, 32)
			if err != nil || n < 0 || n > 1000 {
				return fmt.Errorf("option %q: want qps-N with N from 0 (no limit) to 1000", o)
			}
			q := int32(n)
			m.PullQPS = &q
		case o == "ifnotpresent":
			m.PullPolicy = corev1.PullIfNotPresent
		case o == "startup":
			m.StartupProbe = true
		default:
			return fmt.Errorf("unknown option %q (want parallel-N, parallel-all, qps-N, ifnotpresent or startup)", o)
		}
	}
	return nil
}

// Describe says what the mode runs, for the report.
func (m Mode) Describe() string {
	var parts []string
	switch m.Path {
	case PathDirect:
		parts = append(parts, "kubelet on containerd")
	case PathProxy:
		parts = append(parts, "startgated with the gate bypassed: the pull path alone")
	case PathGate:
		parts = append(parts, "startgated with [cri.pulls] off: the gate alone")
	case PathStartgate:
		parts = append(parts, "startgated as shipped")
	case PathPacemaker:
		parts = append(parts, "kubelet on containerd, pod-pacemaker chained on the pod network")
	case PathNode:
		parts = append(parts, "the node as it runs")
	case PathNodeBypass:
		parts = append(parts, "the node with its startgated bypassed")
	}
	if m.Config != "" {
		parts = append(parts, "a config variant (--variant)")
	}
	if m.Limit > 0 {
		parts = append(parts, fmt.Sprintf("in-flight limit %d", m.Limit))
	}
	if m.Prefetch {
		parts = append(parts, "the patch prefetched")
	}
	switch {
	case m.ParallelPulls == UnlimitedPulls:
		parts = append(parts, "kubelet pulls every image at once")
	case m.ParallelPulls > 0:
		parts = append(parts, fmt.Sprintf("kubelet pulls up to %d at once", m.ParallelPulls))
	}
	if m.PullQPS != nil {
		if *m.PullQPS == 0 {
			parts = append(parts, "no registryPullQPS limit")
		} else {
			parts = append(parts, fmt.Sprintf("registryPullQPS %d", *m.PullQPS))
		}
	}
	parts = append(parts, "imagePullPolicy "+string(m.pullPolicy()))
	if m.StartupProbe {
		parts = append(parts, "a startup probe")
	}
	return strings.Join(parts, ", ")
}
