package testbed

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
)

// A testbed pinned to CPU 0 is a one-CPU node: containerd and the
// containers it starts may run on CPU 0 only.
func TestPinnedNode(t *testing.T) {
	ctx := context.Background()
	tb := StartT(t, Options{CPUs: "0"})
	cmd, _ := tb.proc()
	if got := cpusAllowed(t, cmd.Process.Pid); got != "0" {
		t.Errorf("containerd may run on CPUs %q, want 0", got)
	}
	rs := newCRIClient(ctx, t, tb)
	_, ctr := runPod(ctx, t, tb, rs, "pinned")
	st, err := rs.ContainerStatus(ctx, ctr, true)
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Pid int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(st.GetInfo()["info"]), &info); err != nil || info.Pid == 0 {
		t.Fatalf("container's pid from its verbose status: %v (%s)", err, st.GetInfo()["info"])
	}
	if got := cpusAllowed(t, info.Pid); got != "0" {
		t.Errorf("the container may run on CPUs %q, want 0", got)
	}
	for _, bad := range []string{"x", "3-1", "-1"} {
		if _, _, err := Pinned(bad, "true", nil); err == nil {
			t.Errorf("Pinned(%q): no error", bad)
		}
	}
}

// cpusAllowed is a process's Cpus_allowed_list.
func cpusAllowed(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no Cpus_allowed_list in /proc/%d/status", pid)
	return ""
}
