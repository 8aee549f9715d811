// Package kubelet finds where this node sets kubelet's container runtime
// endpoint and switches it between containerd and startgated, with a
// backup and a record of what it changed, so that the switch back is one
// command (startgatectl node enable|disable|status).
//
// Where a node sets the endpoint, in kubelet's precedence: a
// --container-runtime-endpoint flag, which kubelet's systemd unit takes
// from an environment file (kubeadm's /var/lib/kubelet/kubeadm-flags.env,
// /etc/default/kubelet on Debian, /etc/sysconfig/kubelet on RHEL) or from a
// drop-in (kubelet.service.d/*.conf); else the KubeletConfiguration's
// containerRuntimeEndpoint, in the file kubelet's --config names
// (kubeadm: /var/lib/kubelet/config.yaml). The running kubelet's command
// line (/proc) says which config file it reads and the endpoint it was
// started with.
//
// Every change keeps the rest of the file as it was, byte for byte, and
// is written atomically (a temporary file renamed over it, its mode
// kept). The first change of a file copies it to the state directory
// (/var/lib/startgate/kubelet) first; state.json there records each file
// changed and the value it had, which Disable puts back.
package kubelet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Endpoints are the two values the switch moves between.
const (
	ContainerdEndpoint = "unix:///run/containerd/containerd.sock"
	StartgateEndpoint  = "unix:///run/startgate/cri.sock"
)

// Node is one node's kubelet configuration, under Root ("/" but in tests).
type Node struct {
	// Root prefixes every path; "" is "/".
	Root string
	// ConfigFile is the KubeletConfiguration; "" means the running
	// kubelet's --config, else kubeadm's /var/lib/kubelet/config.yaml.
	ConfigFile string
	// StateDir holds the backups and state.json; "" is
	// /var/lib/startgate/kubelet.
	StateDir string
	// Proc is /proc, for the running kubelet; "" is Root's proc.
	Proc string
}

// FlagFiles are the files a kubelet unit reads flags from, globs allowed,
// relative to Root, in the order their flags reach kubelet's command
// line: kubeadm's drop-in runs kubelet with $KUBELET_KUBEADM_ARGS (from
// kubeadm-flags.env) before $KUBELET_EXTRA_ARGS (from /etc/default or
// /etc/sysconfig), and of a flag given twice the last wins.
var FlagFiles = []string{
	"/lib/systemd/system/kubelet.service.d/*.conf",
	"/usr/lib/systemd/system/kubelet.service.d/*.conf",
	"/etc/systemd/system/kubelet.service.d/*.conf",
	"/var/lib/kubelet/kubeadm-flags.env",
	"/etc/default/kubelet",
	"/etc/sysconfig/kubelet",
}

// Setting is one place that sets the endpoint.
type Setting struct {
	File  string `json:"file"`
	Kind  string `json:"kind"` // "flag" or "config"
	Value string `json:"value"`
}

// Status is what status shows.
type Status struct {
	// Effective is the endpoint kubelet takes from the files (flags over
	// the config file); "" when nothing sets it (kubelet's default,
	// containerd's socket).
	Effective string `json:"effective"`
	// Settings are every place that sets it, the effective one first.
	Settings []Setting `json:"settings"`
	// ConfigFile is the KubeletConfiguration looked at.
	ConfigFile string `json:"configFile"`
	// Running is the running kubelet's: its pid and the endpoint on its
	// command line ("" when it takes it from its config file); Pid 0 when
	// no kubelet runs.
	Running struct {
		Pid      int    `json:"pid"`
		Endpoint string `json:"endpoint,omitempty"`
	} `json:"running"`
	// Enabled: Effective is startgated's socket (StartgateEndpoint, or
	// the one Enable was given).
	Enabled bool `json:"enabled"`
	// Switched is when startgate switched it, zero if it did not (or
	// switched it back).
	Switched time.Time `json:"switched,omitempty"`
	// ImageEndpoint is the KubeletConfiguration's imageServiceEndpoint,
	// when set: image calls then go there, not through startgated.
	ImageEndpoint string `json:"imageEndpoint,omitempty"`
}

// state is state.json: what Enable changed.
type state struct {
	Switched time.Time `json:"switched"`
	Endpoint string    `json:"endpoint"`
	Changes  []change  `json:"changes"`
}

