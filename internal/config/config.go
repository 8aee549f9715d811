package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/distribution/reference"
	"github.com/docker/go-units"

	"github.com/startgate/startgate/internal/admission"
	"github.com/startgate/startgate/internal/criproxy"
	"github.com/startgate/startgate/internal/prefetch"
	"github.com/startgate/startgate/internal/pressure"
)

// Version is the only config version this build reads.
const Version = 1

// DefaultPath is where startgated looks when --config is not given.
const DefaultPath = "/etc/startgate/config.toml"

// Config is the whole file.
type Config struct {
	Version   int       `toml:"version"`
	Daemon    Daemon    `toml:"daemon"`
	Metrics   Metrics   `toml:"metrics"`
	Pressure  Pressure  `toml:"pressure"`
	Admission Admission `toml:"admission"`
	CRI       CRI       `toml:"cri"`
	Prefetch  Prefetch  `toml:"prefetch"`
}

// Daemon is the [daemon] section.
type Daemon struct {
	// Socket is the gRPC API's unix socket, used when systemd does not
	// pass one in.
	Socket string `toml:"socket"`
	// SocketMode is an octal permission string such as "0660".
	SocketMode string `toml:"socket_mode"`
	// SocketGroup owns the socket and may call the mutating RPCs; a name
	// or a numeric gid, "" for the daemon's primary group.
	SocketGroup string `toml:"socket_group"`
	// LogLevel is a zap level: debug, info, warn or error.
	LogLevel string `toml:"log_level"`
	// LogFormat is auto (JSON unless stderr is a terminal), json or
	// console.
	LogFormat       string   `toml:"log_format"`
	ShutdownTimeout Duration `toml:"shutdown_timeout"`
}

// Metrics is the [metrics] section.
type Metrics struct {
	// Listen is the Prometheus endpoint's TCP address; "" turns it off.
	// 127.0.0.1:9464 keeps it on the node.
	Listen string `toml:"listen"`
}

// Pressure is the [pressure] section.
type Pressure struct {
	// Source is proc (system-wide /proc/pressure) or cgroup (a cgroup v2
	// directory's *.pressure files, CgroupDir).
	Source    string   `toml:"source"`
	ProcRoot  string   `toml:"proc_root"`
	CgroupDir string   `toml:"cgroup_dir"`
	Interval  Duration `toml:"interval"`
	// Smoothing is the EWMA weight of the newest interval, (0, 1].
	Smoothing float64 `toml:"smoothing"`
}

// Admission is the [admission] section.
type Admission struct {
	MaxQueue       int      `toml:"max_queue"`
	DeadlineMargin Duration `toml:"deadline_margin"`
	// OnDeadline is admit or refuse: what happens to a waiter whose
	// deadline comes within DeadlineMargin.
	OnDeadline string   `toml:"on_deadline"`
	Aging      Duration `toml:"aging"`
	MaxHold    Duration `toml:"max_hold"`
	Targets    Targets  `toml:"targets"`
	Limits     Limits   `toml:"limits"`
}

// Targets is [admission.targets]: PSI "some" stall fractions above which
// the controller backs off.
type Targets struct {
	CPU    float64 `toml:"cpu"`
	IO     float64 `toml:"io"`
	Memory float64 `toml:"memory"`
}

// Limits is [admission.limits].
type Limits struct {
	MinInFlightPerCore float64 `toml:"min_inflight_per_core"`
	MaxInFlightPerCore float64 `toml:"max_inflight_per_core"`
	MinRatePerCore     float64 `toml:"min_rate_per_core"`
	MaxRatePerCore     float64 `toml:"max_rate_per_core"`
	// Burst is the token bucket's depth; 0 is one per core.
	Burst          int     `toml:"burst"`
	DecreaseFactor float64 `toml:"decrease_factor"`
	// GrowBelow: limits grow only while every resource is under this
	// fraction of its target; between it and the target they hold.
	GrowBelow    float64 `toml:"grow_below"`
	IncreaseStep int     `toml:"increase_step"`
	RateStep     float64 `toml:"rate_step"`
	// InFlight and Rate pin a limit; 0 leaves it to the controller.
	InFlight int     `toml:"inflight"`
	Rate     float64 `toml:"rate"`
	// StaticInFlight and StaticRate apply without PSI; 0 is 2 in flight
	// and 5 starts per second per core.
	StaticInFlight int     `toml:"static_inflight"`
	StaticRate     float64 `toml:"static_rate"`
}

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
}

// Pulls is [cri.pulls]: the image pull lane.
type Pulls struct {
	Min      int      `toml:"min"`
	Max      int      `toml:"max"`
	IOTarget float64  `toml:"io_target"`
	Interval Duration `toml:"interval"`
}

