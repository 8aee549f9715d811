package kubebench

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/procfs"
)

// fakeProc is a /proc with a stat file and the processes given.
type fakeProc struct {
	t    *testing.T
	root string
}

// fakeStat is a process: its pid (0: this process), comm, start tick,
// and utime, stime, cutime, cstime in ticks.
type fakeStat struct {
	pid                    int
	comm                   string
	start, ut, st, cut, cs int
}

// set writes /proc/stat with busy user ticks and idle ticks, and
// /proc/PID/stat for each process; a process left out has ended.
func (f fakeProc) set(user, idle int, procs ...fakeStat) {
	f.t.Helper()
	entries, _ := os.ReadDir(f.root)
	for _, e := range entries {
		if e.IsDir() {
			os.RemoveAll(filepath.Join(f.root, e.Name()))
		}
	}
	stat := fmt.Sprintf("cpu  %d 0 0 %d 0 0 0 0 0 0\ncpu0 %d 0 0 %d 0 0 0 0 0 0\nbtime 1\n", user, idle, user, idle)
	if err := os.WriteFile(filepath.Join(f.root, "stat"), []byte(stat), 0o644); err != nil {
		f.t.Fatal(err)
	}
	for _, p := range procs {
		pid := p.pid
		if pid == 0 {
			pid = os.Getpid()
		}
		dir := filepath.Join(f.root, fmt.Sprint(pid))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			f.t.Fatal(err)
		}
		// Fields 1-22 of proc(5)'s stat: pid (comm) state ppid pgrp
		// session tty tpgid flags minflt cminflt majflt cmajflt utime
		// stime cutime cstime priority nice threads itrealvalue
		// starttime, then 30 more, zero here.
		line := fmt.Sprintf("%d (%s) S 1 1 1 0 -1 0 0 0 0 0 %d %d %d %d 20 0 1 0 %d%s\n", pid, p.comm, p.ut, p.st, p.cut, p.cs, p.start, strings.Repeat(" 0", 30))
		if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(line), 0o644); err != nil {
			f.t.Fatal(err)
		}
	}
}

func TestCPUAccount(t *testing.T) {
	f := fakeProc{t, t.TempDir()}
	pods := filepath.Join(t.TempDir(), "cpuacct.usage")
	write := func(ns int64) {
		if err := os.WriteFile(pods, []byte(fmt.Sprintf("%d\n", ns)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(5e9)
	// At the start: kubelet, containerd, an old pod's shim, the
	// benchmark itself, and a shell nobody tracks.
	f.set(1000, 500,
		fakeStat{200, "kubelet", 10, 300, 100, 0, 0},
		fakeStat{201, "containerd", 11, 200, 0, 50, 0},
		fakeStat{202, "containerd-shim", 12, 20, 0, 0, 0},
		fakeStat{0, "startgate-bench", 13, 400, 0, 900, 900},
		fakeStat{204, "sh", 14, 1, 0, 0, 0},
	)
	a, err := newCPUAccount(f.root, pods)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.sample(); err != nil {
		t.Fatal(err)
	}
	// Midway: the old shim has used 10 more ticks and reaped its
	// container (whose time the pods' cgroup counts, not the shim), a
	// new shim and a startgated have started.
	f.set(1200, 600,
		fakeStat{200, "kubelet", 10, 320, 110, 0, 0},
		fakeStat{201, "containerd", 11, 230, 0, 60, 10},
		fakeStat{202, "containerd-shim", 12, 30, 0, 800, 100},
		fakeStat{0, "startgate-bench", 13, 410, 0, 900, 900},
		fakeStat{204, "sh", 14, 50, 0, 0, 0},
		fakeStat{205, "containerd-shim", 15, 5, 5, 0, 0},
		fakeStat{206, "startgate-bench", 16, 40, 10, 0, 0},
	)
	if err := a.sample(); err != nil {
		t.Fatal(err)
	}
	// At the end: the old shim has ended (its time since the last
	// sample is lost to Other), and the pid of startgated is reused
	// by a new process of another start time, a new startgated.
	write(8e9)
	f.set(1600, 700,
		fakeStat{200, "kubelet", 10, 350, 120, 0, 0},
		fakeStat{201, "containerd", 11, 260, 0, 60, 10},
		fakeStat{0, "startgate-bench", 13, 430, 0, 2000, 2000},
		fakeStat{204, "sh", 14, 90, 0, 0, 0},
		fakeStat{205, "containerd-shim", 15, 10, 10, 0, 0},
		fakeStat{206, "startgate-bench", 99, 7, 3, 0, 0},
	)
	if err := a.sample(); err != nil {
		t.Fatal(err)
	}
	got := a.result()
	want := CPUBy{
		Busy:       6,         // 1600 - 1000 ticks
		Pods:       3,         // 8e9 - 5e9 ns
		Kubelet:    0.7,       // 470 - 400
		Containerd: 0.8,       // 330 - 250, reaped children included
		Shims:      0.1 + 0.2, // the old one until it ended, the new one whole
		Startgated: 0.5 + 0.1, // the first whole, then the second whole
		Harness:    0.3,       // its own time only: its children are the components
		Other:      6 - 3 - 0.7 - 0.8 - 0.3 - 0.6 - 0.3,
	}
	for _, part := range cpuByParts {
		if g, w := *part.get(&got), *part.get(&want); math.Abs(g-w) > 1e-9 {
			t.Errorf("%s = %v, want %v (all: %+v)", part.name, g, w, got)
		}
	}
}

func TestCPUClass(t *testing.T) {
	self := os.Getpid()
	for _, c := range []struct {
		comm string
		pid  int
		want string
	}{
		{"kubelet", 1, "kubelet"},
		{"containerd", 1, "containerd"},
		{"containerd-shim", 1, "shims"},
		{"containerd-shim-runc-v2", 1, "shims"},
		{"startgate-bench", 1, "startgated"},
		{"startgate-bench", self, "harness"},
		{"startgated", 1, "startgated"},
		{"kube-controller", 1, "control plane"},
		{"etcd", 1, "control plane"},
		{"node-daemon", 1, "pod-pacemaker"},
		{"runc", 1, ""},
		{"kubelet-helper", 1, ""},
	} {
		if got := cpuClass(c.comm, c.pid, self); got != c.want {
			t.Errorf("cpuClass(%q, %d) = %q, want %q", c.comm, c.pid, got, c.want)
		}
	}
}

// TestCPUAccountReal reads this machine's /proc while this process burns
// CPU: the benchmark's own time counts as the harness's, and never more
// than the machine was busy.
func TestCPUAccountReal(t *testing.T) {
	a, err := newCPUAccount(procfs.DefaultMountPoint, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.sample(); err != nil {
		t.Fatal(err)
	}
	p, err := procfs.Self()
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.Stat()
	if err != nil {
		t.Fatal(err)
	}
	start := st.CPUTime()
	x := 0.0
	for {
		for i := range 1_000_000 {
			x += float64(i)
		}
		if st, err = p.Stat(); err != nil {
			t.Fatal(err)
		}
		if st.CPUTime()-start >= 0.3 {
			break
		}
	}
	_ = x
	if err := a.sample(); err != nil {
		t.Fatal(err)
	}
	got := a.result()
	if got.Harness < 0.25 {
		t.Errorf("harness = %.2f core-seconds after this process burnt 0.3 (all: %+v)", got.Harness, got)
	}
	// /proc/stat counts whole ticks where a process's times are scaled
	// from its exact run time: a few ticks either way.
	if got.Busy < got.Harness-0.05 {
		t.Errorf("busy %.2f < harness %.2f", got.Busy, got.Harness)
	}
}
