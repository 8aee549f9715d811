package criproxy

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFindCgroupCPU(t *testing.T) {
	for _, c := range []struct {
		name, cgroup, file, body string
		want                     uint64
	}{
		{
			name:   "v1, cpu and cpuacct mounted together",
			cgroup: "12:pids:/k8s.io/abc\n4:cpu,cpuacct:/k8s.io/abc\n0::/\n",
			file:   "cpu,cpuacct/k8s.io/abc/cpuacct.usage", body: "123456789\n", want: 123456789,
		},
		{
			name:   "v1, cpuacct on its own (a hybrid host: the unified line is ignored)",
			cgroup: "2:cpuacct:/kubepods/pod1/abc\n1:cpu:/kubepods/pod1/abc\n0::/system.slice/containerd.service\n",
			file:   "cpuacct/kubepods/pod1/abc/cpuacct.usage", body: "42\n", want: 42,
		},
		{
			name:   "v1 listed together, mounted apart",
			cgroup: "4:cpu,cpuacct:/abc\n",
			file:   "cpuacct/abc/cpuacct.usage", body: "7\n", want: 7,
		},
		{
			name:   "v2",
			cgroup: "0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-abc.scope\n",
			file:   "kubepods.slice/kubepods-pod1.slice/cri-containerd-abc.scope/cpu.stat",
			body:   "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n", want: 2500000,
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			proc, cg := t.TempDir(), t.TempDir()
			writeFile(t, filepath.Join(proc, "7", "cgroup"), c.cgroup)
			writeFile(t, filepath.Join(cg, c.file), c.body)
			cc, err := findCgroupCPU(proc, cg, 7)
			if err != nil {
				t.Fatal(err)
			}
			got, err := cc.usage()
			if err != nil || got != c.want {
				t.Fatalf("usage = %d, %v; want %d", got, err, c.want)
			}
			// The container removed: its counter is gone, and says so.
			if err := os.RemoveAll(filepath.Join(cg, filepath.Dir(c.file))); err != nil {
				t.Fatal(err)
			}
			if _, err := cc.usage(); err == nil {
				t.Error("a removed cgroup read without error")
			}
		})
	}
}

func TestFindCgroupCPURefuses(t *testing.T) {
	proc, cg := t.TempDir(), t.TempDir()
	for _, c := range []struct{ name, cgroup, want string }{
		{"no cgroup file", "", "cgroup of pid 7"},
		{"cpuacct not mounted", "2:cpuacct:/abc\n", "not under"},
		{"v2 without cpu.stat", "0::/abc\n", "no cpu.stat"},
		{"neither", "8:pids:/abc\n", "no cpuacct or unified"},
	} {
		os.RemoveAll(filepath.Join(proc, "7"))
		if c.cgroup != "" {
			writeFile(t, filepath.Join(proc, "7", "cgroup"), c.cgroup)
		}
		_, err := findCgroupCPU(proc, cg, 7)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want one saying %q", c.name, err, c.want)
		}
	}
	writeFile(t, filepath.Join(cg, "bad", "cpu.stat"), "user_usec 1\n")
	if _, err := (cgroupCPU{file: filepath.Join(cg, "bad", "cpu.stat"), v2: true}).usage(); err == nil {
		t.Error("cpu.stat without usage_usec read without error")
	}
}

// TestCgroupCPUOfThisProcess reads this machine's own cgroups: the
// counter this test's process is in grows while it burns CPU.
func TestCgroupCPUOfThisProcess(t *testing.T) {
	c, err := findCgroupCPU("/proc", "/sys/fs/cgroup", os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	before, err := c.usage()
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	for i := range 50_000_000 {
		x += i
	}
	after, err := c.usage()
	if err != nil {
		t.Fatal(err)
	}
	if after <= before {
		t.Errorf("%s: %d then %d after a busy loop (%s)", c.file, before, after, strconv.Itoa(x)[:1])
	}
}
