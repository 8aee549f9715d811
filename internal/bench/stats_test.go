package bench

import (
	"math"
	"slices"
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
		{in: DefaultModes, want: []string{"direct", "fixed-2", "fixed-4", "fixed-8", "startgate"}},
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
	ms, _ := ParseModes("fixed-4,startgate")
	if ms[0].Limit != 4 || ms[0].Via != Direct || ms[1].Limit != 0 || ms[1].Via != Startgate {
		t.Errorf("ParseModes(fixed-4,startgate): got %+v, want fixed-4 direct limit 4, startgate unlimited", ms)
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
