package kubelet

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const kubeadmConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
# a comment that must survive
clusterDNS:
- 10.96.0.10
`

func write(t *testing.T, root, p, content string, mode os.FileMode) string {
	t.Helper()
	f := filepath.Join(root, p)
	if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	return f
}

func read(t *testing.T, f string) string {
	t.Helper()
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A kubeadm node: the endpoint is a flag in kubeadm-flags.env. Enable
// changes the flag there only, keeping the rest of the line and the
// file's mode; the config file is not touched; Disable puts the old value
// back, byte for byte, and forgets the switch.
func TestKubeadmFlagsRoundTrip(t *testing.T) {
	root := t.TempDir()
	flagsBefore := `KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock --pod-infra-container-image=registry.k8s.io/pause:3.10"` + "\n"
	flags := write(t, root, "/var/lib/kubelet/kubeadm-flags.env", flagsBefore, 0o640)
	cfg := write(t, root, "/var/lib/kubelet/config.yaml", kubeadmConfig, 0o644)
	n := &Node{Root: root, Proc: filepath.Join(root, "proc")}

	st, err := n.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Effective != "unix:///var/run/containerd/containerd.sock" || st.Enabled || len(st.Settings) != 1 || st.Settings[0].File != flags {
		t.Fatalf("status before: %+v", st)
	}
	changed, err := n.Enable("")
	if err != nil {
		t.Fatal(err)
	}
	if len(changed) != 1 || changed[0].File != flags {
		t.Errorf("Enable changed %+v, want the flags file only", changed)
	}
	want := strings.Replace(flagsBefore, "unix:///var/run/containerd/containerd.sock", StartgateEndpoint, 1)
	if got := read(t, flags); got != want {
		t.Errorf("flags file after Enable:\n%s\nwant\n%s", got, want)
	}
	if fi, _ := os.Stat(flags); fi.Mode().Perm() != 0o640 {
		t.Errorf("flags file mode %v after Enable, want 0640 kept", fi.Mode().Perm())
	}
	if read(t, cfg) != kubeadmConfig {
		t.Error("Enable touched the config file though a flag sets the endpoint")
	}
	if st, _ := n.Status(); !st.Enabled || st.Switched.IsZero() {
		t.Errorf("status after Enable: %+v, want enabled, with when", st)
	}
	// Enable again changes nothing.
	if changed, err := n.Enable(""); err != nil || len(changed) != 0 {
		t.Errorf("second Enable: %v, %v; want no change", changed, err)
	}

	if _, err := n.Disable(); err != nil {
		t.Fatal(err)
	}
	if got := read(t, flags); got != flagsBefore {
		t.Errorf("flags file after Disable:\n%s\nwant it as before:\n%s", got, flagsBefore)
	}
	if st, _ := n.Status(); st.Enabled || !st.Switched.IsZero() {
		t.Errorf("status after Disable: %+v", st)
	}
	if _, err := n.Disable(); !errors.Is(err, ErrNotSwitched) {
		t.Errorf("Disable of a node not switched = %v, want ErrNotSwitched", err)
	}
	// The backup is the original.
	if got := read(t, n.backupPath(flags)); got != flagsBefore {
		t.Errorf("backup %q, want the original", got)
	}
}

// No flag: the KubeletConfiguration's key, added when absent (and taken
// out again), replaced when present (and put back); comments and order
// kept. The running kubelet's --config names the file.
func TestConfigFileRoundTrip(t *testing.T) {
	for _, tc := range []struct{ name, before string }{
		{"absent", kubeadmConfig},
		{"present", strings.Replace(kubeadmConfig, "cgroupDriver: systemd\n", "cgroupDriver: systemd\ncontainerRuntimeEndpoint: \"unix:///run/containerd/containerd.sock\"\n", 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			cfg := write(t, root, "/etc/kubernetes/kubelet-config.yaml", tc.before, 0o600)
			write(t, root, "/proc/4242/cmdline", "/usr/bin/kubelet\x00--config\x00/etc/kubernetes/kubelet-config.yaml\x00--v=2\x00", 0o444)
			n := &Node{Root: root}
			st, err := n.Status()
			if err != nil {
				t.Fatal(err)
			}
			if st.Running.Pid != 4242 || st.ConfigFile != cfg {
				t.Fatalf("status: %+v, want the running kubelet's config file", st)
			}
			if _, err := n.Enable(""); err != nil {
				t.Fatal(err)
			}
			got := read(t, cfg)
			if !strings.Contains(got, "containerRuntimeEndpoint: "+StartgateEndpoint+"\n") || !strings.Contains(got, "# a comment that must survive") {
				t.Errorf("config after Enable:\n%s", got)
			}
			if st, _ := n.Status(); !st.Enabled {
				t.Errorf("status after Enable: %+v", st)
			}
			if _, err := n.Disable(); err != nil {
				t.Fatal(err)
			}
			after := read(t, cfg)
			if after != tc.before {
				t.Errorf("config after Disable:\n%s\nwant\n%s", after, tc.before)
			}
		})
	}
}

