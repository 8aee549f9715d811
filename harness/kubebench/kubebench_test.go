package kubebench

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/startgate/startgate/harness/stats"
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

// Figures are taken per round, over every pod the round wanted (a pod
// never Ready counts at the deadline); the warm-up round is never
// counted; ratios are taken within each round and judged; the best
// users' alternative is the one with the lowest median p50.
func TestTables(t *testing.T) {
	run := func(mode string, round int, p50 time.Duration) ScenarioRun {
		return ScenarioRun{Scenario: Recreate, Mode: mode, Round: round, Completion: 2 * p50,
			Pods: []PodTime{{Ready: p50}, {Ready: p50}, {Ready: 2 * p50}}}
	}
	modes, err := ParseModes("direct,proxy,fixed-4,direct+parallel-4,startgate")
	if err != nil {
		t.Fatal(err)
	}
	r := &Result{Scenarios: []string{Recreate}, ModeSpecs: modes, Warmup: true}
	for _, m := range modes {
		r.Modes = append(r.Modes, m.Name)
	}
	// Round 0 is the warm-up: startgate's 100 s there must not count.
	r.Runs = append(r.Runs, run("direct", 0, 10*time.Second), run("startgate", 0, 100*time.Second))
	for round, f := range []struct{ direct, proxy, f4, par, sg time.Duration }{
		{10 * time.Second, 9 * time.Second, 8 * time.Second, 7 * time.Second, 6 * time.Second},
		{10 * time.Second, 11 * time.Second, 5 * time.Second, 9 * time.Second, 6 * time.Second},
		{20 * time.Second, 18 * time.Second, 10 * time.Second, 16 * time.Second, 14 * time.Second},
		{12 * time.Second, 12 * time.Second, 9 * time.Second, 8 * time.Second, 7 * time.Second},
		{10 * time.Second, 10 * time.Second, 9 * time.Second, 9 * time.Second, 5 * time.Second},
	} {
		r.Runs = append(r.Runs, run("direct", round+1, f.direct), run("proxy", round+1, f.proxy), run("fixed-4", round+1, f.f4),
			run("direct+parallel-4", round+1, f.par), run("startgate", round+1, f.sg))
	}
	// One of startgate's pods never got Ready in round 5: it counts at
	// the deadline, so that round's p99 is the deadline.
	last := &r.Runs[len(r.Runs)-1]
	last.Pods = append(last.Pods, PodTime{Name: "(never created)", Ready: 10 * time.Minute, TimedOut: true})
	last.Failed = 1

	tabs := r.Tables()
	if len(tabs) != 1 || len(tabs[0].Rows) != 5 {
		t.Fatalf("tables = %+v, want one with 5 rows", tabs)
	}
	tab := tabs[0]
	sg := tab.Rows[4]
	if sg.Mode != "startgate" || sg.P50.N != 5 {
		t.Fatalf("row 5 is %s over %d rounds, want startgate over 5 (the warm-up left out)", sg.Mode, sg.P50.N)
	}
	if sg.P50.Median != 6 || sg.P50.Max != 14 {
		t.Errorf("startgate p50 = %+v, want median 6 s, max 14 s", sg.P50)
	}
	if sg.P99.Max != 600 || sg.Failed != 1 || sg.Pods != 16 {
		t.Errorf("startgate p99 max %v s, %d/%d failed: want the deadline (600 s) and 1/16", sg.P99.Max, sg.Failed, sg.Pods)
	}
	// p50 vs direct per round: 0.6, 0.6, 0.7, 7/12, 0.5: all below 1.
	if v := sg.VsDirect.P50; math.Abs(v.Ratio.Median-0.6) > 1e-9 || v.Verdict != stats.Better {
		t.Errorf("p50 vs direct = %+v, want median 0.6, better", v)
	}
	// fixed-4's and direct+parallel-4's median p50s are both 9 s (8, 5,
	// 10, 9, 9 and 7, 9, 16, 8, 9): a tie keeps the first in mode order.
	if tab.BestAlternative != "fixed-4" {
		t.Errorf("best alternative = %q, want fixed-4", tab.BestAlternative)
	}
	if sg.VsBest == nil || sg.VsBest.Mode != "fixed-4" {
		t.Fatalf("startgate vs best = %+v, want against fixed-4", sg.VsBest)
	}
	// vs fixed-4 per round: 6/8, 6/5, 14/10, 7/9, 5/9: some above 1.
	if v := sg.VsBest.P50; v.Verdict != stats.Same {
		t.Errorf("p50 vs fixed-4 = %+v, want not distinguishable", v)
	}
	if sg.VsProxy == nil || sg.VsProxy.Mode != "proxy" || tab.Rows[1].VsProxy != nil {
		t.Errorf("vs proxy: startgate's %+v, proxy's own %+v; want startgate's only", sg.VsProxy, tab.Rows[1].VsProxy)
	}
	var b strings.Builder
	if err := WriteMarkdown(&b, r); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| startgate | 6.0 s (5.0–14.0) |", "| startgate | direct | 0.60 [", "better", "Best users' alternative here (lowest median p50): fixed-4."} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	r.Command, r.Rounds = "startgate-bench kube", 5
	if err := WriteSummary(&b, r, "docs/bench-data/x.json"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| recreate | startgate | 0.60 [", "| recreate | fixed-4 (best alternative) |", "| recreate | proxy |",
		"5 counted rounds after a warm-up round; `startgate-bench kube`; raw data `docs/bench-data/x.json`."} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, b.String())
		}
	}
	if strings.Contains(b.String(), "direct+parallel-4") {
		t.Errorf("summary lists an alternative that is not the best:\n%s", b.String())
	}
}

