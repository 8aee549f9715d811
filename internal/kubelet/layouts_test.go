package kubelet

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// copyLayout copies testdata/layouts/NAME, a node root of that layout,
// into a new directory and returns it.
func copyLayout(t *testing.T, name string) string {
	t.Helper()
	src := filepath.Join("testdata", "layouts", name)
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	// One file with another mode, to see modes kept.
	_ = os.Chmod(filepath.Join(dst, "var/lib/kubelet/kubeadm-flags.env"), 0o600)
	return dst
}

// snapshot is every file under root: path -> mode and content.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out["/"+rel] = fi.Mode().String() + "\n" + string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffSnapshots(a, b map[string]string) []string {
	var d []string
	for p, v := range a {
		if w, ok := b[p]; !ok {
			d = append(d, "removed "+p)
		} else if v != w {
			d = append(d, "changed "+p)
		}
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			d = append(d, "added "+p)
		}
	}
	return d
}

func newNode(t *testing.T, root string) *Node {
	return &Node{Root: root, StateDir: filepath.Join(t.TempDir(), "state"), Proc: filepath.Join(root, "proc")}
}

// Every layout users run, as a node root: where kubelet's next start
// takes its endpoint from, what enable changes (exactly the place that
// wins, in the file's own format, plus kubelet's unit drop-in), and that
// disable puts every file back byte for byte, modes included.
func TestLayouts(t *testing.T) {
	for _, tc := range []struct {
		layout     string
		winner     string // file that sets the effective endpoint; "" for kubelet's default
		kind       string
		before     string // effective before
		changed    string // the file enable changes or creates for the endpoint
		json       bool   // changed must stay JSON
		unitChange bool   // a unit file changes (daemon-reload)
	}{
		{"kubeadm", "/var/lib/kubelet/config.yaml", KindConfig, "unix:///var/run/containerd/containerd.sock", "/var/lib/kubelet/config.yaml", false, false},
		{"kubeadm-flags", "/var/lib/kubelet/kubeadm-flags.env", KindFlag, "unix:///var/run/containerd/containerd.sock", "/var/lib/kubelet/kubeadm-flags.env", false, false},
		{"kubeadm-default", "", "", ContainerdEndpoint, "/var/lib/kubelet/config.yaml", false, false},
		{"nodeadm", "/etc/kubernetes/kubelet/config.json", KindConfig, ContainerdEndpoint, "/etc/kubernetes/kubelet/config.json", true, false},
		{"nodeadm-dropin", "/etc/kubernetes/kubelet/config.json.d/00-nodeadm.conf", KindDropIn, ContainerdEndpoint, "/etc/kubernetes/kubelet/config.json.d/00-nodeadm.conf", true, false},
		{"config-dir", "/etc/kubernetes/kubelet.conf.d/50-runtime.conf", KindDropIn, ContainerdEndpoint, "/etc/kubernetes/kubelet.conf.d/50-runtime.conf", false, false},
		{"config-dir-default", "", "", ContainerdEndpoint, "/etc/kubernetes/kubelet.conf.d/90-startgate.conf", false, false},
		{"execstart", "/etc/systemd/system/kubelet.service", KindFlag, "unix:///var/run/containerd/containerd.sock", "/etc/systemd/system/kubelet.service", false, true},
		{"sysconfig", "/etc/sysconfig/kubelet", KindFlag, ContainerdEndpoint, "/etc/sysconfig/kubelet", false, false},
	} {
		t.Run(tc.layout, func(t *testing.T) {
			root := copyLayout(t, tc.layout)
			n := newNode(t, root)
			orig := snapshot(t, root)

			l, err := n.Resolve()
			if err != nil {
				t.Fatal(err)
			}
			if l.Effective != tc.before {
				t.Fatalf("effective endpoint %q, want %q (settings %+v)", l.Effective, tc.before, l.Settings)
			}
			if tc.winner == "" && len(l.Settings) != 0 || tc.winner != "" && (len(l.Settings) == 0 || l.Settings[0].File != tc.winner || l.Settings[0].Kind != tc.kind) {
				t.Fatalf("settings %+v, want the first in %s (%s)", l.Settings, tc.winner, tc.kind)
			}

			// A dry run writes nothing.
			p, err := n.PlanEnable("")
			if err != nil {
				t.Fatal(err)
			}
			if d := diffSnapshots(orig, snapshot(t, root)); len(d) > 0 {
				t.Fatalf("PlanEnable wrote: %v", d)
			}
			if len(p.Edits) != 2 || p.Edits[0].Path != tc.changed || p.Edits[1].Path != UnitDropIn {
				t.Fatalf("plan edits %v, want %s and %s", editPaths(p.Edits), tc.changed, UnitDropIn)
			}

			res, err := n.Enable("")
			if err != nil {
				t.Fatal(err)
			}
			if res.DaemonReload != true {
				t.Errorf("DaemonReload false; the unit drop-in was written")
			}
			after := snapshot(t, root)
			d := diffSnapshots(orig, after)
			wantDiff := map[string]bool{"added " + UnitDropIn: true}
			if p.Edits[0].Existed {
				wantDiff["changed "+tc.changed] = true
			} else {
				wantDiff["added "+tc.changed] = true
			}
			if len(d) != len(wantDiff) {
				t.Fatalf("enable changed %v, want %v", d, wantDiff)
			}
			for _, x := range d {
				if !wantDiff[x] {
					t.Fatalf("enable changed %v, want %v", d, wantDiff)
				}
			}
			got := []byte(strings.SplitN(after[tc.changed], "\n", 2)[1])
			if p.Edits[0].Existed {
				// Only the value changed: the old text with the old value
				// replaced (or the key added) is the new text.
				old := []byte(strings.SplitN(orig[tc.changed], "\n", 2)[1])
				if tc.winner != "" {
					if want := bytes.Replace(old, []byte(tc.before), []byte(StartgateEndpoint), 1); !bytes.Equal(got, want) {
						t.Errorf("%s after enable:\n%s\nwant\n%s", tc.changed, got, want)
					}
				} else if !bytes.HasPrefix(got, old) {
					t.Errorf("%s after enable does not keep the old text as it was:\n%s", tc.changed, got)
				}
				if strings.SplitN(after[tc.changed], "\n", 2)[0] != strings.SplitN(orig[tc.changed], "\n", 2)[0] {
					t.Errorf("%s mode changed: %s -> %s", tc.changed, strings.SplitN(orig[tc.changed], "\n", 2)[0], strings.SplitN(after[tc.changed], "\n", 2)[0])
				}
			}
			if tc.json && !json.Valid(got) {
				t.Errorf("%s is no longer JSON:\n%s", tc.changed, got)
			}
			if l, err := n.Resolve(); err != nil || l.Effective != StartgateEndpoint || l.Settings[0].File != tc.changed {
				t.Fatalf("after enable: %+v, %v; want %s from %s", l, err, StartgateEndpoint, tc.changed)
			}
			if st, err := n.Status(); err != nil || !st.Enabled || st.Phase != phaseEnabled || st.Switched.IsZero() {
				t.Errorf("status after enable: %+v, %v", st, err)
			}

			// Enable again: nothing to do.
			if res, err := n.Enable(""); err != nil || res.Changed() {
				t.Errorf("second enable: %v, %v; want no change", editPaths(res.Edits), err)
			}

			if _, err := n.Disable(); err != nil {
				t.Fatal(err)
			}
			if d := diffSnapshots(orig, snapshot(t, root)); len(d) > 0 {
				t.Fatalf("disable did not restore every file: %v", d)
			}
			if _, err := os.Stat(n.recordPath()); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the record is still there after disable: %v", err)
			}
			if _, err := n.Disable(); !errors.Is(err, ErrNotSwitched) {
				t.Errorf("second disable: %v, want ErrNotSwitched", err)
			}
		})
	}
}

func editPaths(es []Edit) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Path)
	}
	return out
}

// Layouts the switch cannot change safely are refused with a message
// that names why and what to do, and nothing is written.
func TestRefusedLayouts(t *testing.T) {
	for _, tc := range []struct{ layout, want string }{
		{"k3s", "k3s"},
		{"rke2", "rke2"},
		{"noconfig", "no --config, no --config-dir and no --container-runtime-endpoint"},
	} {
		t.Run(tc.layout, func(t *testing.T) {
			root := copyLayout(t, tc.layout)
			n := newNode(t, root)
			orig := snapshot(t, root)
			_, err := n.Enable("")
			if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("enable: %v, want ErrUnsupported naming %q", err, tc.want)
			}
			if d := diffSnapshots(orig, snapshot(t, root)); len(d) > 0 {
				t.Fatalf("a refused enable wrote: %v", d)
			}
		})
	}
}
