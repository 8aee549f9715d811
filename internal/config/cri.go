package config

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/startgate/startgate/internal/admission"
	"github.com/startgate/startgate/internal/criproxy"
	"k8s.io/apimachinery/pkg/util/validation"
)

// CRI is the [cri] section: the CRI proxy kubelet talks to instead of
// containerd.
type CRI struct {
	// Enabled serves the CRI proxy. Off by default: it is useful only once
	// kubelet's --container-runtime-endpoint points at Socket.
	Enabled bool `toml:"enabled"`
	// Socket is the proxy's unix socket, used when systemd does not pass
	// one named "cri". Its mode is 0600, not configurable: kubelet runs
	// as root and nothing else has business starting containers.
	Socket string `toml:"socket"`
	// ContainerdSocket is containerd's CRI socket, the proxy's upstream.
	ContainerdSocket string `toml:"containerd_socket"`
	// ClassAnnotation names the pod annotation that picks a class and
	// overrides the rules; "" turns the override off.
	ClassAnnotation string `toml:"class_annotation"`
	// CriticalAnnotationNamespaces are the namespaces whose pods the
	// annotation may make critical (skip the gate).
	CriticalAnnotationNamespaces []string `toml:"critical_annotation_namespaces"`
	// DefaultClass is the class of a pod no rule matches.
	DefaultClass string `toml:"default_class"`
	// Rules map pods to classes, first match wins. A file that gives
	// [[cri.rules]] replaces the default rules; rules = [] has none.
	Rules  []Rule `toml:"rules"`
	Warmup Warmup `toml:"warmup"`
	Pulls  Pulls  `toml:"pulls"`
}

// Rule is one [[cri.rules]] entry; every field that is set must match.
type Rule struct {
	Namespace string `toml:"namespace,omitempty"`
	// Label and Annotation are "key" (present) or "key=value".
	Label      string `toml:"label,omitempty"`
	Annotation string `toml:"annotation,omitempty"`
	// Static matches static and mirror pods.
	Static bool   `toml:"static,omitempty"`
	Class  string `toml:"class"`
}

// Warmup is [cri.warmup]: when a started container gives its slot back.
type Warmup struct {
	Poll        Duration `toml:"poll"`
	SettleCores float64  `toml:"settle_cores"`
	SettlePolls int      `toml:"settle_polls"`
	Cap         Duration `toml:"cap"`
	// SettleBeforeReady is criproxy.WarmupPolicy.SettleBeforeReady.
	SettleBeforeReady bool `toml:"settle_before_ready"`
	// CPUSource is "cgroup" (the container's cgroup, read by startgated)
	// or "cri" (ContainerStats on every poll).
	CPUSource string `toml:"cpu_source"`
}

// Pulls is [cri.pulls]: the image pull lane.
type Pulls struct {
	Enabled     bool     `toml:"enabled"`
	Min         int      `toml:"min"`
	Max         int      `toml:"max"`
	IOTarget    float64  `toml:"io_target"`
	Interval    Duration `toml:"interval"`
	ShareWindow Duration `toml:"share_window"`
}

// The CRI proxy's warm-up and pull lane defaults. criproxy applies the
// same values to zero fields (WarmupPolicy.withDefaults,
// PullPolicy.withDefaults) but does not export them; these mirror them
// until it does, and are the only copy in this package.
var (
	defaultWarmup = criproxy.DefaultWarmupPolicy()
	defaultPulls  = criproxy.DefaultPullPolicy()
)

