package kubelet

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The running kubelet is the one in this node's root: a kubelet in a
// chroot or a container (a nested node) is someone else's.
func TestRunningKubeletInThisRoot(t *testing.T) {
	proc := t.TempDir()
	mk := func(pid, root string, cmd ...string) {
		d := filepath.Join(proc, pid)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		var b []byte
		for _, c := range cmd {
			b = append(append(b, c...), 0)
		}
		if err := os.WriteFile(filepath.Join(d, "cmdline"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(root, filepath.Join(d, "root")); err != nil {
			t.Fatal(err)
		}
	}
	mk("100", "/var/lib/machines/other", "/usr/bin/kubelet", "--config=/other.yaml")
	mk("200", "/", "/usr/sbin/sshd")
	mk("300", "/", "/usr/bin/kubelet", "--config=/var/lib/kubelet/config.yaml")
	n := &Node{Proc: proc}
	r := n.Running()
	if r == nil || r.Pid != 300 || len(r.Args) != 1 || r.Args[0] != "--config=/var/lib/kubelet/config.yaml" {
		t.Fatalf("Running() = %+v, want pid 300 with its arguments", r)
	}
}

// Two kubelets in this root: with a unit, the one running its command
// line is this node's; without one, neither is, and Resolve refuses,
// naming them, instead of switching whichever came first.
func TestSeveralKubeletsInThisRoot(t *testing.T) {
	root := t.TempDir()
	proc := filepath.Join(root, "proc")
	mk := func(pid string, cmd ...string) {
		d := filepath.Join(proc, pid)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		var b []byte
		for _, c := range cmd {
			b = append(append(b, c...), 0)
		}
		if err := os.WriteFile(filepath.Join(d, "cmdline"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("/", filepath.Join(d, "root")); err != nil {
			t.Fatal(err)
		}
	}
	mk("100", "/opt/bench/kubelet", "--config=/tmp/bench/kubelet.yaml")
	mk("300", "/usr/bin/kubelet", "--config=/var/lib/kubelet/config.yaml")
	n := &Node{Root: root, Proc: proc, StateDir: filepath.Join(t.TempDir(), "state")}
	if r := n.Running(); r != nil {
		t.Errorf("Running() with two kubelets and no unit = pid %d, want none", r.Pid)
	}
	_, err := n.Resolve()
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "pids 100, 300") {
		t.Errorf("Resolve: %v, want ErrUnsupported naming pids 100, 300", err)
	}
	unit := filepath.Join(root, "etc/systemd/system/kubelet.service")
	if err := os.MkdirAll(filepath.Dir(unit), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(unit, []byte("[Service]\nExecStart=/usr/bin/kubelet --config=/var/lib/kubelet/config.yaml\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := n.Running(); r == nil || r.Pid != 300 {
		t.Errorf("Running() with the unit = %+v, want pid 300, the unit's command line", r)
	}
}
