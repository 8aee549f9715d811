package cluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// Module is the module whose hack/kubernetes/build.sh builds the binaries.
const Module = "github.com/startgate/startgate"

// BinEnv names a directory that already holds the binaries; set, it is
// used as is and nothing is built.
const BinEnv = "STARTGATE_KUBE_BIN"

// Commands are the binaries a cluster runs, all from one Kubernetes build.
var Commands = []string{"kubelet", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"}

// Binaries returns the directory holding Commands: $STARTGATE_KUBE_BIN if
// set, else the output of hack/kubernetes/build.sh, which builds the pinned
// release into a cache outside the work tree the first time (about 15
// minutes on 2 cores, its progress on stderr) and answers at once after
// that. The script is found in the module's source tree, from this
// package's source directory or else from the working directory up. The
// error wraps ErrUnsupported when there is no such tree or no go.
func Binaries(ctx context.Context) (string, error) {
	if dir := os.Getenv(BinEnv); dir != "" {
		return dir, checkBinaries(dir)
	}
	script, err := buildScript()
	if err != nil {
		return "", err
	}
	if _, err := exec.LookPath("go"); err != nil {
		return "", fmt.Errorf("%w: building Kubernetes needs go: %w", ErrUnsupported, err)
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("cluster: %s: %w", script, err)
	}
	dir := lastLine(out.Bytes())
	if dir == "" {
		return "", fmt.Errorf("cluster: %s printed no directory", script)
	}
	return dir, checkBinaries(dir)
}

// CachedBinaries is Binaries without the build: $STARTGATE_KUBE_BIN, or
// the directory build.sh would print if it has built already. Tests use
// it, so a test never starts a 15-minute build under go test's timeout.
// The cache layout mirrors build.sh's: CACHE/kubernetes/VERSION-GOVERSION,
// complete when it holds .complete; binaries built by another Go release
// of the same Kubernetes version are taken too.
func CachedBinaries() (string, error) {
	if dir := os.Getenv(BinEnv); dir != "" {
		return dir, checkBinaries(dir)
	}
	script, err := buildScript()
	if err != nil {
		return "", err
	}
	version, err := kubeVersion(filepath.Join(filepath.Dir(script), "go.mod"))
	if err != nil {
		return "", err
	}
	cache := os.Getenv("STARTGATE_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("%w: no cache dir: %w", ErrUnsupported, err)
			}
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "startgate")
	}
	candidates := []string{filepath.Join(cache, "kubernetes", version+"-"+runtime.Version())}
	others, _ := filepath.Glob(filepath.Join(cache, "kubernetes", version+"-go*"))
	for _, dir := range append(candidates, others...) {
		if _, err := os.Stat(filepath.Join(dir, ".complete")); err == nil {
			bin := filepath.Join(dir, "bin")
			return bin, checkBinaries(bin)
		}
	}
	return "", fmt.Errorf("%w: Kubernetes %s is not built (make kube, or set %s)", ErrUnsupported, version, BinEnv)
}

// checkBinaries reports the first of Commands missing from dir.
func checkBinaries(dir string) error {
	for _, c := range Commands {
		p := filepath.Join(dir, c)
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrUnsupported, err)
		}
		if fi.Mode()&0o111 == 0 {
			return fmt.Errorf("%w: %s is not executable", ErrUnsupported, p)
		}
	}
	return nil
}

// buildScript finds hack/kubernetes/build.sh in the module's tree.
func buildScript() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	script := filepath.Join(root, "hack", "kubernetes", "build.sh")
	if _, err := os.Stat(script); err != nil {
		return "", fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	return script, nil
}

// moduleRoot is the directory holding the go.mod of Module: first up from
// this file's directory (right for tests and go run, wrong for a binary
// built with -trimpath or moved to another machine), then up from the
// working directory.
func moduleRoot() (string, error) {
	var starts []string
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	for _, start := range starts {
		if root, ok := findModule(start, Module); ok {
			return root, nil
		}
	}
	return "", fmt.Errorf("%w: no source tree of %s above %v", ErrUnsupported, Module, starts)
}

// findModule walks up from dir to the directory whose go.mod declares
// module.
func findModule(dir, module string) (string, bool) {
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && modulePath(b) == module {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// modulePath is the path on a go.mod's module line.
func modulePath(gomod []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(gomod))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}

// kubeVersion reads the version of k8s.io/kubernetes that the wrapper
// module at gomod requires.
func kubeVersion(gomod string) (string, error) {
	b, err := os.ReadFile(gomod)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if f = trimRequire(f); len(f) >= 2 && f[0] == "k8s.io/kubernetes" && strings.HasPrefix(f[1], "v") {
			return f[1], nil
		}
	}
	return "", errors.New("cluster: no k8s.io/kubernetes requirement in " + gomod)
}

// trimRequire drops the "require" of a single-line requirement.
func trimRequire(f []string) []string {
	if len(f) > 0 && f[0] == "require" {
		return f[1:]
	}
	return f
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
