package kubelet

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var errInjected = errors.New("injected failure")

// steps records the names of an operation's write steps.
func steps(t *testing.T, n *Node, op func() error) []string {
	t.Helper()
	var got []string
	n.fault = func(s string) error { got = append(got, s); return nil }
	defer func() { n.fault = nil }()
	if err := op(); err != nil {
		t.Fatal(err)
	}
	return got
}

// failAt makes n fail at step i (a crash or a full disk there).
func failAt(n *Node, i int) {
	k := 0
	n.fault = func(string) error {
		k++
		if k == i+1 {
			return errInjected
		}
		return nil
	}
}

// A failure at every step of enable and of disable leaves a state that
// the next disable undoes completely (every file byte for byte) and the
// next enable completes; and an interrupted disable is finished by the
// next disable or undone by the next enable.
func TestFailureAtEveryStep(t *testing.T) {
	for _, layout := range []string{"kubeadm", "kubeadm-flags", "nodeadm", "config-dir-default", "execstart"} {
		t.Run(layout, func(t *testing.T) {
			enable := func(n *Node) error { _, err := n.Enable(""); return err }
			disable := func(n *Node) error { _, err := n.Disable(); return err }
			probe := newNode(t, copyLayout(t, layout))
			enableSteps := steps(t, probe, func() error { return enable(probe) })
			disableSteps := steps(t, probe, func() error { return disable(probe) })
			if len(enableSteps) < 4 || len(disableSteps) < 3 {
				t.Fatalf("steps: enable %v, disable %v", enableSteps, disableSteps)
			}
			for i, s := range enableSteps {
				for _, next := range []string{"disable", "enable"} {
					t.Run(fmt.Sprintf("enable fails at %s, then %s", s, next), func(t *testing.T) {
						root := copyLayout(t, layout)
						n := newNode(t, root)
						orig := snapshot(t, root)
						failAt(n, i)
						if err := enable(n); !errors.Is(err, errInjected) {
							t.Fatalf("enable with a failure at %q: %v", s, err)
						}
						n.fault = nil
						if next == "enable" {
							if err := enable(n); err != nil {
								t.Fatalf("enable after the failure: %v", err)
							}
							if l, err := n.Resolve(); err != nil || l.Effective != StartgateEndpoint {
								t.Fatalf("after the second enable: %v, %v", l.Effective, err)
							}
						}
						if err := disable(n); err != nil && !errors.Is(err, ErrNotSwitched) {
							t.Fatalf("disable: %v", err)
						}
						if d := diffSnapshots(orig, snapshot(t, root)); len(d) > 0 {
							t.Fatalf("files not restored: %v", d)
						}
						if _, err := os.Stat(n.recordPath()); !errors.Is(err, os.ErrNotExist) {
							t.Fatalf("record left: %v", err)
						}
					})
				}
			}
			for i, s := range disableSteps {
				for _, next := range []string{"disable", "enable"} {
					t.Run(fmt.Sprintf("disable fails at %s, then %s", s, next), func(t *testing.T) {
						root := copyLayout(t, layout)
						n := newNode(t, root)
						orig := snapshot(t, root)
						if err := enable(n); err != nil {
							t.Fatal(err)
						}
						failAt(n, i)
						if err := disable(n); !errors.Is(err, errInjected) {
							t.Fatalf("disable with a failure at %q: %v", s, err)
						}
						n.fault = nil
						if next == "enable" {
							if err := enable(n); err != nil {
								t.Fatalf("enable after the failed disable: %v", err)
							}
							if l, err := n.Resolve(); err != nil || l.Effective != StartgateEndpoint {
								t.Fatalf("after enable: %v, %v", l.Effective, err)
							}
						}
						if err := disable(n); err != nil {
							t.Fatalf("disable: %v", err)
						}
						if d := diffSnapshots(orig, snapshot(t, root)); len(d) > 0 {
							t.Fatalf("files not restored: %v", d)
						}
					})
				}
			}
		})
	}
}

// A file changed by someone else after enable keeps their change:
// disable sets only the endpoint back, and says so.
func TestDisableKeepsLaterChanges(t *testing.T) {
	root := copyLayout(t, "kubeadm")
	n := newNode(t, root)
	if _, err := n.Enable(""); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(root, "var/lib/kubelet/config.yaml")
	b, _ := os.ReadFile(cfg)
	edited := string(b) + "maxPods: 200\n"
	if err := os.WriteFile(cfg, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := n.Disable()
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(cfg)
	want := strings.Replace(edited, StartgateEndpoint, "unix:///var/run/containerd/containerd.sock", 1)
	if string(got) != want {
		t.Errorf("config after disable:\n%s\nwant\n%s", got, want)
	}
	if len(res.Notes) == 0 || !strings.Contains(strings.Join(res.Notes, "\n"), "changed since") {
		t.Errorf("notes %q, want one saying the file was changed since", res.Notes)
	}
	if _, err := os.Stat(filepath.Join(root, UnitDropIn)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the unit drop-in is still there: %v", err)
	}
}

// nodeadm rewrites config.json at every boot: a switch undone that way
// is seen as such, and the next enable switches again.
func TestEnableAfterRegeneratedFile(t *testing.T) {
	root := copyLayout(t, "nodeadm")
	n := newNode(t, root)
	cfg := filepath.Join(root, "etc/kubernetes/kubelet/config.json")
	orig, _ := os.ReadFile(cfg)
	if _, err := n.Enable(""); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, orig, 0o644); err != nil { // nodeadm init at boot
		t.Fatal(err)
	}
	if st, err := n.Status(); err != nil || st.Enabled {
		t.Fatalf("status after the file was regenerated: %+v, %v; want not enabled", st, err)
	}
	res, err := n.Enable("")
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed() || len(res.Notes) == 0 {
		t.Errorf("second enable: edits %v notes %q; want the file switched again, with a note", editPaths(res.Edits), res.Notes)
	}
	if l, _ := n.Resolve(); l.Effective != StartgateEndpoint {
		t.Errorf("effective %s after enable", l.Effective)
	}
}

// A damaged record is named, with what to do; nothing is written.
func TestDamagedRecord(t *testing.T) {
	root := copyLayout(t, "kubeadm")
	n := newNode(t, root)
	if _, err := n.Enable(""); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(n.recordPath(), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := n.Disable()
	if err == nil || !strings.Contains(err.Error(), n.recordPath()) || !strings.Contains(err.Error(), "backup") {
		t.Fatalf("disable with a damaged record: %v; want an error naming it and the backups", err)
	}
}