type change struct {
	File string `json:"file"` // absolute, under Root
	Kind string `json:"kind"`
	// Old is the value before, as the file wrote it; Added means the
	// file had none and the line was added (Disable removes it).
	Old   string `json:"old,omitempty"`
	Added bool   `json:"added,omitempty"`
}

func (n *Node) path(p string) string {
	if n.Root == "" || n.Root == "/" {
		return p
	}
	return filepath.Join(n.Root, p)
}

func (n *Node) stateDir() string {
	if n.StateDir != "" {
		return n.StateDir
	}
	return n.path("/var/lib/startgate/kubelet")
}

// flagRE matches the flag and its value in a shell-ish line: with = or a
// space, the value up to a space or a quote.
var flagRE = regexp.MustCompile(`--container-runtime-endpoint(=|\s+)([^\s"']+)`)

// configRE matches the KubeletConfiguration's top-level key.
var configRE = regexp.MustCompile(`(?m)^containerRuntimeEndpoint:[ \t]*(\S*)[ \t]*$`)

// ConfigEndpoint is the containerRuntimeEndpoint a KubeletConfiguration
// file's content sets, unquoted; "" when it sets none.
func ConfigEndpoint(b []byte) string {
	if m := configRE.FindSubmatch(b); m != nil {
		return unquote(string(m[1]))
	}
	return ""
}

// configLineRE is the key's whole line, to take out one Enable added.
var configLineRE = regexp.MustCompile(`(?m)^containerRuntimeEndpoint:[ \t]*\S*[ \t]*\n?`)

var imageRE = regexp.MustCompile(`(?m)^imageServiceEndpoint:[ \t]*(\S*)[ \t]*$`)

// flagFiles lists the existing flag files, in FlagFiles' order.
func (n *Node) flagFiles() []string {
	var out []string
	for _, pat := range FlagFiles {
		ms, _ := filepath.Glob(n.path(pat))
		sort.Strings(ms)
		out = append(out, ms...)
	}
	return out
}

