package bench

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/startgate/startgate/harness/testbed"
)

// TestSmoke runs the whole scenario small: a 1 MiB patch before each
// burst, pulled through the registry bandwidth cap's proxy, 4 pods of the mixed workload (fixed, short work) pulling it,
// direct, through startgated (this test binary re-executed) and through
// startgated with the patch prefetched, one round. It checks that the
// figures are there, not what they are: tests never assert on speed.
// Like every testbed test it skips where containerd or docker-registry
// cannot run, except under CI=true, where that fails.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts containerd, a registry and startgated")
	}
	tb := testbed.StartT(t, testbed.Options{})
	reg := testbed.StartRegistryT(t, testbed.RegistryOptions{})
	before, _ := filepath.Glob(filepath.Join(os.TempDir(), "sgbench-*"))
	modes, err := ParseModes("direct,startgate,startgate-prefetch")
	if err != nil {
		t.Fatal(err)
	}
	var progress strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := Run(ctx, Options{
		Pods:      4,
		Rounds:    1,
		Modes:     modes,
		Workload:  WorkMixed,
		Loops:     2000,
		IOBytes:   1 << 20,
		PatchSize: 1 << 20,
		// Pulls and the prefetch through the throttling proxy (200
		// Mbit/s: a 1 MiB patch costs a few tens of ms more).
		RegistryBandwidth: 25e6,
		Lone:              1,
		Kubelet:           Kubelet{Timeout: 30 * time.Second, Backoff: time.Second},
		Deadline:          time.Minute,
		// Whatever else runs on the machine, do not wait long for it.
		Quiet:           Quiet{CPU: 0.5, Interval: 100 * time.Millisecond, Samples: 1, Max: 2 * time.Second},
		Progress:        &progress,
		Testbed:         tb,
		Registry:        reg,
		PrefetchTimeout: time.Minute,
	})
	if err != nil {
		t.Fatalf("Run: %v\nprogress:\n%s", err, progress.String())
	}
	if len(res.Modes) != 3 {
		t.Fatalf("modes: got %+v, want direct, startgate and startgate-prefetch", res.Modes)
	}
	for _, m := range res.Modes {
		s := m.Summary
		if s.Pods != 4 || s.Ready != 4 || s.Failed != 0 || s.P50 <= 0 || s.Makespan < s.P99 {
			t.Errorf("%s: got %+v, want 4 pods ready, none failed, makespan >= p99 > 0", m.Mode, s)
		}
		if s.PullP50 <= 0 || s.FirstPull <= 0 {
			t.Errorf("%s: got pull p50 %v, first pull %v, want both > 0", m.Mode, s.PullP50, s.FirstPull)
		}
		if (s.Prefetch > 0) != (m.Mode == "startgate-prefetch") {
			t.Errorf("%s: got prefetch time %v, want one for startgate-prefetch only", m.Mode, s.Prefetch)
		}
		if m.VsDirect == nil {
			t.Errorf("%s: got no ratios to direct, want them", m.Mode)
		}
	}
	if r := res.Modes[0].VsDirect; r == nil || r.P50 != 1 || r.Makespan != 1 {
		t.Errorf("direct vs direct: got %+v, want 1", r)
	}
	if c := res.Calibration; c.Loops != 2000 || c.IOBytes != 1<<20 || c.Single <= 0 || c.IOInit <= 0 || res.Ideal.Pods != 4 {
		t.Errorf("calibration and ideal: got %+v and %+v, want 2000 loops, 1 MiB of IO, single-pod and IO init times, 4 ideal pods",
			res.Calibration, res.Ideal)
	}
	patches := map[string]bool{}
	for _, b := range res.Bursts {
		if b.Patch == "" || patches[b.Patch] {
			t.Errorf("burst %s: got patch %q, want a digest of its own (seen: %v)", b.Mode, b.Patch, patches)
		}
		patches[b.Patch] = true
		if b.PrefetchError != "" {
			t.Errorf("burst %s: prefetch failed: %s", b.Mode, b.PrefetchError)
		}
		if viaGate := b.Mode != "direct"; viaGate != (len(b.Gate) > 0) {
			t.Errorf("burst %s: got %d gate samples, want some for the startgate modes only", b.Mode, len(b.Gate))
		}
		for i, p := range b.Pods {
			for _, call := range []string{"PullImage", "RunPodSandbox", "CreateContainer", "StartContainer"} {
				if p.Calls[call] <= 0 {
					t.Errorf("%s: got calls %v, want %s timed", p.Name, p.Calls, call)
				}
			}
			if want := []string{WorkCPU, WorkIO}[i%2]; p.Work != want {
				t.Errorf("%s: got work %q, want %q (mixed alternates by pod)", p.Name, p.Work, want)
			}
		}
	}

	var md strings.Builder
	if err := WriteMarkdown(&md, res); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| direct | ", "| startgate | ", "| startgate-prefetch | ", "| ideal (FIFO, "} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown: got\n%s\nwant a row starting %q", md.String(), want)
		}
	}
	var svg strings.Builder
	if err := WriteChart(&svg, res); err != nil {
		t.Fatal(err)
	}
	for _, m := range res.Modes {
		if want := `data-mode="` + m.Mode + `"`; !strings.Contains(svg.String(), want) {
			t.Errorf("chart: got no line for %s (%s)", m.Mode, want)
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
