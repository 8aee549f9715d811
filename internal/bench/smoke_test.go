package bench

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/startgate/startgate/internal/testbed"
)

// TestSmoke runs the whole benchmark small: 3 pods, direct and through
// startgated (this test binary re-executed), one round, a fixed short
// loop. It checks that the figures are there, not what they are: tests
// never assert on speed.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts containerd and startgated")
	}
	tb := testbed.StartT(t, testbed.Options{})
	before, _ := filepath.Glob(filepath.Join(os.TempDir(), "sgbench-*"))
	modes, err := ParseModes("direct,startgate")
	if err != nil {
		t.Fatal(err)
	}
	var progress strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := Run(ctx, Options{
		Pods:     3,
		Rounds:   1,
		Modes:    modes,
		Loops:    2000,
		Lone:     1,
		Kubelet:  Kubelet{Timeout: 30 * time.Second, Backoff: time.Second},
		Deadline: time.Minute,
		// Whatever else runs on the machine, do not wait long for it.
		Quiet:    Quiet{CPU: 0.5, Interval: 100 * time.Millisecond, Samples: 1, Max: 2 * time.Second},
		Progress: &progress,
		Testbed:  tb,
	})
	if err != nil {
		t.Fatalf("Run: %v\nprogress:\n%s", err, progress.String())
	}
	if len(res.Modes) != 2 {
		t.Fatalf("modes: got %+v, want direct and startgate", res.Modes)
	}
	for _, m := range res.Modes {
		s := m.Summary
		if s.Pods != 3 || s.Ready != 3 || s.Failed != 0 || s.P50 <= 0 || s.Makespan < s.P99 {
			t.Errorf("%s: got %+v, want 3 pods ready, none failed, makespan >= p99 > 0", m.Mode, s)
		}
		if m.VsDirect == nil {
			t.Errorf("%s: got no ratios to direct, want them", m.Mode)
		}
	}
	if r := res.Modes[0].VsDirect; r == nil || r.P50 != 1 || r.Makespan != 1 {
		t.Errorf("direct vs direct: got %+v, want 1", r)
	}
	if res.Calibration.Loops != 2000 || res.Calibration.Single <= 0 || res.Ideal.Pods != 3 {
		t.Errorf("calibration and ideal: got %+v and %+v, want 2000 loops, a single-pod time, 3 ideal pods",
			res.Calibration, res.Ideal)
	}
	for _, b := range res.Bursts {
		for _, p := range b.Pods {
			if p.Calls["RunPodSandbox"] <= 0 || p.Calls["CreateContainer"] <= 0 || p.Calls["StartContainer"] <= 0 {
				t.Errorf("%s: got calls %v, want RunPodSandbox, CreateContainer and StartContainer timed", p.Name, p.Calls)
			}
		}
	}

	var md strings.Builder
	if err := WriteMarkdown(&md, res); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| direct | ", "| startgate | ", "| ideal (FIFO, "} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown: got\n%s\nwant a row starting %q", md.String(), want)
		}
	}

	// Run left the borrowed testbed without pods, and no startgated
	// directory behind.
	rs, err := newClient(ctx, tb.Endpoint(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close(ctx)
	if sbs, err := rs.ListPodSandbox(ctx, nil); err != nil || len(sbs) != 0 {
		t.Errorf("sandboxes after Run: got %d (%v), want none", len(sbs), err)
	}
	if after, _ := filepath.Glob(filepath.Join(os.TempDir(), "sgbench-*")); len(after) > len(before) {
		t.Errorf("startgated dirs: got %v after Run, had %v before", after, before)
	}
}