func TestParseModes(t *testing.T) {
	ms, err := ParseModes("direct, gate,fixed,direct+parallel-all+qps-0,startgate-prefetch+ifnotpresent,pacemaker-4+startup")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range ms {
		names = append(names, m.Name)
	}
	want := []string{"direct", "gate", "fixed-2", "fixed-4", "fixed-8", "direct+parallel-all+qps-0", "startgate-prefetch+ifnotpresent", "pacemaker-4+startup"}
	if !slices.Equal(names, want) {
		t.Fatalf("names = %v, want %v", names, want)
	}
	if m := ms[5]; m.Path != PathDirect || m.ParallelPulls != UnlimitedPulls || m.PullQPS == nil || *m.PullQPS != 0 || m.viaGate() {
		t.Errorf("direct+parallel-all+qps-0 = %+v", m)
	}
	if m := ms[6]; m.Path != PathStartgate || !m.Prefetch || m.pullPolicy() != corev1.PullIfNotPresent || !m.viaGate() {
		t.Errorf("startgate-prefetch+ifnotpresent = %+v", m)
	}
	if m := ms[1]; m.Path != PathGate || m.pullPolicy() != corev1.PullAlways {
		t.Errorf("gate = %+v", m)
	}
	if m := ms[7]; m.Path != PathPacemaker || m.Limit != 4 || !m.StartupProbe || m.viaGate() {
		t.Errorf("pacemaker-4+startup = %+v", m)
	}
	for _, bad := range []string{"", "direct,,gate", "fast", "fixed-0", "fixed-x", "direct+parallel-0", "direct+qps--1",
		"direct+turbo", "direct+parallel-2+parallel-4", "gate,gate", "fixed,fixed-4"} {
		if _, err := ParseModes(bad); err == nil {
			t.Errorf("ParseModes(%q): no error", bad)
		}
	}
	for _, list := range []string{DefaultModes, QuickModes, Attribution, Alternatives} {
		if _, err := ParseModes(list); err != nil {
			t.Errorf("ParseModes(%q): %v", list, err)
		}
	}
}

// Over as many rounds as modes every mode runs once in every position;
// with fewer rounds each round is still an order of every mode.
func TestRoundOrder(t *testing.T) {
	for _, m := range []int{2, 3, 5, 6, 12} {
		modes := make([]Mode, m)
		for i := range modes {
			modes[i].Name = fmt.Sprint(i)
		}
		at := map[[2]string]int{}
		for r := 1; r <= m; r++ {
			order := roundOrder(modes, r, m)
			seen := map[string]bool{}
			for pos, md := range order {
				seen[md.Name] = true
				at[[2]string{md.Name, fmt.Sprint(pos)}]++
			}
			if len(seen) != m {
				t.Fatalf("%d modes, round %d: order %v is not a permutation", m, r, order)
			}
		}
		if len(at) != m*m {
			t.Errorf("%d modes over %d rounds: %d (mode, position) pairs, want all %d", m, m, len(at), m*m)
		}
		if got := roundOrder(modes, 0, m); got[0].Name != "0" || got[m-1].Name != fmt.Sprint(m-1) {
			t.Errorf("the warm-up round reorders the modes: %v", got)
		}
		for r := 1; r <= 3; r++ {
			if got := roundOrder(modes, r, 3); len(got) != m {
				t.Errorf("3 rounds of %d modes: round %d has %d", m, r, len(got))
			}
		}
	}
}