// Prefetch is the [prefetch] section: watch the tags this node runs and
// fetch a new digest's missing layers into containerd before kubelet
// pulls it (issue 4).
type Prefetch struct {
	// Enabled runs the prefetch manager. Off by default.
	Enabled bool `toml:"enabled"`
	// ContainerdSocket is containerd's socket; "" means
	// cri.containerd_socket: prefetching into any other containerd than
	// the CRI's would be useless.
	ContainerdSocket string `toml:"containerd_socket"`
	// Snapshotter must be the one the CRI unpacks into.
	Snapshotter string   `toml:"snapshotter"`
	Interval    Duration `toml:"interval"`
	MaxBackoff  Duration `toml:"max_backoff"`
	Concurrency int      `toml:"concurrency"`
	LeaseExpiry Duration `toml:"lease_expiry"`
	// Bandwidth caps the registry bytes all fetches read together, per
	// second ("50MiB" is 50 MiB/s); 0 is unlimited.
	Bandwidth Size `toml:"bandwidth"`
	// RollbackWindow is how long the digest a tag pointed at before the
	// node moved to a new one stays protected from containerd's GC, so
	// that a rollback starts warm too; 0 turns it off.
	RollbackWindow Duration `toml:"rollback_window"`
	// MoveTag moves the tag to a prefetched digest at once (a CRI pull of
	// local content). Off by default: kubelet decides when a rollout
	// starts, and pods of the tag started meanwhile would start the new
	// digest.
	MoveTag bool `toml:"move_tag"`
	// PlainHTTP lists registry hosts (host or host:port) spoken to over
	// plain HTTP besides the loopback hosts, which always are.
	PlainHTTP []string `toml:"plain_http"`
	// Registries are the registry hosts (host or host:port; without a
	// port, any port) that API- and webhook-triggered prefetches may fetch
	// from besides the registries of the images on the node, which always
	// may. Any other host is refused.
	Registries []string `toml:"registries"`
	// Watch are tag references watched from the start besides the node's
	// own images (an image about to be deployed here, say); their
	// registries are allowed as if listed in Registries.
	Watch []string `toml:"watch"`
	// DockerConfig is a docker config.json whose "auths" give registry
	// credentials; "" means none (anonymous). Read at start.
	DockerConfig string `toml:"docker_config"`
	// RequestTimeout bounds a registry's wait before answering a request
	// and a token request as a whole.
	RequestTimeout Duration      `toml:"request_timeout"`
	Notifications  Notifications `toml:"notifications"`
}

// Notifications is [prefetch.notifications]: the listener for the
// registry's push notification webhook.
type Notifications struct {
	// Listen is a TCP address; "" turns the listener off. It must be on a
	// loopback address unless AllowRemote.
	Listen      string `toml:"listen"`
	AllowRemote bool   `toml:"allow_remote"`
	// TokenFile holds the bearer token the registry sends; required when
	// Listen is set. It is read once at start, so the secret stays out of
	// the config file, and must not be readable by others.
	TokenFile string `toml:"token_file"`
}

// defaultPrefetch is the [prefetch] section of a node with no config
// file; the durations are the prefetch package's own defaults.
func defaultPrefetch() Prefetch {
	return Prefetch{
		Enabled:          false,
		ContainerdSocket: "",
		Snapshotter:      "overlayfs",
		Interval:         Duration(prefetch.DefaultInterval),
		MaxBackoff:       Duration(prefetch.DefaultMaxBackoff),
		Concurrency:      1,
		LeaseExpiry:      Duration(prefetch.DefaultLeaseExpiry),
		Bandwidth:        DefaultBandwidth,
		RollbackWindow:   Duration(DefaultRollbackWindow),
		MoveTag:          false,
		PlainHTTP:        []string{},
		Registries:       []string{},
		Watch:            []string{},
		DockerConfig:     "",
		RequestTimeout:   Duration(prefetch.DefaultRequestTimeout),
		Notifications:    Notifications{Listen: "", AllowRemote: false, TokenFile: ""},
	}
}

// DefaultBandwidth is prefetch.bandwidth's default: 100 MiB/s, about a
// tenth of a 10 Gbit/s link, so that background fetching never fills a
// node's network while its pods start; a 20 MB patch still lands in a
// fraction of a second.
const DefaultBandwidth = Size(100 << 20)

// DefaultRollbackWindow is prefetch.rollback_window's default: a day
// covers a rollout noticed bad the next morning.
const DefaultRollbackWindow = 24 * time.Hour

// Size is a byte count written in TOML the way docker and containerd
// write sizes (go-units' RAMInBytes): "50MiB", "50MB" and "50m" are all
// 50 MiB; "0" is zero. It keeps the string form in both directions.
type Size int64

// UnmarshalText parses a size; it must not be negative.
func (z *Size) UnmarshalText(b []byte) error {
	v, err := units.RAMInBytes(string(b))
	if err != nil || v < 0 {
		return fmt.Errorf("invalid size %q (want bytes, e.g. \"50MiB\" or \"0\")", b)
	}
	*z = Size(v)
	return nil
}

// MarshalText formats z in binary units ("50MiB"; "0B" when zero).
func (z Size) MarshalText() ([]byte, error) {
	return []byte(strings.ReplaceAll(units.BytesSize(float64(z)), " ", "")), nil
}

// Duration is a time.Duration written as a string ("250ms") in TOML.
// toml decodes a plain time.Duration from a string but encodes it as an
// integer of nanoseconds, which would make WriteTOML's output unreadable
// to people; this type keeps both directions in the string form.
type Duration time.Duration

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText formats d as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

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
		Enabled:          false,
		Socket:           "/run/startgate/cri.sock",
		ContainerdSocket: "/run/containerd/containerd.sock",
		ClassAnnotation:  cl.ClassAnnotation,
		DefaultClass:     cl.Default.String(),
		Rules:            rules,
		Warmup: Warmup{
			Poll:        Duration(defaultWarmup.Poll),
			SettleCores: defaultWarmup.SettleCores,
			SettlePolls: defaultWarmup.SettlePolls,
			Cap:         Duration(defaultWarmup.Cap),
		},
		Pulls: Pulls{
			Min:      defaultPulls.Min,
			Max:      defaultPulls.Max,
			IOTarget: defaultPulls.IOTarget,
			Interval: Duration(defaultPulls.Interval),
		},
	}
}