// Of a flag in kubeadm-flags.env and one in /etc/default/kubelet, the
// latter comes later on kubelet's command line and wins; Enable changes
// both.
func TestLastFlagWins(t *testing.T) {
	root := t.TempDir()
	a := write(t, root, "/var/lib/kubelet/kubeadm-flags.env", `KUBELET_KUBEADM_ARGS="--container-runtime-endpoint unix:///a.sock"`+"\n", 0o644)
	b := write(t, root, "/etc/default/kubelet", `KUBELET_EXTRA_ARGS=--container-runtime-endpoint=unix:///b.sock`+"\n", 0o644)
	n := &Node{Root: root, Proc: filepath.Join(root, "proc")}
	st, err := n.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Effective != "unix:///b.sock" || len(st.Settings) != 2 || st.Settings[0].File != b {
		t.Fatalf("status %+v, want /etc/default/kubelet's flag effective", st)
	}
	if _, err := n.Enable(""); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(read(t, a), "--container-runtime-endpoint "+StartgateEndpoint) || !strings.Contains(read(t, b), "--container-runtime-endpoint="+StartgateEndpoint) {
		t.Errorf("after Enable: %q, %q", read(t, a), read(t, b))
	}
	if _, err := n.Disable(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(read(t, a), "unix:///a.sock") || !strings.Contains(read(t, b), "unix:///b.sock") {
		t.Errorf("after Disable: %q, %q", read(t, a), read(t, b))
	}
}

// A file edited after Enable to another endpoint is left alone and named.
func TestDisableLeavesAnEditedFile(t *testing.T) {
	root := t.TempDir()
	cfg := write(t, root, "/var/lib/kubelet/config.yaml", kubeadmConfig, 0o644)
	n := &Node{Root: root, Proc: filepath.Join(root, "proc")}
	if _, err := n.Enable(""); err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(read(t, cfg), StartgateEndpoint, "unix:///run/crio/crio.sock", 1)
	write(t, root, "/var/lib/kubelet/config.yaml", edited, 0o644)
	_, err := n.Disable()
	if err == nil || !strings.Contains(err.Error(), cfg) {
		t.Fatalf("Disable after an edit = %v, want an error naming %s", err, cfg)
	}
	if read(t, cfg) != edited {
		t.Error("Disable changed a file edited since Enable")
	}
}

// Pointed at startgated by hand (no record): Disable points it at
// containerd.
func TestDisableWithoutRecord(t *testing.T) {
	root := t.TempDir()
	cfg := write(t, root, "/var/lib/kubelet/config.yaml", kubeadmConfig+"containerRuntimeEndpoint: "+StartgateEndpoint+"\n", 0o644)
	n := &Node{Root: root, Proc: filepath.Join(root, "proc")}
	if _, err := n.Disable(); err != nil {
		t.Fatal(err)
	}
	if got := read(t, cfg); !strings.Contains(got, "containerRuntimeEndpoint: "+ContainerdEndpoint+"\n") {
		t.Errorf("config after Disable:\n%s", got)
	}
}

// No KubeletConfiguration and no flag: Enable says so and writes nothing.
func TestEnableWithoutKubeletConfig(t *testing.T) {
	root := t.TempDir()
	n := &Node{Root: root, Proc: filepath.Join(root, "proc")}
	if _, err := n.Enable(""); err == nil || !strings.Contains(err.Error(), "KubeletConfiguration") {
		t.Fatalf("Enable on a node without kubelet config = %v", err)
	}
	if _, err := os.Stat(filepath.Join(n.stateDir(), "state.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state written though nothing changed: %v", err)
	}
}