// defaultCRI is the [cri] section of a node with no config file; the
// classification comes from criproxy.DefaultClassifier.
func defaultCRI() CRI {
	cl := criproxy.DefaultClassifier()
	rules := make([]Rule, 0, len(cl.Rules))
	for _, r := range cl.Rules {
		rules = append(rules, Rule{Namespace: r.Namespace, Label: r.Label, Annotation: r.Annotation, Static: r.Static, Class: r.Class.String()})
	}
	return CRI{
		Enabled:                      false,
		Socket:                       "/run/startgate/cri.sock",
		ContainerdSocket:             "/run/containerd/containerd.sock",
		ClassAnnotation:              cl.ClassAnnotation,
		CriticalAnnotationNamespaces: slices.Clone(cl.CriticalNamespaces),
		DefaultClass:                 cl.Default.String(),
		Rules:                        rules,
		Warmup: Warmup{
			Poll:              Duration(defaultWarmup.Poll),
			SettleCores:       defaultWarmup.SettleCores,
			SettlePolls:       defaultWarmup.SettlePolls,
			Cap:               Duration(defaultWarmup.Cap),
			SettleBeforeReady: defaultWarmup.SettleBeforeReady,
			CPUSource:         cpuSource(defaultWarmup.CPUFromCRI),
		},
		Pulls: Pulls{
			Enabled:     !defaultPulls.Passthrough,
			Min:         defaultPulls.Min,
			Max:         defaultPulls.Max,
			IOTarget:    defaultPulls.IOTarget,
			Interval:    Duration(defaultPulls.Interval),
			ShareWindow: Duration(defaultPulls.ShareWindow),
		},
	}
}

var criDocs = map[string]string{
	"cri": "The CRI proxy: kubelet's --container-runtime-endpoint points at socket, and\n" +
		"startgated forwards every call to containerd, gating the ones that start things.",
	"cri.enabled": "Serve the CRI proxy. Off until kubelet is pointed at it; --cri-socket or\n" +
		"--containerd-socket on the command line turn it on.",
	"cri.socket": "The proxy's unix socket (mode 0600: kubelet runs as root), used when systemd\n" +
		"does not pass one named \"cri\".",
	"cri.containerd_socket": "containerd's CRI socket. containerd may start after startgated: calls get\n" +
		"Unavailable until it is up, and the proxy reconnects by itself.",
	"cri.class_annotation": "Pod annotation whose value (critical, high, normal, low, background) picks the\n" +
		"pod's class over the rules; \"\" turns the override off.",
	"cri.critical_annotation_namespaces": "Namespaces whose pods class_annotation may make critical (skip the gate);\n" +
		"elsewhere the annotation's critical is not honoured (logged once per pod) and\n" +
		"the rules pick the class. [] lets no pod skip the gate by annotation.",
	"cri.default_class": "Class of a pod no rule matches. The tenant is always the pod's namespace.",
	"cri.rules": "Rules map pods to classes; the first rule whose every set field matches wins.\n" +
		"namespace: the pod's namespace. label, annotation: \"key\" (present) or \"key=value\".\n" +
		"static: static and mirror pods (kubernetes.io/config.source other than api).\n" +
		"class: critical bypasses the gate; high, normal, low, background queue in that order.\n" +
		"Giving [[cri.rules]] replaces these defaults; rules = [] under [cri] has none.",
	"cri.rules.namespace":  "",
	"cri.rules.label":      "",
	"cri.rules.annotation": "",
	"cri.rules.static":     "",
	"cri.rules.class":      "",
	"cri.warmup": "A pod's start slot, taken at RunPodSandbox, is held through its containers'\n" +
		"warm-up: until their CPU use settles (or, with [kubernetes] on, a pod with a\n" +
		"readiness or startup probe reports Ready), they exit, the pod stops, or cap\n" +
		"passes. Its cap in the gate also covers the CRI call's own deadline, so a slot\n" +
		"is never taken back from a call still inside containerd.",
	"cri.warmup.poll": "How often a warming container's CPU use is read.",
	"cri.warmup.cpu_source": "Where that CPU use is read: \"cgroup\", the container's own cgroup counter (one\n" +
		"file read by startgated; a container whose cgroup it cannot find goes through\n" +
		"CRI), or \"cri\", a ContainerStats call through containerd and the container's\n" +
		"shim on every poll, which costs the node several times the CPU.",
	"cri.warmup.settle_cores": "Below this many cores of CPU use a container counts as idle.",
	"cri.warmup.settle_polls": "Idle for this many polls in a row: warm-up over, slot released.",
	"cri.warmup.cap":          "Longest a pod's warm-up holds its slot after the CRI call that took it.",
	"cri.warmup.settle_before_ready": "With [kubernetes] on, a pod with a readiness or startup probe holds its slot\n" +
		"until Ready; true ends its warm-up when its CPU settles too, if that comes first\n" +
		"(an idle container waiting for its probe's next period holds no slot).",
	"cri.pulls": "Image pulls run in a lane of their own, sized from IO pressure.",
	"cri.pulls.enabled": "false forwards every PullImage to the runtime as kubelet sent it: no lane, no\n" +
		"shared resolutions, no join of a running prefetch. For a kubelet that paces its\n" +
		"own pulls (maxParallelImagePulls, registryPullQPS) as its operator wants.",
	"cri.pulls.min":       "Fewest pulls in flight node-wide.",
	"cri.pulls.max":       "Most pulls in flight node-wide.",
	"cri.pulls.io_target": "IO stall fraction, (0, 1], above which the lane shrinks by one per interval.",
	"cri.pulls.interval":  "How often the lane is resized.",
	"cri.pulls.share_window": "A pull for a pod of one controller generation (one ReplicaSet, StatefulSet or\n" +
		"DaemonSet revision, Job) of a reference that a pull for the same generation, with\n" +
		"the same credentials, resolved at the registry less than this long ago gets that\n" +
		"pull's image at once, if containerd still has it under that reference and no\n" +
		"prefetch knows a newer digest: a burst of imagePullPolicy Always pods pays the\n" +
		"registry's round trips (and token) once per window, not once per pod. A rollout\n" +
		"is a new generation, so a push before it is always seen; a push while one\n" +
		"generation's pods are created reaches them when the window ends. 0 turns it off;\n" +
		"at most 5m.",
}

