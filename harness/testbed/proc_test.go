package testbed

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// needRoot skips a test that mounts, except under CI=true, where it fails.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root to mount, and CI=true")
		}
		t.Skip("needs root to mount")
	}
}

// processAlive is true for a running process and false for a zombie and
// for a pid that is gone.
func TestProcessAlive(t *testing.T) {
	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
	if !processAlive(sleeper.Process.Pid) {
		t.Errorf("processAlive(running sleep %d) = false, want true", sleeper.Process.Pid)
	}

	zombie := exec.Command("true")
	if err := zombie.Start(); err != nil {
		t.Fatal(err)
	}
	pid := zombie.Process.Pid
	// Exited and not reaped: a zombie until Wait.
	var si unix.Siginfo
	if err := unix.Waitid(unix.P_PID, pid, &si, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}
	if processAlive(pid) {
		t.Errorf("processAlive(zombie %d) = true, want false", pid)
	}
	if err := zombie.Wait(); err != nil {
		t.Fatal(err)
	}
	if processAlive(pid) {
		t.Errorf("processAlive(reaped %d) = true, want false", pid)
	}
}

// ProcessesUsing finds a process by an argument under the directory, and
// not one naming a sibling whose name starts the same.
func TestProcessesUsing(t *testing.T) {
	dir := t.TempDir()
	// The path is the command's name (argv[0]), as sleep takes no other.
	using := exec.Command("sleep", "60")
	using.Args[0] = dir + "/x"
	sibling := exec.Command("sleep", "60")
	sibling.Args[0] = dir + "2"
	for _, c := range []*exec.Cmd{using, sibling} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
	}
	pids, err := ProcessesUsing(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pids, []int{using.Process.Pid}) {
		t.Errorf("ProcessesUsing(%s) = %v, want [%d]", dir, pids, using.Process.Pid)
	}
}

// MountsUnder lists the mounts at and under a directory, deepest first,
// with the kernel's escapes in mountinfo (\040 for a space) undone, and
// not a sibling whose name starts the same.
func TestMountsUnder(t *testing.T) {
	needRoot(t)
	base := t.TempDir()
	dir := filepath.Join(base, "a b")
	inner := filepath.Join(dir, "c\td")
	sibling := dir + "x"
	for _, d := range []string{dir, sibling} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mount := func(at string) {
		if err := unix.Mount("tmpfs", at, "tmpfs", 0, ""); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = unix.Unmount(at, unix.MNT_DETACH) })
	}
	mount(dir)
	mount(sibling)
	if err := os.Mkdir(inner, 0o755); err != nil {
		t.Fatal(err)
	}
	mount(inner)
	got, err := MountsUnder(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{inner, dir}; !slices.Equal(got, want) {
		t.Errorf("MountsUnder(%q) = %q, want %q", dir, got, want)
	}
}

func TestRefersTo(t *testing.T) {
	const dir = "/tmp/sgtb-1"
	for _, tc := range []struct {
		cmdline string
		want    bool
	}{
		{"containerd-shim-runc-v2\x00-address\x00/tmp/sgtb-1/containerd.sock", true},
		{"containerd\x00--root\x00/tmp/sgtb-1", true},
		{"containerd-shim-runc-v2\x00-address\x00/tmp/sgtb-12/containerd.sock", false},
		{"sleep\x0030", false},
	} {
		if got := refersTo(strings.Split(tc.cmdline, "\x00"), dir); got != tc.want {
			t.Errorf("refersTo(%q): got %v, want %v", tc.cmdline, got, tc.want)
		}
	}
}
