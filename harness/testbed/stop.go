package testbed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// termGrace is how long containerd gets between SIGTERM and SIGKILL.
const termGrace = 5 * time.Second

// Stop removes every pod sandbox through the CRI, stops containerd, kills
// the shims (and their containers) it leaves behind, unmounts everything
// under the testbed's directory and removes it. It goes on after errors and
// returns them all; later calls return the first call's result.
func (tb *Testbed) Stop(ctx context.Context) error {
	tb.stopOnce.Do(func() { tb.stopErr = tb.stop(ctx) })
	return tb.stopErr
}

func (tb *Testbed) stop(ctx context.Context) error {
	var errs []error
	if tb.runtime != nil && !tb.hasExited() {
		errs = append(errs, tb.removeSandboxes(ctx))
	}
	if tb.client != nil {
		errs = append(errs, tb.client.Close())
	}
	if tb.criConn != nil {
		errs = append(errs, tb.criConn.Close())
	}
	errs = append(errs, tb.stopContainerd(ctx))
	tb.procMu.Lock()
	logf := tb.logf
	tb.procMu.Unlock()
	if logf != nil {
		errs = append(errs, logf.Close())
	}
	// Read before the kill: the files name what outlives the processes.
	left := findLeftovers(tb.dir)
	errs = append(errs, killShims(ctx, tb.dir))
	errs = append(errs, left.remove())
	errs = append(errs, unmountUnder(tb.dir))
	errs = append(errs, tb.deleteBridge(ctx))
	if err := os.RemoveAll(tb.dir); err != nil {
		errs = append(errs, fmt.Errorf("testbed: remove %s: %w", tb.dir, err))
	}
	return errors.Join(errs...)
}

func (tb *Testbed) hasExited() bool {
	_, exited := tb.proc()
	return isClosed(exited)
}

// removeSandboxes stops and removes every pod sandbox; removing a sandbox
// removes its containers.
func (tb *Testbed) removeSandboxes(ctx context.Context) error {
	callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	resp, err := tb.runtime.ListPodSandbox(callCtx, &runtimeapi.ListPodSandboxRequest{})
	cancel()
	if err != nil {
		return fmt.Errorf("testbed: list pod sandboxes: %w", err)
	}
	var errs []error
	for _, sb := range resp.GetItems() {
		callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if _, err := tb.runtime.StopPodSandbox(callCtx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			errs = append(errs, fmt.Errorf("testbed: stop pod sandbox %s: %w", sb.Id, err))
		} else if _, err := tb.runtime.RemovePodSandbox(callCtx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			errs = append(errs, fmt.Errorf("testbed: remove pod sandbox %s: %w", sb.Id, err))
		}
		cancel()
	}
	return errors.Join(errs...)
}