// DefaultConfig returns the configuration of a node with no config file.
// The admission section comes from admission.DefaultPolicy, the CRI
// section's rules from criproxy.DefaultClassifier.
func DefaultConfig() *Config {
	p := admission.DefaultPolicy()
	onDeadline := "admit"
	if p.DeadlineRefuse {
		onDeadline = "refuse"
	}
	return &Config{
		Version: Version,
		Daemon: Daemon{
			Socket:          "/run/startgate/startgate.sock",
			SocketMode:      "0660",
			SocketGroup:     "",
			LogLevel:        "info",
			LogFormat:       "auto",
			ShutdownTimeout: Duration(10 * time.Second),
		},
		Metrics: Metrics{Listen: ""},
		Pressure: Pressure{
			Source:    "proc",
			ProcRoot:  "/proc",
			CgroupDir: "",
			Interval:  Duration(250 * time.Millisecond),
			Smoothing: 0.5,
		},
		Admission: Admission{
			MaxQueue:       p.MaxQueue,
			DeadlineMargin: Duration(p.DeadlineMargin),
			OnDeadline:     onDeadline,
			Aging:          Duration(p.Aging),
			MaxHold:        Duration(p.MaxHold),
			Targets: Targets{
				CPU:    p.Targets[pressure.CPU],
				IO:     p.Targets[pressure.IO],
				Memory: p.Targets[pressure.Memory],
			},
			Limits: Limits{
				MinInFlightPerCore: p.MinInFlightPerCore,
				MaxInFlightPerCore: p.MaxInFlightPerCore,
				MinRatePerCore:     p.MinRatePerCore,
				MaxRatePerCore:     p.MaxRatePerCore,
				Burst:              p.Burst,
				DecreaseFactor:     p.DecreaseFactor,
				GrowBelow:          p.GrowBelow,
				IncreaseStep:       p.IncreaseStep,
				RateStep:           p.RateStep,
				InFlight:           p.FixedInFlight,
				Rate:               p.FixedRate,
				StaticInFlight:     p.StaticInFlight,
				StaticRate:         p.StaticRate,
			},
		},
		CRI:      defaultCRI(),
		Prefetch: defaultPrefetch(),
	}
}

// Load reads path over the defaults and validates the result. When
// explicit is false (the operator gave no --config) a missing file means
// defaults; an explicitly named file must exist.
func Load(path string, explicit bool) (*Config, error) {
	c := DefaultConfig()
	b, err := os.ReadFile(path)
	if err != nil {
		if !explicit && errors.Is(err, fs.ErrNotExist) {
			return c, nil
		}
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := c.decode(path, string(b)); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("config: %s: %w", path, err)
	}
	return c, nil
}

// decode reads the TOML text over c.
func (c *Config) decode(path, text string) error {
	// The version is read first and on its own so that a future version's
	// keys are reported as a version mismatch, not as unknown keys.
	var v struct {
		Version *int `toml:"version"`
	}
	if _, err := toml.Decode(text, &v); err != nil {
		return decodeError(path, err)
	}
	switch {
	case v.Version == nil:
		return fmt.Errorf("config: %s: version: missing (want version = %d)", path, Version)
	case *v.Version != Version:
		return fmt.Errorf("config: %s: version: %d not supported (want %d)", path, *v.Version, Version)
	}
	// toml decodes an array of tables over the elements already in the
	// slice, so a file's first rule would inherit the fields of the first
	// default rule. A file that gives rules replaces the defaults: decode
	// them into an empty slice and put the defaults back only when the
	// file has none.
	defaultRules := c.CRI.Rules
	c.CRI.Rules = nil
	md, err := toml.Decode(text, c)
	if err != nil {
		return decodeError(path, err)
	}
	if !md.IsDefined("cri", "rules") {
		c.CRI.Rules = defaultRules
	}
	if und := md.Undecoded(); len(und) > 0 {
		errs := make([]error, 0, len(und))
		for _, k := range und {
			errs = append(errs, fmt.Errorf("%s: unknown key", k))
		}
		return fmt.Errorf("config: %s: %w", path, errors.Join(errs...))
	}
	return nil
}

// decodeError rewrites toml's errors to lead with the key, as Validate's
// do.
func decodeError(path string, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		if pe.LastKey != "" {
			return fmt.Errorf("config: %s:%d: %s: %s", path, pe.Position.Line, pe.LastKey, pe.Message)
		}
		return fmt.Errorf("config: %s:%d: %s", path, pe.Position.Line, pe.Message)
	}
	return fmt.Errorf("config: %s: %w", path, err)
}