// Status reads where the endpoint is set.
func (n *Node) Status() (Status, error) {
	var st Status
	pid, args := n.runningKubelet()
	st.Running.Pid = pid
	st.Running.Endpoint = flagValue(args, "--container-runtime-endpoint")
	cfg, err := n.configFile(args)
	if err != nil {
		return st, err
	}
	st.ConfigFile = cfg
	var flags []Setting
	for _, f := range n.flagFiles() {
		b, err := os.ReadFile(f)
		if err != nil {
			return st, fmt.Errorf("kubelet: %w", err)
		}
		for _, m := range flagRE.FindAllSubmatch(b, -1) {
			flags = append(flags, Setting{File: f, Kind: "flag", Value: unquote(string(m[2]))})
		}
	}
	// The last flag wins: list it first.
	for i := len(flags) - 1; i >= 0; i-- {
		st.Settings = append(st.Settings, flags[i])
	}
	if b, err := os.ReadFile(cfg); err == nil {
		if ep := ConfigEndpoint(b); ep != "" {
			st.Settings = append(st.Settings, Setting{File: cfg, Kind: "config", Value: ep})
		}
		if m := imageRE.FindSubmatch(b); m != nil {
			st.ImageEndpoint = unquote(string(m[1]))
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return st, fmt.Errorf("kubelet: %w", err)
	}
	if len(st.Settings) > 0 {
		st.Effective = st.Settings[0].Value
	}
	st.Enabled = st.Effective == StartgateEndpoint
	if s, err := n.readState(); err == nil && s != nil {
		st.Switched = s.Switched
		// Switched to another socket of startgated's (--endpoint).
		st.Enabled = st.Enabled || (s.Endpoint != "" && st.Effective == s.Endpoint)
	}
	return st, nil
}

// configFile is ConfigFile, else the running kubelet's --config, else
// kubeadm's.
func (n *Node) configFile(args []string) (string, error) {
	if n.ConfigFile != "" {
		return n.ConfigFile, nil
	}
	if c := flagValue(args, "--config"); c != "" {
		return n.path(c), nil
	}
	return n.path("/var/lib/kubelet/config.yaml"), nil
}

// Enable points kubelet at endpoint (StartgateEndpoint unless testing):
// every flag that sets it, or else the config file's key (added when
// absent). It changes nothing when kubelet already points there. Restart
// kubelet afterwards for it to take effect.
func (n *Node) Enable(endpoint string) ([]Setting, error) {
	if endpoint == "" {
		endpoint = StartgateEndpoint
	}
	st, err := n.Status()
	if err != nil {
		return nil, err
	}
	if st.Effective == endpoint {
		return nil, nil
	}
	s, err := n.readState()
	if err != nil {
		return nil, err
	}
	if s == nil {
		s = &state{}
	}
	var changed []Setting
	flags := false
	for _, set := range st.Settings {
		if set.Kind != "flag" {
			continue
		}
		flags = true
		if set.Value == endpoint {
			continue
		}
		if err := n.rewrite(set.File, s, change{File: set.File, Kind: "flag", Old: set.Value}, func(b []byte) []byte {
			return flagRE.ReplaceAll(b, []byte("--container-runtime-endpoint${1}"+endpoint))
		}); err != nil {
			return changed, err
		}
		changed = append(changed, Setting{File: set.File, Kind: "flag", Value: endpoint})
	}
	if !flags {
		c := change{File: st.ConfigFile, Kind: "config"}
		b, err := os.ReadFile(st.ConfigFile)
		if err != nil {
			return nil, fmt.Errorf("kubelet: no flag sets the runtime endpoint and the KubeletConfiguration cannot be read: %w", err)
		}
		if m := configRE.FindSubmatch(b); m != nil {
			c.Old = string(m[1]) // as written, quotes and all: Disable puts it back byte for byte
		} else {
			c.Added = true
		}
		if err := n.rewrite(st.ConfigFile, s, c, func(b []byte) []byte {
			line := []byte("containerRuntimeEndpoint: " + endpoint)
			if configRE.Match(b) {
				return configRE.ReplaceAll(b, line)
			}
			if len(b) > 0 && b[len(b)-1] != '\n' {
				b = append(b, '\n')
			}
			return append(append(b, line...), '\n')
		}); err != nil {
			return changed, err
		}
		changed = append(changed, Setting{File: st.ConfigFile, Kind: "config", Value: endpoint})
	}
	s.Switched, s.Endpoint = time.Now().UTC(), endpoint
	return changed, n.writeState(s)
}

// ErrNotSwitched is Disable's error when startgate has no record of
// switching this node and kubelet does not point at startgated.
var ErrNotSwitched = errors.New("kubelet: not switched to startgated")

// Disable puts back every value Enable changed, from state.json. Without
// one, a kubelet pointed at startgated by hand is pointed at containerd.
// A file edited since to another endpoint is left as it is and named in
// the error.
func (n *Node) Disable() ([]Setting, error) {
	s, err := n.readState()
	if err != nil {
		return nil, err
	}
	if s == nil {
		st, err := n.Status()
		if err != nil {
			return nil, err
		}
		if !st.Enabled {
			return nil, ErrNotSwitched
		}
		// Switched by hand: every setting of startgated's socket goes to
		// containerd's.
		s = &state{Endpoint: StartgateEndpoint}
		for _, set := range st.Settings {
			if set.Value == StartgateEndpoint {
				s.Changes = append(s.Changes, change{File: set.File, Kind: set.Kind, Old: ContainerdEndpoint})
			}
		}
	}
	var restored []Setting
	var errs []error
	for _, c := range s.Changes {
		b, err := os.ReadFile(c.File)
		if err != nil {
			errs = append(errs, fmt.Errorf("kubelet: %s: %w", c.File, err))
			continue
		}
		var out []byte
		switch c.Kind {
		case "flag":
			if !bytes.Contains(b, []byte(s.Endpoint)) {
				errs = append(errs, fmt.Errorf("kubelet: %s no longer sets %s: left as it is", c.File, s.Endpoint))
				continue
			}
			out = flagRE.ReplaceAllFunc(b, func(m []byte) []byte {
				if !bytes.HasSuffix(m, []byte(s.Endpoint)) {
					return m
				}
				// m is b's own memory: build the replacement anew.
				return append(append([]byte(nil), bytes.TrimSuffix(m, []byte(s.Endpoint))...), c.Old...)
			})
		case "config":
			m := configRE.FindSubmatch(b)
			if m == nil || unquote(string(m[1])) != s.Endpoint {
				errs = append(errs, fmt.Errorf("kubelet: %s no longer sets %s: left as it is", c.File, s.Endpoint))
				continue
			}
			if c.Added {
				out = configLineRE.ReplaceAll(b, nil)
			} else {
				out = configRE.ReplaceAll(b, []byte("containerRuntimeEndpoint: "+c.Old))
			}
		}
		if err := writeAtomic(c.File, out); err != nil {
			errs = append(errs, err)
			continue
		}
		restored = append(restored, Setting{File: c.File, Kind: c.Kind, Value: c.Old})
	}
	if len(errs) > 0 {
		return restored, errors.Join(errs...)
	}
	if err := os.Remove(filepath.Join(n.stateDir(), "state.json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return restored, fmt.Errorf("kubelet: %w", err)
	}
	return restored, nil
}

// rewrite backs file up (the first time), applies edit, writes it
// atomically and records c in s.
func (n *Node) rewrite(file string, s *state, c change, edit func([]byte) []byte) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("kubelet: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(n.stateDir(), "backup"), 0o700); err != nil {
		return fmt.Errorf("kubelet: %w", err)
	}
	bp := n.backupPath(file)
	if _, err := os.Stat(bp); errors.Is(err, os.ErrNotExist) {
		if err := writeNew(bp, b, 0o600); err != nil {
			return err
		}
	}
	if err := writeAtomic(file, edit(append([]byte(nil), b...))); err != nil {
		return err
	}
	for _, have := range s.Changes {
		if have.File == c.File && have.Kind == c.Kind {
			return nil // switched before: keep the first old value
		}
	}
	s.Changes = append(s.Changes, c)
	return nil
}

func (n *Node) backupPath(file string) string {
	return filepath.Join(n.stateDir(), "backup", strings.ReplaceAll(strings.TrimPrefix(file, "/"), "/", "_"))
}

func (n *Node) readState() (*state, error) {
	b, err := os.ReadFile(filepath.Join(n.stateDir(), "state.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kubelet: %w", err)
	}
	var s state
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("kubelet: %s: %w", filepath.Join(n.stateDir(), "state.json"), err)
	}
	return &s, nil
}

