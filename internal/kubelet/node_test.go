package kubelet

import (
	"os"
	"path/filepath"
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
