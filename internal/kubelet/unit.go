package kubelet

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/coreos/go-systemd/v22/unit"
)

// unitDirs are where systemd looks for a system unit and its drop-ins,
// highest priority first (systemd.unit(5), "System Unit Search Path").
// /lib/systemd/system is Debian's path for packaged units (the same
// directory as /usr/lib/systemd/system on a merged-/usr system).
var unitDirs = []string{
	"/etc/systemd/system.control",
	"/run/systemd/system.control",
	"/run/systemd/transient",
	"/etc/systemd/system",
	"/run/systemd/system",
	"/usr/local/lib/systemd/system",
	"/lib/systemd/system",
	"/usr/lib/systemd/system",
}

// KubeletUnit is the unit kubelet runs as.
const KubeletUnit = "kubelet.service"

// unitCommand is a unit's command line as systemd would start it.
type unitCommand struct {
	// File is the unit file; DropIns its drop-ins in the order applied.
	File    string
	DropIns []string
	// EnvFiles are the EnvironmentFile= files read, in order.
	EnvFiles []string
	Args     []Arg
}

// ErrNoUnit is resolveUnit's error when no unit file of that name exists.
var ErrNoUnit = errors.New("kubelet: no unit file")

// resolveUnit reads name's unit file and drop-ins as systemd merges them
// and returns the ExecStart= command line with its variables substituted
// from Environment= and EnvironmentFile= (the files override
// Environment=, later files override earlier ones).
func (n *Node) resolveUnit(name string) (*unitCommand, error) {
	uc := &unitCommand{}
	for _, d := range unitDirs {
		p := filepath.Join(d, name)
		if fi, err := os.Lstat(n.path(p)); err == nil {
			if masked(n, p, fi) {
				return nil, fmt.Errorf("kubelet: %s is masked (a link to /dev/null): kubelet does not start; unmask it first", p)
			}
			uc.File = p
			break
		}
	}
	if uc.File == "" {
		return nil, fmt.Errorf("%w: %s in %s", ErrNoUnit, name, strings.Join(unitDirs, ", "))
	}
	// Drop-ins: every name.d/*.conf, a name in a higher-priority
	// directory hiding the same name in a lower one, applied in the
	// order of their names.
	byName := map[string]string{}
	for _, d := range unitDirs {
		dir := filepath.Join(d, name+".d")
		ms, _ := filepath.Glob(n.path(filepath.Join(dir, "*.conf")))
		for _, m := range append(ms, n.overlayUnder(dir, ".conf")...) {
			base := filepath.Base(m)
			if _, seen := byName[base]; !seen {
				byName[base] = filepath.Join(d, name+".d", base)
			}
		}
	}
	names := make([]string, 0, len(byName))
	for b := range byName {
		names = append(names, b)
	}
	sort.Strings(names)

	type option struct{ name, value, file string }
	var opts []option
	read := func(p string) error {
		b, err := n.readFile(p)
		if err != nil {
			return fmt.Errorf("kubelet: %w", err)
		}
		uo, err := unit.DeserializeOptions(bytes.NewReader(b))
		if err != nil {
			return fmt.Errorf("kubelet: %s: %w", p, err)
		}
		for _, o := range uo {
			if o.Section == "Service" {
				// A continued line keeps its backslash-newline in the
				// deserialized value; systemd reads it as a blank.
				opts = append(opts, option{o.Name, strings.ReplaceAll(o.Value, "\\\n", " "), p})
			}
		}
		return nil
	}
	if err := read(uc.File); err != nil {
		return nil, err
	}
	for _, b := range names {
		p := byName[b]
		if fi, err := os.Lstat(n.path(p)); err == nil && masked(n, p, fi) {
			continue
		}
		uc.DropIns = append(uc.DropIns, p)
		if err := read(p); err != nil {
			return nil, err
		}
	}

	var execStart *option
	env := map[string]envValue{}
	var envFiles []option
	for i := range opts {
		o := &opts[i]
		switch o.name {
		case "ExecStart":
			if strings.TrimSpace(o.value) == "" {
				execStart = nil // an empty assignment resets the list
				continue
			}
			if execStart != nil {
				return nil, fmt.Errorf("kubelet: %s sets ExecStart= again without resetting it first (ExecStart= with no value): systemd refuses such a service", o.file)
			}
			execStart = o
		case "Environment":
			words, err := splitWords(o.value)
			if err != nil {
				return nil, fmt.Errorf("kubelet: %s: Environment=: %w", o.file, err)
			}
			for _, w := range words {
				if k, v, ok := strings.Cut(w, "="); ok && validEnvName(k) {
					env[k] = envValue{v, o.file}
				}
			}
		case "EnvironmentFile":
			if strings.TrimSpace(o.value) == "" {
				envFiles = nil
				continue
			}
			envFiles = append(envFiles, *o)
		}
	}
	for _, o := range envFiles {
		p := strings.TrimSpace(o.value)
		optional := strings.HasPrefix(p, "-")
		p = strings.TrimPrefix(p, "-")
		b, err := n.readFile(p)
		if errors.Is(err, os.ErrNotExist) && optional {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("kubelet: EnvironmentFile=%s (%s): %w", p, o.file, err)
		}
		uc.EnvFiles = append(uc.EnvFiles, p)
		for k, v := range parseEnvFile(b) {
			env[k] = envValue{v, p}
		}
	}
	if execStart == nil {
		return nil, fmt.Errorf("kubelet: %s and its drop-ins (%s) set no ExecStart=", uc.File, strings.Join(uc.DropIns, ", "))
	}
	args, err := execArgs(execStart.value, execStart.file, env)
	if err != nil {
		return nil, fmt.Errorf("kubelet: %w", err)
	}
	if len(args) == 0 {
		return nil, fmt.Errorf("kubelet: %s: ExecStart= is empty after substitution", execStart.file)
	}
	uc.Args = args
	return uc, nil
}

// masked: a unit or drop-in linked to /dev/null (systemctl mask).
func masked(n *Node, p string, fi os.FileInfo) bool {
	if fi.Mode()&os.ModeSymlink == 0 {
		return false
	}
	t, err := os.Readlink(n.path(p))
	return err == nil && t == "/dev/null"
}