// validate checks the [cri] section, whether or not it is enabled: a
// broken section would otherwise surface only on the day it is turned on.
func (c CRI) validate(apiSocket string) []error {
	var errs problems
	switch {
	case c.Socket == "":
		errs.add("cri.socket", "must not be empty")
	case filepath.Clean(c.Socket) == filepath.Clean(apiSocket):
		errs.add("cri.socket", "%q is also daemon.socket", c.Socket)
	}
	switch {
	case c.ContainerdSocket == "":
		errs.add("cri.containerd_socket", "must not be empty")
	case !filepath.IsAbs(c.ContainerdSocket):
		// A daemon's working directory is not the operator's: a relative
		// path would resolve against wherever systemd started it.
		errs.add("cri.containerd_socket", "%q must be an absolute path", c.ContainerdSocket)
	case filepath.Clean(c.ContainerdSocket) == filepath.Clean(c.Socket):
		// The proxy would forward every call to itself.
		errs.add("cri.containerd_socket", "%q is also cri.socket", c.ContainerdSocket)
	}
	if strings.ContainsAny(c.ClassAnnotation, "= \t") {
		errs.add("cri.class_annotation", "%q is not an annotation key", c.ClassAnnotation)
	}
	for i, ns := range c.CriticalAnnotationNamespaces {
		if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
			errs.add(fmt.Sprintf("cri.critical_annotation_namespaces[%d]", i+1), "%q is not a namespace: %s", ns, strings.Join(msgs, "; "))
		}
	}
	if c.DefaultClass == "" {
		errs.add("cri.default_class", "must be set (one of %s)", classList)
	} else if _, err := admission.ParseClass(c.DefaultClass); err != nil {
		errs.add("cri.default_class", "%q not one of %s", c.DefaultClass, classList)
	}
	for i, r := range c.Rules {
		key := fmt.Sprintf("cri.rules[%d]", i+1)
		if r.Namespace == "" && r.Label == "" && r.Annotation == "" && !r.Static {
			errs.add(key, "matches nothing: set namespace, label, annotation or static")
		}
		if r.Label != "" && !validSelector(r.Label) {
			errs.add(key+".label", "%q: want key or key=value", r.Label)
		}
		if r.Annotation != "" && !validSelector(r.Annotation) {
			errs.add(key+".annotation", "%q: want key or key=value", r.Annotation)
		}
		if r.Class == "" {
			errs.add(key+".class", "must be set (one of %s)", classList)
		} else if _, err := admission.ParseClass(r.Class); err != nil {
			errs.add(key+".class", "%q not one of %s", r.Class, classList)
		}
	}
	w := c.Warmup
	errs.duration("cri.warmup.poll", w.Poll, 10*time.Millisecond, time.Minute)
	errs.positive("cri.warmup.settle_cores", w.SettleCores, 1024)
	errs.count("cri.warmup.settle_polls", w.SettlePolls, 1, 1000)
	errs.duration("cri.warmup.cap", w.Cap, time.Second, time.Hour)
	if w.CPUSource != "cgroup" && w.CPUSource != "cri" {
		errs.add("cri.warmup.cpu_source", "%q: want \"cgroup\" or \"cri\"", w.CPUSource)
	}
	if w.Poll > 0 && w.Cap < w.Poll {
		errs.add("cri.warmup.cap", "%v is shorter than cri.warmup.poll %v", w.Cap.Std(), w.Poll.Std())
	}
	p := c.Pulls
	errs.count("cri.pulls.min", p.Min, 1, 64)
	errs.count("cri.pulls.max", p.Max, 1, 64)
	if p.Max < p.Min {
		errs.add("cri.pulls.max", "%d below cri.pulls.min %d", p.Max, p.Min)
	}
	errs.positive("cri.pulls.io_target", p.IOTarget, 1)
	errs.duration("cri.pulls.interval", p.Interval, 10*time.Millisecond, time.Minute)
	if p.ShareWindow < 0 || p.ShareWindow.Std() > criproxy.MaxShareWindow {
		errs.add("cri.pulls.share_window", "%v out of range [0s, %v]", p.ShareWindow.Std(), criproxy.MaxShareWindow)
	}
	return errs
}