func (n *Node) writeState(s *state) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(n.stateDir(), 0o700); err != nil {
		return fmt.Errorf("kubelet: %w", err)
	}
	return writeAtomic(filepath.Join(n.stateDir(), "state.json"), append(b, '\n'))
}

// writeAtomic replaces file with b: a temporary file in its directory,
// synced, with file's mode (0644 for a new one), renamed over it.
func writeAtomic(file string, b []byte) error {
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(file); err == nil {
		mode = fi.Mode().Perm()
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".startgate-")
	if err != nil {
		return fmt.Errorf("kubelet: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename, nothing to remove
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("kubelet: %w", err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("kubelet: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("kubelet: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("kubelet: %w", err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return fmt.Errorf("kubelet: %w", err)
	}
	return nil
}

// writeNew writes a new file (a backup), synced.
func writeNew(file string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("kubelet: backup: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("kubelet: backup: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("kubelet: backup: %w", err)
	}
	return f.Close()
}

// runningKubelet finds a process whose command is kubelet and returns its
// pid and arguments; 0 and nil when none runs.
func (n *Node) runningKubelet() (int, []string) {
	proc := n.Proc
	if proc == "" {
		proc = n.path("/proc")
	}
	ents, err := os.ReadDir(proc)
	if err != nil {
		return 0, nil
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(proc, e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if filepath.Base(args[0]) == "kubelet" {
			return pid, args[1:]
		}
	}
	return 0, nil
}

// flagValue is the value of a --name=value or --name value flag in args.
func flagValue(args []string, name string) string {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// unquote takes the quotes off a YAML or shell scalar.
func unquote(s string) string {
	if len(s) >= 2 && (s[0] == '"' && s[len(s)-1] == '"' || s[0] == '\'' && s[len(s)-1] == '\'') {
		return s[1 : len(s)-1]
	}
	return s
}