// Validate reports every problem in c, each naming its key and value.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key string, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.Version != Version {
		bad("version", "%d not supported (want %d)", c.Version, Version)
	}

	d := c.Daemon
	if d.Socket == "" {
		bad("daemon.socket", "must not be empty")
	}
	if _, err := parseMode(d.SocketMode); err != nil {
		bad("daemon.socket_mode", "%q %v", d.SocketMode, err)
	}
	if _, err := lookupGroup(d.SocketGroup); err != nil {
		bad("daemon.socket_group", "%q %v", d.SocketGroup, err)
	}
	switch d.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("daemon.log_level", "%q not one of debug, info, warn, error", d.LogLevel)
	}
	switch d.LogFormat {
	case "auto", "json", "console":
	default:
		bad("daemon.log_format", "%q not one of auto, json, console", d.LogFormat)
	}
	if d.ShutdownTimeout <= 0 {
		bad("daemon.shutdown_timeout", "%v must be positive", d.ShutdownTimeout.Std())
	}

	p := c.Pressure
	switch p.Source {
	case "proc":
		if p.ProcRoot == "" {
			bad("pressure.proc_root", "must not be empty when pressure.source is proc")
		}
	case "cgroup":
		if p.CgroupDir == "" {
			bad("pressure.cgroup_dir", "must be set when pressure.source is cgroup")
		}
	default:
		bad("pressure.source", "%q not one of proc, cgroup", p.Source)
	}
	if p.Interval <= 0 {
		bad("pressure.interval", "%v must be positive", p.Interval.Std())
	}
	if !(p.Smoothing > 0 && p.Smoothing <= 1) {
		bad("pressure.smoothing", "%v out of range (0, 1]", p.Smoothing)
	}

	a := c.Admission
	if a.MaxQueue < 1 {
		bad("admission.max_queue", "%d must be at least 1", a.MaxQueue)
	}
	if a.DeadlineMargin < 0 {
		bad("admission.deadline_margin", "%v is negative", a.DeadlineMargin.Std())
	}
	switch a.OnDeadline {
	case "admit", "refuse":
	default:
		bad("admission.on_deadline", "%q not one of admit, refuse", a.OnDeadline)
	}
	if a.Aging <= 0 {
		bad("admission.aging", "%v must be positive", a.Aging.Std())
	}
	if a.MaxHold <= 0 {
		bad("admission.max_hold", "%v must be positive", a.MaxHold.Std())
	}
	for _, t := range []struct {
		key string
		v   float64
	}{
		{"admission.targets.cpu", a.Targets.CPU},
		{"admission.targets.io", a.Targets.IO},
		{"admission.targets.memory", a.Targets.Memory},
	} {
		// Zero is excluded: a target of 0 would back off on any stall at
		// all and pin the gate at its floor.
		if !(t.v > 0 && t.v <= 1) {
			bad(t.key, "%v out of range (0, 1]", t.v)
		}
	}
	l := a.Limits
	for _, f := range []struct {
		key string
		v   float64
	}{
		{"admission.limits.min_inflight_per_core", l.MinInFlightPerCore},
		{"admission.limits.max_inflight_per_core", l.MaxInFlightPerCore},
		{"admission.limits.min_rate_per_core", l.MinRatePerCore},
		{"admission.limits.max_rate_per_core", l.MaxRatePerCore},
	} {
		if !(f.v > 0) || math.IsInf(f.v, 0) {
			bad(f.key, "%v must be positive and finite", f.v)
		}
	}
	if l.MaxInFlightPerCore < l.MinInFlightPerCore {
		bad("admission.limits.max_inflight_per_core", "%v below min_inflight_per_core %v", l.MaxInFlightPerCore, l.MinInFlightPerCore)
	}
	if l.MaxRatePerCore < l.MinRatePerCore {
		bad("admission.limits.max_rate_per_core", "%v below min_rate_per_core %v", l.MaxRatePerCore, l.MinRatePerCore)
	}
	if l.Burst < 0 {
		bad("admission.limits.burst", "%d is negative (0 is one per core)", l.Burst)
	}
	if !(l.GrowBelow > 0 && l.GrowBelow <= 1) {
		bad("admission.limits.grow_below", "%v out of range (0, 1]", l.GrowBelow)
	}
	if !(l.DecreaseFactor > 0 && l.DecreaseFactor < 1) {
		bad("admission.limits.decrease_factor", "%v out of range (0, 1)", l.DecreaseFactor)
	}
	if l.IncreaseStep < 1 {
		bad("admission.limits.increase_step", "%d must be at least 1", l.IncreaseStep)
	}
	if !(l.RateStep > 0) || math.IsInf(l.RateStep, 0) {
		bad("admission.limits.rate_step", "%v must be positive and finite", l.RateStep)
	}
	if l.InFlight < 0 {
		bad("admission.limits.inflight", "%d is negative (0 is controlled)", l.InFlight)
	}
	if l.Rate < 0 || math.IsInf(l.Rate, 0) || math.IsNaN(l.Rate) {
		bad("admission.limits.rate", "%v must be 0 (controlled) or positive", l.Rate)
	}
	if l.StaticInFlight < 0 {
		bad("admission.limits.static_inflight", "%d is negative (0 is 2 per core)", l.StaticInFlight)
	}
	if l.StaticRate < 0 || math.IsInf(l.StaticRate, 0) || math.IsNaN(l.StaticRate) {
		bad("admission.limits.static_rate", "%v must be 0 (5 per core) or positive", l.StaticRate)
	}

	errs = append(errs, c.CRI.validate(c.Daemon.Socket)...)
	errs = append(errs, c.Prefetch.validate(c.Metrics.Listen)...)

	if len(errs) == 0 {
		// The gate and the proxy have the last word on their settings;
		// this catches a rule the checks above do not know yet.
		if err := c.Policy().Validate(); err != nil {
			errs = append(errs, fmt.Errorf("admission: %w", err))
		}
		if err := c.Classifier().Validate(); err != nil {
			errs = append(errs, fmt.Errorf("cri.rules: %w", err))
		}
	}
	return errors.Join(errs...)
}

