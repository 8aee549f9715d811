package kubelet

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// A full disk, for real: the node's files and the state directory on a
// small tmpfs filled up. Enable fails naming the cause, and changes
// nothing; with room again, enable and disable work and every file is
// back byte for byte.
func TestFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root to mount a tmpfs (CI runs as root)")
		}
		t.Skip("needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", "testdata/layouts/kubeadm/.", root+"/").CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	n := &Node{Root: root, StateDir: filepath.Join(dir, "state"), Proc: filepath.Join(root, "proc")}
	orig := snapshot(t, root)

	// Fill the disk.
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the tmpfs: %v", err)
			}
			break
		}
	}
	f.Close()

	_, err = n.Enable("")
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("enable on a full disk: %v, want ENOSPC", err)
	}
	if d := diffSnapshots(orig, snapshot(t, root)); len(d) > 0 {
		t.Fatalf("enable on a full disk changed files: %v", d)
	}
	if l, err := n.Resolve(); err != nil || l.Effective == StartgateEndpoint {
		t.Fatalf("after a failed enable: %v, %v", l, err)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Enable(""); err != nil {
		t.Fatalf("enable with room again: %v", err)
	}
	if _, err := n.Disable(); err != nil {
		t.Fatal(err)
	}
	if d := diffSnapshots(orig, snapshot(t, root)); len(d) > 0 {
		t.Fatalf("files not restored: %v", d)
	}
}
