package bench

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func secsOf(xs ...float64) []time.Duration {
	out := make([]time.Duration, len(xs))
	for i, x := range xs {
		out[i] = time.Duration(x * float64(time.Second))
	}
	return out
}

func TestPercentile(t *testing.T) {
	one40 := make([]time.Duration, 40)
	for i := range one40 {
		one40[i] = time.Duration(i+1) * time.Second
	}
	for _, tc := range []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one value", secsOf(3), 50, 3 * time.Second},
		{"one value p99", secsOf(3), 99, 3 * time.Second},
		{"p50 of four is the second", secsOf(1, 2, 3, 4), 50, 2 * time.Second},
		{"p50 of five is the middle", secsOf(1, 2, 3, 4, 5), 50, 3 * time.Second},
		{"p100 is the max", secsOf(1, 2, 3, 4, 5), 100, 5 * time.Second},
		{"tiny p is the min", secsOf(1, 2, 3, 4, 5), 0.1, 1 * time.Second},
		{"p50 of 1..40", one40, 50, 20 * time.Second},
		{"p90 of 1..40", one40, 90, 36 * time.Second},
		{"p99 of 1..40 is the max", one40, 99, 40 * time.Second},
	} {
		if got := Percentile(tc.sorted, tc.p); got != tc.want {
			t.Errorf("%s: Percentile(%v, %v): got %v, want %v", tc.name, tc.sorted, tc.p, got, tc.want)
		}
	}
}

func podsReady(xs ...float64) []Pod {
	var pods []Pod
	for _, d := range secsOf(xs...) {
		pods = append(pods, Pod{Ready: d, Init: d / 2})
	}
	return pods
}