func TestIdleOf(t *testing.T) {
	s := []CPUSample{
		{At: time.Second, Idle: 2, Queued: 0},
		{At: 2 * time.Second, Idle: 1, Queued: 3},
		{At: 3 * time.Second, Idle: 0, Queued: 5},
		{At: 4 * time.Second, Idle: 1, Queued: 0},
	}
	got := idleOf(s, 2)
	// 4 idle core-seconds of 8; 1 of them while starts were queued.
	if got.Run != 0.5 || got.WhileWaiting != 0.125 || got.Waiting != 2*time.Second {
		t.Errorf("idleOf = %+v, want run 0.5, while waiting 0.125 over 2 s", got)
	}
	s[1].Queued, s[2].Queued = -1, -1
	for i := range s {
		s[i].Queued = -1
	}
	if got := idleOf(s, 2); got.WhileWaiting != -1 {
		t.Errorf("idleOf without startgated: while waiting %v, want -1", got.WhileWaiting)
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
		{Modes: []Mode{}},
		{ProbePeriod: 1500 * time.Millisecond},
		{ProbePeriod: time.Hour},
		{Load: -1},
		{Load: 65},
		{Load: 1, Kubeconfig: "kubeconfig", Node: "n", Registry: "r", Modes: []Mode{{Name: "node", Path: PathNode}}},
		{Modes: []Mode{{Name: "pacemaker", Path: PathPacemaker}}},
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

// The held-out workloads: many files read one by one, and the init's
// CPU spent by a loop per core.
func TestHeldOutInitScripts(t *testing.T) {
	if s := initScript(WorkFiles, 0, 0); !strings.Contains(s, "find /app/lib -type f -exec cat {} +") {
		t.Errorf("files init script: %s", s)
	}
	s := initScript(WorkJIT, 300*time.Millisecond, 0)
	for _, want := range []string{"n=$(nproc)", ") &", "; wait", "-lt 300000000"} {
		if !strings.Contains(s, want) {
			t.Errorf("jit init script lacks %q:\n%s", want, s)
		}
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

// On an existing cluster the benchmark changes nothing but its own
// namespace: what it would have to reconfigure is refused up front.
func TestOptionsOnAnExistingCluster(t *testing.T) {
	node := func(modes string) []Mode {
		ms, err := ParseModes(modes)
		if err != nil {
			t.Fatal(err)
		}
		return ms
	}
	ok := Options{Kubeconfig: "kc", Node: "n1", Registry: "reg.example/team"}
	if err := ok.withDefaults(); err != nil {
		t.Fatalf("%+v: %v", ok, err)
	}
	if got := ok.Modes; len(got) != 2 || got[0].Path != PathNode || got[1].pullPolicy() != corev1.PullIfNotPresent {
		t.Errorf("default modes on an existing cluster = %+v, want node and node+ifnotpresent", got)
	}
	for _, o := range []Options{
		{Kubeconfig: "kc", Registry: "r"},
		{Kubeconfig: "kc", Node: "n1"},
		{Kubeconfig: "kc", Node: "n1", Registry: "r", Scenarios: []string{Reboot}},
		{Kubeconfig: "kc", Node: "n1", Registry: "r", Modes: node("direct")},
		{Kubeconfig: "kc", Node: "n1", Registry: "r", Modes: node("node+parallel-4")},
		{Kubeconfig: "kc", Node: "n1", Registry: "r", Modes: node("node+qps-0")},
		{Modes: node("node")},
		{Node: "n1"},
		{Registry: "r"},
	} {
		if err := o.withDefaults(); err == nil {
			t.Errorf("Options %+v: no error", o)
		}
	}
}

// The ideal bound: one pull of the patch (from the runs that pulled it)
// plus the pods' CPU over the cores; a prefetched run is held to the CPU
// alone.
func TestIdealBound(t *testing.T) {
	pods := func(pull, cpu time.Duration, n int) []PodTime {
		var ps []PodTime
		for i := range n {
			p := PodTime{Name: fmt.Sprint(i), Ready: 5 * time.Second, CPU: cpu, Pull: 10 * time.Millisecond}
			if i == 0 {
				p.Pull = pull
			}
			ps = append(ps, p)
		}
		return ps
	}
	i := idealOf(pods(2*time.Second, 500*time.Millisecond, 4), 2)
	if i.PatchPull != 2*time.Second || i.CPU != 2*time.Second || i.Pods != 4 {
		t.Fatalf("idealOf = %+v, want pull 2 s, CPU 2 s over 4 pods", i)
	}
	if got := i.bound(true); got != 3*time.Second {
		t.Errorf("bound with the pull = %v, want 2 s + 2 s / 2 cores = 3 s", got)
	}
	if got := i.bound(false); got != time.Second {
		t.Errorf("bound prefetched = %v, want 1 s", got)
	}
	direct := ScenarioRun{Scenario: Recreate, Mode: "direct", Round: 1, Completion: 6 * time.Second, Pods: pods(2*time.Second, 500*time.Millisecond, 4)}
	direct.Ideal = idealOf(direct.Pods, 2)
	// The prefetched run's pulls found the patch local: its short pull
	// must not make the bound with a pull smaller.
	pf := ScenarioRun{Scenario: Recreate, Mode: "startgate-prefetch", Round: 1, Completion: 2 * time.Second, Prefetch: time.Second,
		Pods: pods(50*time.Millisecond, 500*time.Millisecond, 4)}
	pf.Ideal = idealOf(pf.Pods, 2)
	modes, _ := ParseModes("direct,startgate-prefetch")
	r := &Result{Scenarios: []string{Recreate}, Modes: []string{"direct", "startgate-prefetch"}, ModeSpecs: modes, Runs: []ScenarioRun{direct, pf}}
	tab := r.Tables()[0]
	if tab.Ideal.Median != 3 || tab.IdealPrefetched.Median != 1 {
		t.Errorf("ideal %v s, prefetched %v s; want 3 and 1", tab.Ideal.Median, tab.IdealPrefetched.Median)
	}
	if d, p := tab.Rows[0].VsIdeal.Median, tab.Rows[1].VsIdeal.Median; d != 2 || p != 2 {
		t.Errorf("completion / ideal: direct %v, prefetched %v; want 6/3 = 2 and 2/1 = 2", d, p)
	}
}

// The targets are judged from the run, each met, not met or not
// measured, with its figure.
func TestTargets(t *testing.T) {
	modes, err := ParseModes("direct,gate,startgate,startgate-prefetch,direct+parallel-4,pacemaker-4+startup")
	if err != nil {
		t.Fatal(err)
	}
	r := &Result{Scenarios: []string{Recreate}, ModeSpecs: modes}
	for _, m := range modes {
		r.Modes = append(r.Modes, m.Name)
	}
	run := func(mode string, round int, p50 time.Duration, idleWaiting float64) ScenarioRun {
		return ScenarioRun{Scenario: Recreate, Mode: mode, Round: round, Completion: 2 * p50, Idle: IdleCPU{WhileWaiting: idleWaiting},
			Pods: []PodTime{{Ready: p50}, {Ready: p50}, {Ready: 2 * p50}}}
	}
	for rnd := 1; rnd <= 3; rnd++ {
		d := time.Duration(9+rnd) * time.Second
		r.Runs = append(r.Runs,
			run("direct", rnd, d, -1),
			run("gate", rnd, d*11/10, 0.12), // slower, and 12% idle while starts wait
			run("startgate", rnd, d*7/10, 0.01),
			run("startgate-prefetch", rnd, d*4/10, 0.01),
			run("direct+parallel-4", rnd, d*9/10, -1),
			run("pacemaker-4+startup", rnd, d*8/10, -1))
	}
	got := map[string]Target{}
	for _, tg := range r.Targets() {
		got[tg.Target] = tg
	}
	for target, want := range map[string]string{
		"prefetch: p50 ≤ 0.5× direct":                                                         met,
		"prefetch: p99 ≤ 0.6× direct":                                                         met,
		"prefetch: p50 ≤ 0.8× the best alternative (pacemaker-4+startup)":                     met,
		"gate alone: never worse than direct beyond the noise (p50, p99, completion)":         notMet,
		"gate alone: idle CPU while starts wait ≤ 5% of the rollout":                          notMet,
		"startgate ahead of pod-pacemaker's best (pacemaker-4+startup) on p99 and completion": met,
		"startgate within 1.3× of the ideal bound (completion)":                               notMeasured,
	} {
		tg, ok := got[target]
		if !ok {
			t.Errorf("no target %q among %v", target, got)
			continue
		}
		if tg.Verdict != want {
			t.Errorf("%s: %s (%s), want %s", target, tg.Verdict, tg.Figure, want)
		}
	}
	// Ahead of pod-pacemaker in the median but not beyond the noise
	// (round ratios 0.8, 1.1, 0.9): not ahead.
	for i := range r.Runs {
		if ru := &r.Runs[i]; ru.Mode == "pacemaker-4+startup" {
			sg := time.Duration(9+ru.Round) * time.Second * 7 / 10
			f := map[int]float64{1: 0.8, 2: 1.1, 3: 0.9}[ru.Round]
			*ru = run("pacemaker-4+startup", ru.Round, time.Duration(float64(sg)/f), -1)
		}
	}
	for _, tg := range r.Targets() {
		if strings.HasPrefix(tg.Target, "startgate ahead of pod-pacemaker") && tg.Verdict != notMet {
			t.Errorf("%s: %s (%s), want %s", tg.Target, tg.Verdict, tg.Figure, notMet)
		}
	}
}