// validate checks the [cri] section, whether or not it is enabled: a
// broken section would otherwise surface only on the day it is turned on.
func (c CRI) validate(apiSocket string) []error {
	var errs []error
	bad := func(key string, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	switch {
	case c.Socket == "":
		bad("cri.socket", "must not be empty")
	case filepath.Clean(c.Socket) == filepath.Clean(apiSocket):
		bad("cri.socket", "%q is also daemon.socket", c.Socket)
	}
	switch {
	case c.ContainerdSocket == "":
		bad("cri.containerd_socket", "must not be empty")
	case filepath.Clean(c.ContainerdSocket) == filepath.Clean(c.Socket):
		// The proxy would forward every call to itself.
		bad("cri.containerd_socket", "%q is also cri.socket", c.ContainerdSocket)
	}
	if strings.ContainsAny(c.ClassAnnotation, "= \t") {
		bad("cri.class_annotation", "%q is not an annotation key", c.ClassAnnotation)
	}
	if c.DefaultClass == "" {
		bad("cri.default_class", "must be set (one of %s)", classList)
	} else if _, err := admission.ParseClass(c.DefaultClass); err != nil {
		bad("cri.default_class", "%q not one of %s", c.DefaultClass, classList)
	}
	for i, r := range c.Rules {
		key := fmt.Sprintf("cri.rules[%d]", i+1)
		if r.Namespace == "" && r.Label == "" && r.Annotation == "" && !r.Static {
			bad(key, "matches nothing: set namespace, label, annotation or static")
		}
		if r.Label != "" && !validSelector(r.Label) {
			bad(key+".label", "%q: want key or key=value", r.Label)
		}
		if r.Annotation != "" && !validSelector(r.Annotation) {
			bad(key+".annotation", "%q: want key or key=value", r.Annotation)
		}
		if r.Class == "" {
			bad(key+".class", "must be set (one of %s)", classList)
		} else if _, err := admission.ParseClass(r.Class); err != nil {
			bad(key+".class", "%q not one of %s", r.Class, classList)
		}
	}
	w := c.Warmup
	if w.Poll <= 0 {
		bad("cri.warmup.poll", "%v must be positive", w.Poll.Std())
	}
	if !(w.SettleCores > 0) || math.IsInf(w.SettleCores, 0) {
		bad("cri.warmup.settle_cores", "%v must be positive and finite", w.SettleCores)
	}
	if w.SettlePolls < 1 {
		bad("cri.warmup.settle_polls", "%d must be at least 1", w.SettlePolls)
	}
	switch {
	case w.Cap <= 0:
		bad("cri.warmup.cap", "%v must be positive", w.Cap.Std())
	case w.Poll > 0 && w.Cap < w.Poll:
		bad("cri.warmup.cap", "%v is shorter than cri.warmup.poll %v", w.Cap.Std(), w.Poll.Std())
	}
	p := c.Pulls
	if p.Min < 1 {
		bad("cri.pulls.min", "%d must be at least 1", p.Min)
	}
	if p.Max < p.Min {
		bad("cri.pulls.max", "%d below cri.pulls.min %d", p.Max, p.Min)
	}
	if !(p.IOTarget > 0 && p.IOTarget <= 1) {
		bad("cri.pulls.io_target", "%v out of range (0, 1]", p.IOTarget)
	}
	if p.Interval <= 0 {
		bad("cri.pulls.interval", "%v must be positive", p.Interval.Std())
	}
	return errs
}

// validate checks the [prefetch] section, whether or not it is enabled.
func (p Prefetch) validate(metricsListen string) []error {
	var errs []error
	bad := func(key string, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if p.ContainerdSocket != "" && !filepath.IsAbs(p.ContainerdSocket) {
		bad("prefetch.containerd_socket", "%q is not an absolute path (\"\" is cri.containerd_socket)", p.ContainerdSocket)
	}
	if p.Snapshotter == "" {
		bad("prefetch.snapshotter", "must not be empty (it must be the CRI's)")
	}
	if p.Interval <= 0 {
		bad("prefetch.interval", "%v must be positive", p.Interval.Std())
	}
	if p.MaxBackoff <= 0 {
		bad("prefetch.max_backoff", "%v must be positive", p.MaxBackoff.Std())
	} else if p.MaxBackoff < p.Interval {
		bad("prefetch.max_backoff", "%v is shorter than prefetch.interval %v", p.MaxBackoff.Std(), p.Interval.Std())
	}
	if p.Concurrency < 1 {
		bad("prefetch.concurrency", "%d must be at least 1", p.Concurrency)
	}
	if p.LeaseExpiry <= 0 {
		bad("prefetch.lease_expiry", "%v must be positive", p.LeaseExpiry.Std())
	}
	if p.RollbackWindow < 0 {
		bad("prefetch.rollback_window", "%v must not be negative (0s is off)", p.RollbackWindow.Std())
	}
	for i, h := range p.PlainHTTP {
		if !validHost(h) {
			bad(fmt.Sprintf("prefetch.plain_http[%d]", i+1), "%q is not a host or host:port", h)
		}
	}
	for i, h := range p.Registries {
		if !validHost(h) {
			bad(fmt.Sprintf("prefetch.registries[%d]", i+1), "%q is not a host or host:port", h)
		}
	}
	for i, ref := range p.Watch {
		named, err := reference.ParseDockerRef(ref)
		switch {
		case err != nil:
			bad(fmt.Sprintf("prefetch.watch[%d]", i+1), "%q is not an image reference: %v", ref, err)
		case isCanonical(named):
			bad(fmt.Sprintf("prefetch.watch[%d]", i+1), "%q names a digest; want a tag (a digest never changes)", ref)
		}
	}
	if p.DockerConfig != "" && !filepath.IsAbs(p.DockerConfig) {
		bad("prefetch.docker_config", "%q is not an absolute path (\"\" is none)", p.DockerConfig)
	}
	if p.RequestTimeout <= 0 {
		bad("prefetch.request_timeout", "%v must be positive", p.RequestTimeout.Std())
	}
	n := p.Notifications
	if n.Listen == "" {
		return errs
	}
	host, port, err := net.SplitHostPort(n.Listen)
	if err != nil {
		bad("prefetch.notifications.listen", "%q is not a host:port", n.Listen)
	} else {
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			bad("prefetch.notifications.listen", "%q has no valid port", n.Listen)
		}
		if !n.AllowRemote && !loopbackHost(host) {
			bad("prefetch.notifications.listen", "%q is not a loopback address (set prefetch.notifications.allow_remote = true to listen beyond the node)", n.Listen)
		}
	}
	if metricsListen != "" && n.Listen == metricsListen {
		bad("prefetch.notifications.listen", "%q is also metrics.listen", n.Listen)
	}
	switch {
	case n.TokenFile == "":
		bad("prefetch.notifications.token_file", "must be set when prefetch.notifications.listen is")
	case !filepath.IsAbs(n.TokenFile):
		bad("prefetch.notifications.token_file", "%q is not an absolute path", n.TokenFile)
	}
	return errs
}

func isCanonical(n reference.Named) bool {
	_, ok := n.(reference.Canonical)
	return ok
}

// WatchRegistries are the registry hosts of prefetch.watch.
func (p Prefetch) WatchRegistries() []string {
	var hosts []string
	for _, ref := range p.Watch {
		if named, err := reference.ParseDockerRef(ref); err == nil && !slices.Contains(hosts, reference.Domain(named)) {
			hosts = append(hosts, reference.Domain(named))
		}
	}
	return hosts
}

// loopbackHost says whether a listen address's host is this node only:
// localhost or a loopback IP. "" (every interface) is not.
func loopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// validHost accepts a registry host as containerd names it: host or
// host:port, no scheme, path or spaces.
func validHost(h string) bool {
	if h == "" || strings.ContainsAny(h, "/ \t@") {
		return false
	}
	if host, port, err := net.SplitHostPort(h); err == nil {
		_, perr := strconv.ParseUint(port, 10, 16)
		return host != "" && perr == nil
	}
	return !strings.Contains(h, ":") || net.ParseIP(h) != nil
}

// PrefetchContainerdSocket is prefetch.containerd_socket, or
// cri.containerd_socket when that is "".
func (c *Config) PrefetchContainerdSocket() string {
	if c.Prefetch.ContainerdSocket != "" {
		return c.Prefetch.ContainerdSocket
	}
	return c.CRI.ContainerdSocket
}

// NotificationToken reads prefetch.notifications.token_file: the token is
// its content without surrounding white space. It refuses an empty token
// and a file others may read or write, since the token is what keeps
// anyone else on the network from triggering fetches.
func (c *Config) NotificationToken() (string, error) {
	path := c.Prefetch.Notifications.TokenFile
	if path == "" {
		return "", errors.New("config: prefetch.notifications.token_file: not set")
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("config: prefetch.notifications.token_file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("config: prefetch.notifications.token_file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("config: prefetch.notifications.token_file: %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o007 != 0 {
		return "", fmt.Errorf("config: prefetch.notifications.token_file: %s has mode %04o; others must have no access (chmod 0600 or 0640)", path, perm)
	}
	b, err := io.ReadAll(io.LimitReader(f, 4097))
	if err != nil {
		return "", fmt.Errorf("config: prefetch.notifications.token_file: %w", err)
	}
	if len(b) > 4096 {
		return "", fmt.Errorf("config: prefetch.notifications.token_file: %s is longer than 4096 bytes", path)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("config: prefetch.notifications.token_file: %s is empty", path)
	}
	if strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("config: prefetch.notifications.token_file: %s holds more than one word", path)
	}
	return tok, nil
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
		ClassAnnotation: c.CRI.ClassAnnotation,
		Default:         parseClassOr(c.CRI.DefaultClass, admission.Normal),
		Rules:           make([]criproxy.Rule, 0, len(c.CRI.Rules)),
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
	return criproxy.WarmupPolicy{Poll: w.Poll.Std(), SettleCores: w.SettleCores, SettlePolls: w.SettlePolls, Cap: w.Cap.Std()}
}

// Pulls maps [cri.pulls] onto the proxy's pull lane policy.
func (c *Config) Pulls() criproxy.PullPolicy {
	p := c.CRI.Pulls
	return criproxy.PullPolicy{Min: p.Min, Max: p.Max, IOTarget: p.IOTarget, Interval: p.Interval.Std()}
}

// Policy maps the admission section onto the gate's policy.
func (c *Config) Policy() admission.Policy {
	a := c.Admission
	return admission.Policy{
		Targets: pressure.Values{
			pressure.CPU:    a.Targets.CPU,
			pressure.IO:     a.Targets.IO,
			pressure.Memory: a.Targets.Memory,
		},
		MinInFlightPerCore: a.Limits.MinInFlightPerCore,
		MaxInFlightPerCore: a.Limits.MaxInFlightPerCore,
		MinRatePerCore:     a.Limits.MinRatePerCore,
		MaxRatePerCore:     a.Limits.MaxRatePerCore,
		Burst:              a.Limits.Burst,
		DecreaseFactor:     a.Limits.DecreaseFactor,
		GrowBelow:          a.Limits.GrowBelow,
		IncreaseStep:       a.Limits.IncreaseStep,
		RateStep:           a.Limits.RateStep,
		FixedInFlight:      a.Limits.InFlight,
		FixedRate:          a.Limits.Rate,
		StaticInFlight:     a.Limits.StaticInFlight,
		StaticRate:         a.Limits.StaticRate,
		DeadlineMargin:     a.DeadlineMargin.Std(),
		DeadlineRefuse:     a.OnDeadline == "refuse",
		Aging:              a.Aging.Std(),
		MaxHold:            a.MaxHold.Std(),
		MaxQueue:           a.MaxQueue,
	}
}

// SocketFileMode parses daemon.socket_mode; call after Validate.
func (c *Config) SocketFileMode() (fs.FileMode, error) {
	m, err := parseMode(c.Daemon.SocketMode)
	if err != nil {
		return 0, fmt.Errorf("config: daemon.socket_mode: %q %w", c.Daemon.SocketMode, err)
	}
	return m, nil
}

// SocketGID resolves daemon.socket_group to a gid: the daemon's primary
// group when empty.
func (c *Config) SocketGID() (int, error) {
	gid, err := lookupGroup(c.Daemon.SocketGroup)
	if err != nil {
		return 0, fmt.Errorf("config: daemon.socket_group: %q %w", c.Daemon.SocketGroup, err)
	}
	return gid, nil
}

func parseMode(s string) (fs.FileMode, error) {
	if s == "" {
		return 0, errors.New("must not be empty")
	}
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil {
		return 0, errors.New("is not an octal mode")
	}
	if m > 0o777 {
		return 0, errors.New("has bits beyond 0777")
	}
	if m&0o600 != 0o600 {
		// The daemon's own user must keep read and write: a socket it
		// cannot use itself is a mistake, not a policy.
		return 0, errors.New("must grant the owner read and write (0600)")
	}
	return fs.FileMode(m), nil
}

func lookupGroup(s string) (int, error) {
	if s == "" {
		return os.Getgid(), nil
	}
	if gid, err := strconv.Atoi(s); err == nil {
		if gid < 0 {
			return 0, errors.New("is a negative gid")
		}
		return gid, nil
	}
	g, err := user.LookupGroup(s)
	if err != nil {
		return 0, errors.New("is not a known group")
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("has non-numeric gid %q", g.Gid)
	}
	return gid, nil
}

// WriteTOML writes c in the form Load reads, each key preceded by a
// comment saying what it does.
func (c *Config) WriteTOML(w io.Writer) error {
	var enc strings.Builder
	if err := toml.NewEncoder(&enc).Encode(c); err != nil {
		return fmt.Errorf("config: encode: %w", err)
	}
	var b strings.Builder
	b.WriteString("# startgated configuration. Every key but version is optional; a key left\n" +
		"# out keeps the default shown by `startgated config default`.\n\n")
	section := ""
	documented := map[string]bool{}
	for _, line := range strings.Split(strings.TrimRight(enc.String(), "\n"), "\n") {
		trimmed := strings.TrimSpace(line)
		indent := line[:len(line)-len(strings.TrimLeft(line, " "))]
		key := ""
		switch {
		case strings.HasPrefix(trimmed, "["):
			section = strings.Trim(trimmed, "[]")
			key = section
			// The encoder puts no blank line after an array of tables.
			if !strings.HasSuffix(b.String(), "\n\n") {
				b.WriteString("\n")
			}
		case strings.Contains(trimmed, " = "):
			key, _, _ = strings.Cut(trimmed, " = ")
			if section != "" {
				key = section + "." + key
			}
		}
		// A key of an array of tables ([[cri.rules]]) repeats; its comment
		// is written once, above the first.
		if doc := keyDocs[key]; doc != "" && !documented[key] {
			documented[key] = true
			for _, d := range strings.Split(doc, "\n") {
				b.WriteString(indent + "# " + d + "\n")
			}
		}
		b.WriteString(line + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// keyDocs are the comments WriteTOML puts above each key; a test checks
// that every key has one.
var keyDocs = map[string]string{
	"version":                                "Config format version; this build reads 1.",
	"daemon":                                 "The daemon process and its API socket.",
	"daemon.socket":                          "gRPC API socket, used when systemd does not pass one in (socket activation).",
	"daemon.socket_mode":                     "Octal permissions of the socket this daemon creates.",
	"daemon.socket_group":                    "Group owning the socket and allowed to call mutating RPCs besides root:\na name or a numeric gid; \"\" is the daemon's primary group.",
	"daemon.log_level":                       "debug, info, warn or error.",
	"daemon.log_format":                      "auto (JSON unless stderr is a terminal), json or console.",
	"daemon.shutdown_timeout":                "How long shutdown waits for in-flight calls before cutting them.",
	"metrics":                                "Prometheus metrics.",
	"metrics.listen":                         "TCP address of the /metrics endpoint; \"\" is off. 127.0.0.1:9464 keeps it on the node.",
	"pressure":                               "Where pressure stall information (PSI) is read.",
	"pressure.source":                        "proc (system-wide, under proc_root) or cgroup (a cgroup v2 directory, cgroup_dir).",
	"pressure.proc_root":                     "Mount point of procfs; PSI is read from proc_root/pressure.",
	"pressure.cgroup_dir":                    "cgroup v2 directory whose cpu.pressure, io.pressure and memory.pressure are read.",
	"pressure.interval":                      "Sample interval; the controller resizes the limits once per sample.",
	"pressure.smoothing":                     "Weight of the newest sample in the moving average, (0, 1]; 1 is no smoothing.",
	"admission":                              "How starts are queued and admitted.",
	"admission.max_queue":                    "Most waiters queued at once; more are refused (ResourceExhausted).",
	"admission.deadline_margin":              "A waiter whose deadline is this close is admitted or refused (on_deadline)\ninstead of waiting on.",
	"admission.on_deadline":                  "admit or refuse a waiter whose deadline comes within deadline_margin.",
	"admission.aging":                        "A waiting class is promoted one step per aging waited, so none starves.",
	"admission.max_hold":                     "Default cap on how long a lease is held before it is taken back.",
	"admission.targets":                      "PSI \"some\" stall fractions, (0, 1], above which the controller backs off.",
	"admission.targets.cpu":                  "",
	"admission.targets.io":                   "",
	"admission.targets.memory":               "",
	"admission.limits":                       "Bounds and steps of the in-flight limit and the start rate, per core.",
	"admission.limits.min_inflight_per_core": "Floor of the in-flight limit (never below one start).",
	"admission.limits.max_inflight_per_core": "Ceiling of the in-flight limit.",
	"admission.limits.min_rate_per_core":     "Floor of the start rate, starts per second.",
	"admission.limits.max_rate_per_core":     "Ceiling of the start rate, starts per second.",
	"admission.limits.burst":                 "Token bucket depth; 0 is one per core.",
	"admission.limits.decrease_factor":       "Limits are multiplied by this when a resource is above target, (0, 1).",
	"admission.limits.grow_below":            "Limits grow only while every resource is under this fraction of its target,\n(0, 1]; between it and the target they hold.",
	"admission.limits.increase_step":         "In-flight slots added per interval while below target and the limit binds.",
	"admission.limits.rate_step":             "Starts per second added per interval while below target and the rate binds.",
	"admission.limits.inflight":              "Pin the in-flight limit; 0 leaves it to the controller.",
	"admission.limits.rate":                  "Pin the start rate; 0 leaves it to the controller.",
	"admission.limits.static_inflight":       "In-flight limit without PSI; 0 is 2 per core.",
	"admission.limits.static_rate":           "Start rate without PSI; 0 is 5 per core.",
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
		"warm-up: until their CPU use settles, they exit, the pod stops, or cap passes.",
	"cri.warmup.poll":         "How often a warming container's CPU use is read (CRI ContainerStats).",
	"cri.warmup.settle_cores": "Below this many cores of CPU use a container counts as idle.",
	"cri.warmup.settle_polls": "Idle for this many polls in a row: warm-up over, slot released.",
	"cri.warmup.cap":          "Longest a slot is held after CreateContainer.",
	"cri.pulls":               "Image pulls run in a lane of their own, sized from IO pressure.",
	"cri.pulls.min":           "Fewest pulls in flight node-wide.",
	"cri.pulls.max":           "Most pulls in flight node-wide.",
	"cri.pulls.io_target":     "IO stall fraction, (0, 1], above which the lane shrinks by one per interval.",
	"cri.pulls.interval":      "How often the lane is resized.",
	"prefetch": "Prefetch: watch the tags this node's images use (containerd namespace k8s.io)\n" +
		"and fetch a new digest's missing layers into containerd before kubelet pulls it.\n" +
		"The tag is not moved: kubelet still decides when a rollout starts.",
	"prefetch.enabled": "Run the prefetch manager. Off by default.",
	"prefetch.containerd_socket": "containerd's socket; \"\" is cri.containerd_socket, the same containerd as the\n" +
		"CRI's (prefetching into another would be useless). containerd may start after\n" +
		"startgated: prefetch retries with backoff until it answers.",
	"prefetch.snapshotter":  "Snapshotter to unpack into; it must be the one the CRI uses.",
	"prefetch.interval":     "How often every watched tag is resolved against its registry (jittered ±20%).",
	"prefetch.max_backoff":  "Cap of the wait before a failing registry is tried again; the wait starts at\ninterval and doubles per failure.",
	"prefetch.concurrency":  "Most fetches at once.",
	"prefetch.lease_expiry": "How long prefetched content is kept from containerd's GC if kubelet never\npulls it.",
	"prefetch.bandwidth": "Cap of the registry bytes per second all fetches read together, in docker's\n" +
		"size notation (\"50MiB\", \"50MB\" and \"50m\" all mean 50 MiB/s); \"0\" is unlimited.",
	"prefetch.rollback_window": "How long the digest a tag ran before the node moved to a new one stays\n" +
		"protected from containerd's GC (a lease), so a rollback starts warm; \"0s\" is off.",
	"prefetch.move_tag": "Move the tag to the prefetched digest at once (a CRI pull of local content).\n" +
		"Off: kubelet decides when a rollout starts.",
	"prefetch.plain_http": "Registry hosts (host or host:port) spoken to over plain HTTP besides the\nloopback hosts, which always are. All others are HTTPS.",
	"prefetch.registries": "Registry hosts (host or host:port; without a port, any port) that prefetches\n" +
		"asked for through the API or the webhook may fetch from, besides the registries\n" +
		"of the images on this node, which always may. Any other host is refused.",
	"prefetch.watch": "Tag references watched from the start besides the node's own images (an image\n" +
		"about to be deployed here); their registries are allowed for requests too.",
	"prefetch.docker_config": "A docker config.json whose \"auths\" (auth, username/password, identitytoken)\n" +
		"give registry credentials; \"\" is none. Read at start; credential helpers are not run.",
	"prefetch.request_timeout": "Longest wait for a registry to answer a request (and for a whole token\nrequest); a blob's download is not cut by it.",
	"prefetch.notifications": "The registry's push notifications (distribution's webhook): a push of a\n" +
		"watched tag triggers a resolve at once. Point the registry's notifications\n" +
		"endpoint at http://LISTEN/ with header Authorization: Bearer TOKEN.",
	"prefetch.notifications.listen":       "TCP address of the webhook listener; \"\" is off. Must be a loopback address\nunless allow_remote = true.",
	"prefetch.notifications.allow_remote": "Allow a listen address beyond loopback (the registry is on another host).",
	"prefetch.notifications.token_file": "File holding the bearer token the registry sends; required when listen is\n" +
		"set. Read once at start; it must not be readable by others (0600 or 0640).",
}
