package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/BurntSushi/toml"
)

// Version is the only config version this build reads.
const Version = 1

// DefaultPath is where startgated looks when --config is not given.
const DefaultPath = "/etc/startgate/config.toml"

// Config is the whole file. Each section lives in a file of its own with
// its defaults, its help text and its validation.
type Config struct {
	Version    int        `toml:"version"`
	Daemon     Daemon     `toml:"daemon"`
	Metrics    Metrics    `toml:"metrics"`
	Pressure   Pressure   `toml:"pressure"`
	Admission  Admission  `toml:"admission"`
	CRI        CRI        `toml:"cri"`
	Prefetch   Prefetch   `toml:"prefetch"`
	Kubernetes Kubernetes `toml:"kubernetes"`
	Fleet      Fleet      `toml:"fleet"`
}

// versionDocs is the help of the file's only top-level key.
var versionDocs = map[string]string{
	"version": "Config format version; this build reads 1.",
}

// DefaultConfig returns the configuration of a node with no config file:
// each section's defaults, which come from the package that section
// configures where it has them (admission.DefaultPolicy,
// criproxy.DefaultClassifier, prefetch's durations).
func DefaultConfig() *Config {
	return &Config{
		Version:    Version,
		Daemon:     defaultDaemon(),
		Metrics:    defaultMetrics(),
		Pressure:   defaultPressure(),
		Admission:  defaultAdmission(),
		CRI:        defaultCRI(),
		Prefetch:   defaultPrefetch(),
		Kubernetes: defaultKubernetes(),
		Fleet:      defaultFleet(),
	}
}

// Load reads path over the defaults and validates the result. When
// explicit is false (the operator gave no --config) a missing file means
// defaults; an explicitly named file must exist.
func Load(path string, explicit bool) (*Config, error) {
	c, _, err := LoadFound(path, explicit)
	return c, err
}

// LoadFound is Load, and also reports whether the file was there. A
// missing file at the default path is not an error: the daemon starts on
// the defaults, because it must never be why a node cannot start
// containers. It is not silent either: the caller says so, naming the
// path (the daemon at start and at a reload, `config check` on stderr),
// since an operator whose file went missing runs on settings they did
// not choose.
func LoadFound(path string, explicit bool) (c *Config, found bool, err error) {
	c = DefaultConfig()
	b, err := os.ReadFile(path)
	if err != nil {
		if !explicit && errors.Is(err, fs.ErrNotExist) {
			return c, false, nil
		}
		return nil, false, fmt.Errorf("config: %w", err)
	}
	if err := c.decode(path, string(b)); err != nil {
		return nil, true, err
	}
	if err := c.Validate(); err != nil {
		return nil, true, fmt.Errorf("config: %s: %w", path, err)
	}
	return c, true, nil
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
// Each section checks itself; a section whose checks depend on another's
// value is handed that value.
func (c *Config) Validate() error {
	var errs problems
	if c.Version != Version {
		errs.add("version", "%d not supported (want %d)", c.Version, Version)
	}
	errs = append(errs, c.Daemon.validate()...)
	errs = append(errs, c.Metrics.validate()...)
	errs = append(errs, c.Pressure.validate()...)
	errs = append(errs, c.Admission.validate()...)
	errs = append(errs, c.CRI.validate(c.Daemon.Socket)...)
	errs = append(errs, c.Prefetch.validate(c.Metrics.Listen)...)
	errs = append(errs, c.Kubernetes.validate()...)
	errs = append(errs, c.Fleet.validate(c.Kubernetes, c.Prefetch)...)

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

// problems collects a validation's findings, each leading with its key.
type problems []error

func (p *problems) add(key string, format string, args ...any) {
	*p = append(*p, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
}