var classList = func() string {
	names := make([]string, len(admission.Classes))
	for i, c := range admission.Classes {
		names[i] = c.String()
	}
	return strings.Join(names, ", ")
}()

func validSelector(s string) bool {
	k, _, _ := strings.Cut(s, "=")
	return k != "" && !strings.ContainsAny(k, " \t")
}

// Classifier maps the [cri] section's classification onto the proxy's;
// call after Validate (an unparsable class maps to normal).
func (c *Config) Classifier() *criproxy.Classifier {
	cl := &criproxy.Classifier{
		ClassAnnotation:    c.CRI.ClassAnnotation,
		CriticalNamespaces: slices.Clone(c.CRI.CriticalAnnotationNamespaces),
		Default:            parseClassOr(c.CRI.DefaultClass, admission.Normal),
		Rules:              make([]criproxy.Rule, 0, len(c.CRI.Rules)),
	}
	for _, r := range c.CRI.Rules {
		cl.Rules = append(cl.Rules, criproxy.Rule{
			Namespace: r.Namespace, Label: r.Label, Annotation: r.Annotation, Static: r.Static,
			Class: parseClassOr(r.Class, admission.Normal),
		})
	}
	return cl
}

func parseClassOr(s string, def admission.Class) admission.Class {
	c, err := admission.ParseClass(s)
	if err != nil {
		return def
	}
	return c
}

// Warmup maps [cri.warmup] onto the proxy's warm-up policy.
func (c *Config) Warmup() criproxy.WarmupPolicy {
	w := c.CRI.Warmup
	return criproxy.WarmupPolicy{Poll: w.Poll.Std(), SettleCores: w.SettleCores, SettlePolls: w.SettlePolls, Cap: w.Cap.Std(), SettleBeforeReady: w.SettleBeforeReady,
		CPUFromCRI: w.CPUSource == "cri"}
}

// cpuSource names WarmupPolicy.CPUFromCRI as cri.warmup.cpu_source does.
func cpuSource(fromCRI bool) string {
	if fromCRI {
		return "cri"
	}
	return "cgroup"
}

// Pulls maps [cri.pulls] onto the proxy's pull lane policy.
func (c *Config) Pulls() criproxy.PullPolicy {
	p := c.CRI.Pulls
	return criproxy.PullPolicy{Passthrough: !p.Enabled, Min: p.Min, Max: p.Max, IOTarget: p.IOTarget, Interval: p.Interval.Std(), ShareWindow: p.ShareWindow.Std()}
}
