package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/startgate/startgate/internal/admission"
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
	IncreaseStep   int     `toml:"increase_step"`
	RateStep       float64 `toml:"rate_step"`
	// InFlight and Rate pin a limit; 0 leaves it to the controller.
	InFlight int     `toml:"inflight"`
	Rate     float64 `toml:"rate"`
	// StaticInFlight and StaticRate apply without PSI; 0 is 2 in flight
	// and 5 starts per second per core.
	StaticInFlight int     `toml:"static_inflight"`
	StaticRate     float64 `toml:"static_rate"`
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

// DefaultConfig returns the configuration of a node with no config file.
// The admission section comes from admission.DefaultPolicy.
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
				IncreaseStep:       p.IncreaseStep,
				RateStep:           p.RateStep,
				InFlight:           p.FixedInFlight,
				Rate:               p.FixedRate,
				StaticInFlight:     p.StaticInFlight,
				StaticRate:         p.StaticRate,
			},
		},
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
	md, err := toml.Decode(text, c)
	if err != nil {
		return decodeError(path, err)
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

	if len(errs) == 0 {
		// The gate has the last word on its policy; this catches a rule
		// the checks above do not know yet.
		if err := c.Policy().Validate(); err != nil {
			errs = append(errs, fmt.Errorf("admission: %w", err))
		}
	}
	return errors.Join(errs...)
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
	for _, line := range strings.Split(strings.TrimRight(enc.String(), "\n"), "\n") {
		trimmed := strings.TrimSpace(line)
		indent := line[:len(line)-len(strings.TrimLeft(line, " "))]
		key := ""
		switch {
		case strings.HasPrefix(trimmed, "["):
			section = strings.Trim(trimmed, "[]")
			key = section
		case strings.Contains(trimmed, " = "):
			key, _, _ = strings.Cut(trimmed, " = ")
			if section != "" {
				key = section + "." + key
			}
		}
		if doc := keyDocs[key]; doc != "" {
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
	"admission.limits.increase_step":         "In-flight slots added per interval while below target and the limit binds.",
	"admission.limits.rate_step":             "Starts per second added per interval while below target and the rate binds.",
	"admission.limits.inflight":              "Pin the in-flight limit; 0 leaves it to the controller.",
	"admission.limits.rate":                  "Pin the start rate; 0 leaves it to the controller.",
	"admission.limits.static_inflight":       "In-flight limit without PSI; 0 is 2 per core.",
	"admission.limits.static_rate":           "Start rate without PSI; 0 is 5 per core.",
}
