package kubebench

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/startgate/startgate/harness/bench"
)

const kubeletMetrics = `# HELP kubelet_pod_start_sli_duration_seconds [ALPHA] Duration in seconds to start a pod, excluding time to pull images and run init containers
# TYPE kubelet_pod_start_sli_duration_seconds histogram
kubelet_pod_start_sli_duration_seconds_bucket{le="0.5"} 0
kubelet_pod_start_sli_duration_seconds_bucket{le="1"} 10
kubelet_pod_start_sli_duration_seconds_bucket{le="2"} 30
kubelet_pod_start_sli_duration_seconds_bucket{le="4"} 40
kubelet_pod_start_sli_duration_seconds_bucket{le="+Inf"} 40
kubelet_pod_start_sli_duration_seconds_sum 60
kubelet_pod_start_sli_duration_seconds_count 40
# HELP kubelet_pod_start_total_duration_seconds [ALPHA] Duration in seconds to start a pod since creation, including time to pull images and run init containers
# TYPE kubelet_pod_start_total_duration_seconds histogram
kubelet_pod_start_total_duration_seconds_bucket{le="1"} 0
kubelet_pod_start_total_duration_seconds_bucket{le="2"} 20
kubelet_pod_start_total_duration_seconds_bucket{le="+Inf"} 40
kubelet_pod_start_total_duration_seconds_sum 120
kubelet_pod_start_total_duration_seconds_count 40
`

func TestKubeletHistograms(t *testing.T) {
	fams, err := parseMetrics([]byte(kubeletMetrics))
	if err != nil {
		t.Fatal(err)
	}
	sli, total := fromFamily(fams[metricSLI]), fromFamily(fams[metricTotal])
	if sli.Count != 40 || len(sli.Bounds) != 5 || !math.IsInf(sli.Bounds[4], 1) {
		t.Fatalf("sli = %+v, want 40 observations in 5 buckets ending at +Inf", sli)
	}
	// Rank 20 of 40 lies halfway through the (1, 2] bucket (10 to 30).
	if got := sli.quantile(0.5); got != 1500*time.Millisecond {
		t.Errorf("sli p50 = %v, want 1.5s", got)
	}
	if got := sli.mean(); got != 1500*time.Millisecond {
		t.Errorf("sli mean = %v, want 1.5s", got)
	}
	// Past the last finite bound: its bound, not infinity.
	if got := total.quantile(0.9); got != 2*time.Second {
		t.Errorf("total p90 = %v, want 2s (the last finite bound)", got)
	}
	d := sli.sub(histogram{Bounds: sli.Bounds, Counts: []uint64{0, 10, 10, 10, 10}, Count: 10, Sum: 10})
	if d.Count != 30 || d.Counts[1] != 0 || d.quantile(0.5) != 1750*time.Millisecond {
		t.Errorf("difference = %+v (p50 %v), want 30 observations, none up to 1s, p50 1.75s", d, d.quantile(0.5))
	}
	// A kubelet restarted in between: the earlier reading is ignored.
	if r := sli.sub(histogram{Bounds: sli.Bounds, Counts: []uint64{0, 0, 0, 0, 99}, Count: 99}); r.Count != 40 {
		t.Errorf("after a reset: count %d, want the later reading's 40", r.Count)
	}
	if got := (histogram{}).quantile(0.5); got != 0 {
		t.Errorf("empty p50 = %v, want 0", got)
	}
}

func TestPulledEvent(t *testing.T) {
	for _, tt := range []struct {
		msg           string
		pull, waiting time.Duration
	}{
		{`Successfully pulled image "127.0.0.1:3/startgate/kubebench-app:1" in 104ms (2.389s including waiting). Image size: 21502976 bytes.`, 104 * time.Millisecond, 2389 * time.Millisecond},
		{`Successfully pulled image "x:1" in 1.5s (1m2.5s including waiting). Image size: 1 bytes.`, 1500 * time.Millisecond, 62500 * time.Millisecond},
		{`Successfully pulled image "x:1" in 812µs (812µs including waiting). Image size: 1 bytes.`, 812 * time.Microsecond, 812 * time.Microsecond},
	} {
		m := pulledRE.FindStringSubmatch(tt.msg)
		if m == nil {
			t.Errorf("%q: no match", tt.msg)
			continue
		}
		p, err1 := time.ParseDuration(m[1])
		w, err2 := time.ParseDuration(m[2])
		if err1 != nil || err2 != nil || p != tt.pull || w != tt.waiting {
			t.Errorf("%q: pull %v (%v), waiting %v (%v); want %v, %v", tt.msg, p, err1, w, err2, tt.pull, tt.waiting)
		}
	}
	if pulledRE.MatchString(`Container image "x:1" already present on machine`) {
		t.Errorf("matched an already-present event")
	}
}