// stopContainerd sends SIGTERM, then SIGKILL after termGrace or when ctx
// ends, and waits for the process to be reaped.
func (tb *Testbed) stopContainerd(ctx context.Context) error {
	cmd, exited := tb.proc()
	if cmd == nil || isClosed(exited) {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	grace := time.NewTimer(termGrace)
	defer grace.Stop()
	select {
	case <-exited:
		return nil
	case <-grace.C:
	case <-ctx.Done():
	}
	_ = cmd.Process.Kill()
	select {
	case <-exited:
		return fmt.Errorf("testbed: containerd ignored SIGTERM for %v, killed", termGrace)
	case <-time.After(5 * time.Second):
		return errors.New("testbed: containerd survived SIGKILL")
	}
}

// killShims kills every containerd shim whose command line names dir
// (shims get `-address DIR/containerd.sock`) and all of its descendants.
// The containers go first, while their shim is alive to reap them: a shim
// is its containers' subreaper, and a container orphaned by a dead shim is
// reaped by PID 1, which here takes up to a second or two, holding up the
// pod's PID-namespace init, which waits for every zombie in its namespace.
// The shims go last; one that becomes a zombie counts as gone.
func killShims(ctx context.Context, dir string) error {
	procs, err := readProcs()
	if err != nil {
		return err
	}
	var shims, containers []int
	for pid, p := range procs {
		if slices.ContainsFunc(p.args, isShim) && refersTo(p.args, dir) {
			shims = append(shims, pid)
			containers = append(containers, descendants(procs, pid)[1:]...)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := killAndWait(ctx, containers); err != nil {
		return err
	}
	return killAndWait(ctx, shims)
}

func isShim(arg string) bool { return strings.Contains(arg, "containerd-shim") }

// killAndWait SIGKILLs pids and polls until none is alive or ctx ends.
func killAndWait(ctx context.Context, pids []int) error {
	if len(pids) == 0 {
		return nil
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL) // ESRCH: already gone
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		var alive []int
		for _, pid := range pids {
			if processAlive(pid) {
				alive = append(alive, pid)
			}
		}
		if len(alive) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("testbed: processes %v still alive after SIGKILL: %w", alive, ctx.Err())
		case <-tick.C:
		}
	}
}

// refersTo reports whether a command line has an argument that is dir or
// a path under it.
func refersTo(args []string, dir string) bool {
	for _, arg := range args {
		if arg == dir || strings.HasPrefix(arg, dir+"/") {
			return true
		}
	}
	return false
}

// ProcessesUsing returns the pids of processes whose command line has an
// argument under dir. Tests use it to check that Stop left nothing behind.
func ProcessesUsing(dir string) ([]int, error) {
	procs, err := readProcs()
	if err != nil {
		return nil, err
	}
	var pids []int
	for pid, p := range procs {
		if refersTo(p.args, dir) && processAlive(pid) {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	return pids, nil
}

type proc struct {
	ppid int
	args []string
}

func readProcs() (map[int]proc, error) {
	all, err := procfs.AllProcs()
	if err != nil {
		return nil, fmt.Errorf("testbed: %w", err)
	}
	procs := make(map[int]proc, len(all))
	for _, p := range all {
		// Processes vanish while we read; skip them.
		stat, err := p.Stat()
		if err != nil {
			continue
		}
		args, err := p.CmdLine()
		if err != nil {
			continue
		}
		procs[p.PID] = proc{ppid: stat.PPID, args: args}
	}
	return procs, nil
}

// processAlive is false for processes that are gone or zombies: a killed
// shim reparented to an init that does not reap stays a zombie, and a
// zombie holds no mounts or files.
func processAlive(pid int) bool {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return false
	}
	stat, err := p.Stat()
	return err == nil && stat.State != "Z" && stat.State != "X"
}

func descendants(procs map[int]proc, root int) []int {
	children := map[int][]int{}
	for pid, p := range procs {
		children[p.ppid] = append(children[p.ppid], pid)
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// MountsUnder returns the mount points at or under dir, deepest first, from
// /proc/self/mountinfo.
func MountsUnder(dir string) ([]string, error) {
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return nil, fmt.Errorf("testbed: read mountinfo: %w", err)
	}
	mounts := make([]string, 0, len(infos))
	for _, m := range infos {
		mounts = append(mounts, m.Mountpoint)
	}
	// Deepest first; a path mounted twice appears twice and is unmounted
	// twice, top of the stack first (mountinfo lists it last).
	slices.Reverse(mounts)
	sort.SliceStable(mounts, func(i, j int) bool {
		return strings.Count(mounts[i], "/") > strings.Count(mounts[j], "/")
	})
	return mounts, nil
}

// unmountUnder detaches every mount at or under dir, deepest first.
func unmountUnder(dir string) error {
	mounts, err := MountsUnder(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range mounts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("testbed: unmount %s: %w", m, err))
		}
	}
	return errors.Join(errs...)
}

// StartT starts a testbed for a test and stops it in t.Cleanup. When this
// machine lacks what a testbed needs, it skips the test, except under
// CI=true, where it fails: CI must not turn e2e tests into silent skips.
// Any other start error fails the test.
func StartT(t testing.TB, opts Options) *Testbed {
	t.Helper()
	tb, err := Start(context.Background(), opts)
	if err != nil {
		if errors.Is(err, ErrUnsupported) && os.Getenv("CI") != "true" {
			t.Skipf("testbed: cannot start containerd here (set CI=true to make this a failure): %v", err)
		}
		t.Fatalf("testbed: start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := tb.Stop(ctx); err != nil {
			t.Errorf("testbed: stop: %v", err)
		}
	})
	return tb
}

// leftovers are what a killed shim and its containers leave outside the
// testbed's directory: containerd 1.6 puts shim sockets in
// /run/containerd/s whatever its state dir, and runc's cgroups live under
// /sys/fs/cgroup/*/k8s.io. After a clean shutdown there are none.
type leftovers struct {
	sockets []string
	cgroups []string
}

// findLeftovers reads the shim addresses from the task bundles and the
// cgroup paths from runc's state (its root is DIR/runc, see configTOML).
func findLeftovers(dir string) leftovers {
	var l leftovers
	addrs, _ := filepath.Glob(filepath.Join(dir, "state", "io.containerd.runtime.v2.task", "*", "*", "address"))
	seen := map[string]bool{}
	for _, a := range addrs {
		b, err := os.ReadFile(a)
		if err != nil {
			continue
		}
		p, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "unix://")
		if ok && strings.HasPrefix(p, "/run/containerd/s/") && !seen[p] {
			seen[p] = true
			l.sockets = append(l.sockets, p)
		}
	}
	states, _ := filepath.Glob(filepath.Join(dir, "runc", "*", "*", "state.json"))
	for _, st := range states {
		b, err := os.ReadFile(st)
		if err != nil {
			continue
		}
		var s struct {
			CgroupPaths map[string]string `json:"cgroup_paths"`
		}
		if json.Unmarshal(b, &s) != nil {
			continue
		}
		for _, p := range s.CgroupPaths {
			if strings.HasPrefix(p, "/sys/fs/cgroup/") {
				l.cgroups = append(l.cgroups, p)
			}
		}
	}
	sort.Strings(l.cgroups)
	return l
}

// remove deletes the leftovers whose processes are gone: a cgroup that
// still has processes (EBUSY) is an error.
func (l leftovers) remove() error {
	var errs []error
	for _, s := range l.sockets {
		if fi, err := os.Lstat(s); err == nil && fi.Mode()&os.ModeSocket != 0 {
			if err := os.Remove(s); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("testbed: remove shim socket: %w", err))
			}
		}
	}
	for _, c := range l.cgroups {
		if err := unix.Rmdir(c); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("testbed: remove cgroup %s: %w", c, err))
		}
	}
	return errors.Join(errs...)
}