func TestSummarize(t *testing.T) {
	failed := Pod{FailReason: "burst deadline passed", Retries: 3}
	retried := Pod{Ready: 4 * time.Second, Init: time.Second, Retries: 1}
	for _, tc := range []struct {
		name   string
		bursts []Burst
		want   Summary
	}{
		{"nothing", nil, Summary{}},
		{
			"one round",
			[]Burst{{Pods: podsReady(1, 2, 3, 4)}},
			Summary{Pods: 4, Ready: 4, P50: 2 * time.Second, P90: 4 * time.Second, P99: 4 * time.Second,
				Mean: 2500 * time.Millisecond, Makespan: 4 * time.Second, InitP50: time.Second},
		},
		{
			"rounds pooled, makespan averaged",
			[]Burst{{Pods: podsReady(1, 3)}, {Pods: podsReady(2, 5)}},
			Summary{Pods: 4, Ready: 4, P50: 2 * time.Second, P90: 5 * time.Second, P99: 5 * time.Second,
				Mean: 2750 * time.Millisecond, Makespan: 4 * time.Second, InitP50: time.Second},
		},
		{
			"failed pods counted, not averaged",
			[]Burst{{Pods: append(podsReady(2), failed, retried)}},
			Summary{Pods: 3, Ready: 2, Failed: 1, Retries: 4, P50: 2 * time.Second, P90: 4 * time.Second,
				P99: 4 * time.Second, Mean: 3 * time.Second, Makespan: 4 * time.Second, InitP50: time.Second},
		},
		{
			"all failed",
			[]Burst{{Pods: []Pod{failed, failed}}},
			Summary{Pods: 2, Failed: 2, Retries: 6},
		},
	} {
		if got := Summarize(tc.bursts); got != tc.want {
			t.Errorf("%s: Summarize: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestIdeal(t *testing.T) {
	s := 500 * time.Millisecond
	for _, tc := range []struct {
		name     string
		n, cores int
		want     Summary
	}{
		{"no pods", 0, 2, Summary{}},
		{"no cores", 4, 0, Summary{}},
		{"one pod", 1, 2, Summary{Pods: 1, Ready: 1, P50: s, P90: s, P99: s, Mean: s, Makespan: s}},
		{
			// Waves of two: 0.5 0.5 1.0 1.0 1.5.
			"five pods on two cores", 5, 2,
			Summary{Pods: 5, Ready: 5, P50: time.Second, P90: 1500 * time.Millisecond, P99: 1500 * time.Millisecond,
				Mean: 900 * time.Millisecond, Makespan: 1500 * time.Millisecond},
		},
		{
			// 20 waves of 0.5 s: p50 is wave 10, p90 wave 18, mean 5.25 s.
			"forty pods on two cores", 40, 2,
			Summary{Pods: 40, Ready: 40, P50: 5 * time.Second, P90: 9 * time.Second, P99: 10 * time.Second,
				Mean: 5250 * time.Millisecond, Makespan: 10 * time.Second},
		},
		{"more cores than pods", 3, 8, Summary{Pods: 3, Ready: 3, P50: s, P90: s, P99: s, Mean: s, Makespan: s}},
	} {
		if got := Ideal(tc.n, tc.cores, s); got != tc.want {
			t.Errorf("%s: Ideal(%d, %d, %v): got %+v, want %+v", tc.name, tc.n, tc.cores, s, got, tc.want)
		}
	}
}

func TestRatiosTo(t *testing.T) {
	base := Summary{P50: 8 * time.Second, P90: 9 * time.Second, P99: 10 * time.Second, Mean: 8 * time.Second, Makespan: 10 * time.Second}
	s := Summary{P50: 4 * time.Second, P90: 9 * time.Second, P99: 12 * time.Second, Mean: 2 * time.Second, Makespan: 10 * time.Second}
	got := RatiosTo(s, base)
	want := Ratios{P50: 0.5, P90: 1, P99: 1.2, Mean: 0.25, Makespan: 1}
	if got != want {
		t.Errorf("RatiosTo(%+v, %+v): got %+v, want %+v", s, base, got, want)
	}
	// Nothing ready on either side: no ratio, not 0 or Inf.
	for name, r := range map[string]Ratios{
		"empty base":   RatiosTo(s, Summary{}),
		"empty figure": RatiosTo(Summary{}, base),
	} {
		for _, x := range []float64{r.P50, r.P90, r.P99, r.Mean, r.Makespan} {
			if !math.IsNaN(x) {
				t.Errorf("%s: got %+v, want every ratio NaN", name, r)
				break
			}
		}
	}
	b, err := RatiosTo(s, Summary{}).MarshalJSON()
	if err != nil || string(b) != `{"p50":null,"p90":null,"p99":null,"mean":null,"makespan":null}` {
		t.Errorf("MarshalJSON of NaN ratios: got %s, %v, want nulls", b, err)
	}
}

func TestParseModes(t *testing.T) {
	names := func(ms []Mode) []string {
		var out []string
		for _, m := range ms {
			out = append(out, m.Name)
		}
		return out
	}
	for _, tc := range []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{in: DefaultModes, want: []string{"direct", "fixed-2", "fixed-4", "fixed-8", "startgate", "startgate-prefetch"}},
		{in: "startgate-prefetch,direct", want: []string{"startgate-prefetch", "direct"}},
		{in: "direct, startgate", want: []string{"direct", "startgate"}},
		{in: "startgate,fixed,direct", want: []string{"startgate", "fixed-2", "fixed-4", "fixed-8", "direct"}},
		{in: "fixed-16", want: []string{"fixed-16"}},
		{in: "direct,direct", wantErr: true},
		{in: "fixed,fixed-4", wantErr: true},
		{in: "fixed-0", wantErr: true},
		{in: "fixed-x", wantErr: true},
		{in: "prefetch", wantErr: true},
		{in: "direct,", wantErr: true},
	} {
		got, err := ParseModes(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseModes(%q): got error %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if !tc.wantErr && !slices.Equal(names(got), tc.want) {
			t.Errorf("ParseModes(%q): got %v, want %v", tc.in, names(got), tc.want)
		}
	}
	ms, _ := ParseModes("fixed-4,startgate,startgate-prefetch")
	if ms[0].Limit != 4 || ms[0].Via != Direct || ms[1].Limit != 0 || ms[1].Via != Startgate || ms[1].Prefetch ||
		ms[2].Via != Startgate || !ms[2].Prefetch {
		t.Errorf("ParseModes(fixed-4,startgate,startgate-prefetch): got %+v, want fixed-4 direct limit 4, startgate unlimited, startgate-prefetch prefetching", ms)
	}
}

func TestParseLog(t *testing.T) {
	at := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	log := "2026-01-02T03:04:05.100000000Z stdout F start\n" +
		"2026-01-02T03:04:05.150000000Z stderr F ready\n" + // wrong stream
		"2026-01-02T03:04:05.200000000Z stdout P ready\n" + // partial line
		"garbage\n" +
		"2026-01-02T03:04:05.300000000Z stdout F ready\n" +
		"2026-01-02T03:04:06.000000000Z stdout F ready\n" // only the first counts
	m := parseLog([]byte(log))
	if want := at("2026-01-02T03:04:05.1Z"); !m.start.Equal(want) {
		t.Errorf("start: got %v, want %v", m.start, want)
	}
	if want := at("2026-01-02T03:04:05.3Z"); !m.ready.Equal(want) {
		t.Errorf("ready: got %v, want %v", m.ready, want)
	}
	if m := parseLog([]byte("2026-01-02T03:04:05.1Z stdout F start\n2026-01-02T03:04:05.3Z stdout F rea")); !m.ready.IsZero() {
		t.Errorf("ready from a cut line: got %v, want zero", m.ready)
	}
}

func TestSummarizePullAndPrefetch(t *testing.T) {
	pod := func(ready, pull, call float64) Pod {
		return Pod{Ready: secsOf(ready)[0], Pull: secsOf(pull)[0], Calls: map[string]time.Duration{"PullImage": secsOf(call)[0]}}
	}
	bursts := []Burst{
		{Prefetch: 2 * time.Second, Pods: []Pod{pod(3, 1, 0.8), pod(4, 1.5, 0.1)}},
		{Pods: []Pod{pod(3, 2, 1.2), {Ready: time.Second}}}, // a pod that pulled nothing
	}
	s := Summarize(bursts)
	if want := 1500 * time.Millisecond; s.PullP50 != want {
		t.Errorf("PullP50: got %v, want %v (median of the pods that pulled)", s.PullP50, want)
	}
	if want := time.Second; s.FirstPull != want {
		t.Errorf("FirstPull: got %v, want %v (mean of each burst's longest PullImage)", s.FirstPull, want)
	}
	if want := 2 * time.Second; s.Prefetch != want {
		t.Errorf("Prefetch: got %v, want %v (mean over the bursts that prefetched)", s.Prefetch, want)
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "20MB", want: 20 << 20},
		{in: "20MiB", want: 20 << 20},
		{in: "20m", want: 20 << 20},
		{in: "1.5 GB", want: 3 << 29},
		{in: "512KB", want: 512 << 10},
		{in: "4096", want: 4096},
		{in: "10B", want: 10},
		{in: "", wantErr: true},
		{in: "MB", wantErr: true},
		{in: "-1MB", wantErr: true},
		{in: "twenty", wantErr: true},
		{in: "9999GB", wantErr: true},
	} {
		got, err := ParseSize(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("ParseSize(%q): got %d, %v, want %d (error %v)", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestWorkloadCommand(t *testing.T) {
	mixed := Workload{Kind: WorkMixed, Loops: 123, IOBytes: 100 << 10}
	for _, tc := range []struct {
		name string
		w    Workload
		want []string // substrings of the script
	}{
		{"cpu", Workload{Kind: WorkCPU, Loops: 123}, []string{"echo start;", "-lt 123 ]", "echo ready; exec sleep"}},
		{"io rounds up to whole blocks", Workload{Kind: WorkIO, IOBytes: 100 << 10},
			[]string{"echo start;", "bs=65536 count=2 conv=fsync", "iflag=direct", "echo ready; exec sleep"}},
		{"io at least one block", Workload{Kind: WorkIO}, []string{"count=1 "}},
		{"mixed pod 0 is cpu", mixed.forPod(0), []string{"-lt 123 ]"}},
		{"mixed pod 1 is io", mixed.forPod(1), []string{"count=2 "}},
		{"cpu pod 1 stays cpu", Workload{Kind: WorkCPU, Loops: 5}.forPod(1), []string{"-lt 5 ]"}},
	} {
		cmd := tc.w.Command()
		if len(cmd) != 3 || cmd[0] != "sh" || cmd[1] != "-c" {
			t.Errorf("%s: got %q, want sh -c SCRIPT", tc.name, cmd)
			continue
		}
		for _, sub := range tc.want {
			if !strings.Contains(cmd[2], sub) {
				t.Errorf("%s: got script %q, want %q in it", tc.name, cmd[2], sub)
			}
		}
	}
	for _, s := range []string{"cpu", "io", "mixed"} {
		if got, err := ParseWorkload(s); err != nil || got != s {
			t.Errorf("ParseWorkload(%q): got %q, %v", s, got, err)
		}
	}
	if _, err := ParseWorkload("gpu"); err == nil {
		t.Errorf("ParseWorkload(gpu): got no error, want one")
	}
}

func TestGateSummary(t *testing.T) {
	if f, m, hi := gateSummary(nil); f != 0 || m != 0 || hi != 0 {
		t.Errorf("gateSummary(nil): got %d %v %d, want zeros", f, m, hi)
	}
	s := []GateSample{{Limit: 1}, {Limit: 4}, {Limit: 2}, {Limit: 1}}
	if f, m, hi := gateSummary(s); f != 1 || m != 2 || hi != 4 {
		t.Errorf("gateSummary(1 4 2 1): got first %d mean %v max %d, want 1 2 4", f, m, hi)
	}
}