// Ratios are taken within each round and the median reported with its
// range; the best fixed limit is the round's.
func TestTables(t *testing.T) {
	run := func(mode string, round int, p50 time.Duration) ScenarioRun {
		return ScenarioRun{Scenario: Recreate, Mode: mode, Round: round, Completion: 2 * p50,
			Pods: []PodTime{{Ready: p50}, {Ready: p50}, {Ready: 2 * p50}}}
	}
	r := &Result{Scenarios: []string{Recreate}, Modes: []string{"direct", "fixed-2", "fixed-4", "startgate"}}
	for round, f := range []struct{ direct, f2, f4, sg time.Duration }{
		{10 * time.Second, 6 * time.Second, 8 * time.Second, 6 * time.Second},
		{10 * time.Second, 9 * time.Second, 5 * time.Second, 6 * time.Second},
		{20 * time.Second, 10 * time.Second, 10 * time.Second, 14 * time.Second},
	} {
		r.Runs = append(r.Runs, run("direct", round+1, f.direct), run("fixed-2", round+1, f.f2), run("fixed-4", round+1, f.f4), run("startgate", round+1, f.sg))
	}
	tabs := r.Tables()
	if len(tabs) != 1 || len(tabs[0].Rows) != 4 {
		t.Fatalf("tables = %+v, want one with 4 rows", tabs)
	}
	sg := tabs[0].Rows[3]
	if sg.Mode != "startgate" {
		t.Fatalf("row 4 is %s", sg.Mode)
	}
	// p50 vs direct per round: 0.6, 0.6, 0.7.
	if got := sg.P50VsDirect; math.Abs(got.Median-0.6) > 1e-9 || math.Abs(got.Max-0.7) > 1e-9 || got.Rounds != 3 {
		t.Errorf("p50 vs direct = %+v, want median 0.6, max 0.7 over 3 rounds", got)
	}
	// vs the round's best fixed: 6/6, 6/5, 14/10.
	if got := sg.P50VsBestFixed; math.Abs(got.Median-1.2) > 1e-9 || math.Abs(got.Min-1) > 1e-9 || math.Abs(got.Max-1.4) > 1e-9 {
		t.Errorf("p50 vs best fixed = %+v, want 1.2 (1.0–1.4)", got)
	}
	if s := sg.Summary; s.Ready != 9 || s.Completion != 12*time.Second {
		t.Errorf("summary = %+v, want 9 ready, completion median 12s", s)
	}
	var b strings.Builder
	if err := WriteMarkdown(&b, r); err != nil || !strings.Contains(b.String(), "| startgate | ") {
		t.Errorf("markdown: %v\n%s", err, b.String())
	}
}

func TestOptionsRefuseBadInput(t *testing.T) {
	for _, o := range []Options{
		{Scenarios: []string{"reboot", "upgrade"}},
		{Workload: "gpu"},
		{Pods: 500},
		{Pods: -1},
		{Rounds: -2},
		{RegistryRTT: -time.Second},
		{Modes: []bench.Mode{}},
	} {
		if err := o.withDefaults(); err == nil {
			t.Errorf("Options %+v: got no error", o)
		}
	}
	var o Options
	if err := o.withDefaults(); err != nil || o.Pods != DefaultPods || o.Scenarios[0] != Recreate {
		t.Errorf("zero Options: %v, %+v", err, o)
	}
}

func TestInitScript(t *testing.T) {
	s := initScript(WorkMixed, 200*time.Millisecond, 1<<20)
	for _, want := range []string{"cpuacct.usage", "-lt 200000000", "usage_usec", "-lt 200000", "iflag=direct", "count=16", "httpd -f -p 8080"} {
		if !strings.Contains(s, want) {
			t.Errorf("mixed init script lacks %q:\n%s", want, s)
		}
	}
}
