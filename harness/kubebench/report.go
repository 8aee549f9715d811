package kubebench

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/startgate/startgate/harness/bench"
	"github.com/startgate/startgate/harness/stats"
)

// RoundFigures are one mode's figures in one round of one scenario.
type RoundFigures struct {
	Round int `json:"round"`
	// P50, P90 and P99 are nearest-rank percentiles over every pod the
	// run wanted, a pod never Ready counting at the deadline.
	P50        time.Duration `json:"p50_ns"`
	P90        time.Duration `json:"p90_ns"`
	P99        time.Duration `json:"p99_ns"`
	Completion time.Duration `json:"completion_ns"`
	Pods       int           `json:"pods"`
	Failed     int           `json:"failed"`
	Restarts   int           `json:"restarts"`
	// PullP50 and PullWaitingP50 are the pods' median pull, without and
	// with the wait for the node's pull worker (kubelet's events).
	PullP50        time.Duration `json:"pull_p50_ns"`
	PullWaitingP50 time.Duration `json:"pull_waiting_p50_ns"`
	// SLIP50 and TotalP50 are kubelet's own p50s (bucket-interpolated).
	SLIP50   time.Duration `json:"kubelet_sli_p50_ns"`
	TotalP50 time.Duration `json:"kubelet_total_p50_ns"`
	Prefetch time.Duration `json:"prefetch_ns,omitempty"`
	Idle     IdleCPU       `json:"idle"`
	Ideal    Ideal         `json:"ideal"`
	// Prefetched: the patch was fetched before the rollout.
	Prefetched bool `json:"prefetched,omitempty"`
	// CPUBy is where the run's CPU went (nil off the local node).
	CPUBy *CPUBy `json:"cpu_by,omitempty"`
}

// figures takes one run's figures.
func figures(r ScenarioRun) RoundFigures {
	f := RoundFigures{Round: r.Round, Completion: r.Completion, Failed: r.Failed, Prefetch: r.Prefetch, Idle: r.Idle,
		SLIP50: r.KubeletSLI.P50, TotalP50: r.KubeletTotal.P50, Ideal: r.Ideal, Prefetched: r.Prefetch > 0 && r.PrefetchError == "", CPUBy: r.CPUBy}
	var ready, pulls, waits []time.Duration
	for _, p := range r.Pods {
		f.Pods++
		f.Restarts += int(p.Restarts)
		ready = append(ready, p.Ready)
		if p.PullWaiting > 0 {
			pulls = append(pulls, p.Pull)
			waits = append(waits, p.PullWaiting)
		}
	}
	f.P50, f.P90, f.P99 = pct(ready, 50), pct(ready, 90), pct(ready, 99)
	f.PullP50, f.PullWaitingP50 = pct(pulls, 50), pct(waits, 50)
	return f
}

// pct is the nearest-rank percentile of ds (sorted here).
func pct(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return bench.Percentile(s, p)
}

// ModeRow is one mode's line of a scenario's table: each figure over the
// counted rounds (not the warm-up), and its comparisons, ratios taken
// within each round.
type ModeRow struct {
	Mode   string         `json:"mode"`
	Rounds []RoundFigures `json:"rounds"`
	// Seconds, over rounds.
	P50        stats.Estimate `json:"p50"`
	P90        stats.Estimate `json:"p90"`
	P99        stats.Estimate `json:"p99"`
	Completion stats.Estimate `json:"completion"`
	// Idle shares of the node's CPU, over rounds: over the whole run,
	// and while starts waited in startgated (N 0 without startgated).
	IdleRun     stats.Estimate `json:"idle_run"`
	IdleWaiting stats.Estimate `json:"idle_while_waiting"`
	Pods        int            `json:"pods"`
	Failed      int            `json:"failed"`
	Restarts    int            `json:"restarts"`
	PullP50     time.Duration  `json:"pull_p50_ns"`
	PullWaiting time.Duration  `json:"pull_waiting_p50_ns"`
	SLIP50      time.Duration  `json:"kubelet_sli_p50_ns"`
	TotalP50    time.Duration  `json:"kubelet_total_p50_ns"`
	Prefetch    time.Duration  `json:"prefetch_ns"`
	// CPUBy is the median over rounds of each part of CPUBy, in
	// core-seconds; nil when no round measured it.
	CPUBy *CPUBy `json:"cpu_by,omitempty"`
	// VsIdeal is the completion over the round's ideal bound (ideal.go;
	// without the patch's pull for a prefetched run), over rounds.
	VsIdeal stats.Estimate `json:"completion_vs_ideal"`
	// Against direct, against the proxy alone (the pull path: what the
	// gate adds to it), and against the best of the users' alternatives
	// (the one with the lowest median p50 in this scenario).
	VsDirect Versus  `json:"vs_direct"`
	VsProxy  *Versus `json:"vs_proxy,omitempty"`
	VsBest   *Versus `json:"vs_best_alternative,omitempty"`
}

// Versus is a mode against another, per figure.
type Versus struct {
	Mode       string           `json:"mode"`
	P50        stats.Comparison `json:"p50"`
	P99        stats.Comparison `json:"p99"`
	Completion stats.Comparison `json:"completion"`
}

// Table is one scenario's figures, a row per mode.
type Table struct {
	Scenario string    `json:"scenario"`
	Rows     []ModeRow `json:"rows"`
	// BestAlternative is the users' alternative VsBest compares with.
	BestAlternative string `json:"best_alternative,omitempty"`
	// Ideal and IdealPrefetched are the rounds' ideal bounds (seconds),
	// with one pull of the patch and without.
	Ideal           stats.Estimate `json:"ideal"`
	IdealPrefetched stats.Estimate `json:"ideal_prefetched"`
}

// isAlternative reports whether a mode is one of the users' own ways
// (no startgate of theirs: kubelet's settings, a constant limit,
// pod-pacemaker), rather than direct itself or startgate.
func isAlternative(r *Result, name string) bool {
	m, ok := r.mode(name)
	if !ok || name == "direct" {
		return false
	}
	switch m.Path {
	case PathDirect, PathPacemaker:
		return true
	case PathStartgate:
		return m.Limit > 0 // fixed-K: a constant limit
	}
	return false
}

// mode finds a mode's spec by name.
func (r *Result) mode(name string) (Mode, bool) {
	for _, m := range r.ModeSpecs {
		if m.Name == name {
			return m, true
		}
	}
	return Mode{}, false
}

// Tables summarizes r per scenario and mode over its counted rounds.
func (r *Result) Tables() []Table {
	var out []Table
	for _, sc := range r.Scenarios {
		t := Table{Scenario: sc}
		byMode := map[string]map[int]RoundFigures{}
		for _, run := range r.Runs {
			if run.Scenario != sc || run.Round == 0 {
				continue
			}
			if byMode[run.Mode] == nil {
				byMode[run.Mode] = map[int]RoundFigures{}
			}
			byMode[run.Mode][run.Round] = figures(run)
		}
		byRound := map[int][]RoundFigures{}
		for _, rounds := range byMode {
			for rnd, f := range rounds {
				byRound[rnd] = append(byRound[rnd], f)
			}
		}
		ideal, idealPF := map[int]time.Duration{}, map[int]time.Duration{}
		var idealS, idealPFS []time.Duration
		for _, rnd := range slices.Sorted(maps.Keys(byRound)) {
			ideal[rnd], idealPF[rnd] = roundIdeal(byRound[rnd], true), roundIdeal(byRound[rnd], false)
			idealS, idealPFS = appendPositive(idealS, ideal[rnd]), appendPositive(idealPFS, idealPF[rnd])
		}
		t.Ideal, t.IdealPrefetched = stats.Durations(idealS), stats.Durations(idealPFS)
		for _, mode := range r.Modes {
			rounds := byMode[mode]
			if len(rounds) == 0 {
				continue
			}
			rw := row(mode, rounds)
			var dist []float64
			for _, f := range rw.Rounds {
				b := ideal[f.Round]
				if f.Prefetched {
					b = idealPF[f.Round]
				}
				if b > 0 {
					dist = append(dist, float64(f.Completion)/float64(b))
				}
			}
			rw.VsIdeal = stats.Of(dist)
			t.Rows = append(t.Rows, rw)
		}
		bestP50 := math.Inf(1)
		for _, row := range t.Rows {
			if isAlternative(r, row.Mode) && row.P50.Median < bestP50 {
				t.BestAlternative, bestP50 = row.Mode, row.P50.Median
			}
		}
		for i := range t.Rows {
			me := byMode[t.Rows[i].Mode]
			t.Rows[i].VsDirect = versus("direct", me, byMode["direct"])
			if base, ok := byMode["proxy"]; ok && t.Rows[i].Mode != "proxy" {
				v := versus("proxy", me, base)
				t.Rows[i].VsProxy = &v
			}
			if b := t.BestAlternative; b != "" && b != t.Rows[i].Mode {
				v := versus(b, me, byMode[b])
				t.Rows[i].VsBest = &v
			}
		}
		out = append(out, t)
	}
	return out
}

// row summarizes one mode's rounds.
func row(mode string, byRound map[int]RoundFigures) ModeRow {
	rw := ModeRow{Mode: mode}
	for _, rnd := range slices.Sorted(maps.Keys(byRound)) {
		rw.Rounds = append(rw.Rounds, byRound[rnd])
	}
	var p50, p90, p99, comp []time.Duration
	var idle, waiting []float64
	var pulls, waits, slis, totals, pfs []time.Duration
	for _, f := range rw.Rounds {
		p50, p90, p99, comp = append(p50, f.P50), append(p90, f.P90), append(p99, f.P99), append(comp, f.Completion)
		rw.Pods += f.Pods
		rw.Failed += f.Failed
		rw.Restarts += f.Restarts
		idle = append(idle, f.Idle.Run)
		if f.Idle.WhileWaiting >= 0 {
			waiting = append(waiting, f.Idle.WhileWaiting)
		}
		pulls, waits = appendPositive(pulls, f.PullP50), appendPositive(waits, f.PullWaitingP50)
		slis, totals, pfs = appendPositive(slis, f.SLIP50), appendPositive(totals, f.TotalP50), appendPositive(pfs, f.Prefetch)
	}
	rw.P50, rw.P90, rw.P99, rw.Completion = stats.Durations(p50), stats.Durations(p90), stats.Durations(p99), stats.Durations(comp)
	rw.IdleRun, rw.IdleWaiting = stats.Of(idle), stats.Of(waiting)
	rw.CPUBy = medianCPUBy(rw.Rounds)
	rw.PullP50, rw.PullWaiting = pct(pulls, 50), pct(waits, 50)
	rw.SLIP50, rw.TotalP50, rw.Prefetch = pct(slis, 50), pct(totals, 50), pct(pfs, 50)
	return rw
}

func appendPositive(ds []time.Duration, d time.Duration) []time.Duration {
	if d > 0 {
		return append(ds, d)
	}
	return ds
}

// versus compares me with base over the rounds both ran.
func versus(name string, me, base map[int]RoundFigures) Versus {
	var a50, b50, a99, b99, ac, bc []float64
	for _, rnd := range slices.Sorted(maps.Keys(me)) {
		b, ok := base[rnd]
		if !ok {
			continue
		}
		a := me[rnd]
		a50, b50 = append(a50, a.P50.Seconds()), append(b50, b.P50.Seconds())
		a99, b99 = append(a99, a.P99.Seconds()), append(b99, b.P99.Seconds())
		ac, bc = append(ac, a.Completion.Seconds()), append(bc, b.Completion.Seconds())
	}
	return Versus{Mode: name, P50: stats.Compare(a50, b50), P99: stats.Compare(a99, b99), Completion: stats.Compare(ac, bc)}
}

// WriteMarkdown writes the report: what ran, then per scenario a table
// of figures and a table of comparisons.
func WriteMarkdown(w io.Writer, r *Result) error {
	var b strings.Builder
	counted := rounds(r)
	fmt.Fprintf(&b, "Real one-node cluster (%s), %d cores, kernel %s; a Deployment of %d pods; %s, the modes in a Williams order (every mode in every position over as many rounds as modes).\n",
		r.Env.versions(), r.Cores, orUnknown(r.Env.Kernel), r.Pods, counted)
	period := r.ProbePeriod
	if period == 0 {
		period = time.Second // runs saved before the setting
	}
	fmt.Fprintf(&b, "Init (%s): %s. Readiness: an HTTP probe every %s, passing once init is done.\n", r.Workload, describeWork(r), period)
	if r.Load > 0 {
		fmt.Fprintf(&b, "Other work on the node while each scenario ran: %d busy loops, a core each.\n", r.Load)
	}
	fmt.Fprintf(&b, "Registry: %s; each patch replaces one %.1f MiB layer.\n", registryDescription(r), float64(r.PatchSize)/(1<<20))
	b.WriteString("Modes: " + describeModes(r) + "\n")
	b.WriteString("Per pod: creationTimestamp to the Ready condition's lastTransitionTime (the objects' own times, to the second; reboot: the kubelet's start to Ready); " +
		"a pod not Ready by the deadline counts at the deadline. Per round: p50 and p99 over the round's pods, completion from the scenario's start to every new pod Ready and no old one left. " +
		"Each cell: the median over rounds (min–max). Comparisons: the ratio within each round, median [95% bootstrap interval], and a verdict: better or worse when the interval excludes 1, else not distinguishable. " +
		"Idle CPU: the share of the node's CPU left idle over the run, and while starts waited in startgated.\n")
	fmt.Fprintf(&b, "Commit %s, %s. Command: `%s` (took %s).\n", orUnknown(r.Env.Commit), r.Env.Date.Format("2006-01-02"), r.Command, r.Took.Round(time.Second))
	for _, t := range r.Tables() {
		fmt.Fprintf(&b, "\n**%s**\n\n", t.Scenario)
		b.WriteString("| mode | p50 | p99 | completion | completion / ideal | failed | restarts | idle CPU | idle while waiting | pull p50 | kubelet SLI p50 | prefetch |\n")
		b.WriteString("| --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |\n")
		for _, row := range t.Rows {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %d/%d | %d | %s | %s | %s (%s) | %s | %s |\n",
				row.Mode, row.P50.Seconds(), row.P99.Seconds(), row.Completion.Seconds(), times(row.VsIdeal), row.Failed, row.Pods, row.Restarts,
				share(row.IdleRun), share(row.IdleWaiting), ms(row.PullP50), ms(row.PullWaiting), orDash(row.SLIP50), orDash(row.Prefetch))
		}
		if t.Ideal.N > 0 || t.IdealPrefetched.N > 0 {
			fmt.Fprintf(&b, "\nIdeal bound (one pull of the patch, then every pod's CPU packed on the cores): %s; with the patch prefetched: %s.\n",
				t.Ideal.Seconds(), t.IdealPrefetched.Seconds())
		}
		b.WriteString("\n| mode | vs | p50 | p99 | completion |\n| --- | --- | --- | --- | --- |\n")
		for _, row := range t.Rows {
			vs := []Versus{}
			if row.Mode != "direct" {
				vs = append(vs, row.VsDirect)
			}
			if row.VsProxy != nil {
				vs = append(vs, *row.VsProxy)
			}
			if row.VsBest != nil && row.VsBest.Mode != "direct" {
				vs = append(vs, *row.VsBest)
			}
			for _, v := range vs {
				fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", row.Mode, v.Mode, v.P50, v.P99, v.Completion)
			}
		}
		if t.BestAlternative != "" {
			fmt.Fprintf(&b, "\nBest users' alternative here (lowest median p50): %s.\n", t.BestAlternative)
		}
		writeCPUBy(&b, t)
	}
	b.WriteString("\n**Targets** (issue 20; medians over rounds)\n\n")
	if err := WriteTargets(&b, r); err != nil {
		return err
	}
	for _, w := range r.Warnings {
		fmt.Fprintf(&b, "\nWarning: %s\n", w)
	}
	if r.Interrupted {
		b.WriteString("\nInterrupted: the figures cover the runs that completed.\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// times prints an estimate of a ratio: "1.42× (1.30–1.55)".
func times(e stats.Estimate) string {
	if e.N == 0 {
		return "-"
	}
	if e.N == 1 {
		return fmt.Sprintf("%.2f×", e.Median)
	}
	return fmt.Sprintf("%.2f× (%.2f–%.2f)", e.Median, e.Min, e.Max)
}

// rounds is "5 counted rounds after a warm-up round".
func rounds(r *Result) string {
	s := fmt.Sprintf("%d counted round%s", r.Rounds, map[bool]string{true: "s"}[r.Rounds != 1])
	if r.Warmup {
		s += " after a warm-up round"
	}
	return s
}

// share prints an estimate of a fraction as a percentage.
func share(e stats.Estimate) string {
	if e.N == 0 {
		return "-"
	}
	if e.N == 1 {
		return fmt.Sprintf("%.0f%%", 100*e.Median)
	}
	return fmt.Sprintf("%.0f%% (%.0f–%.0f)", 100*e.Median, 100*e.Min, 100*e.Max)
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// describeModes says what each mode of r is.
func describeModes(r *Result) string {
	var parts []string
	for _, m := range r.ModeSpecs {
		parts = append(parts, fmt.Sprintf("%s (%s)", m.Name, m.Describe()))
	}
	return strings.Join(parts, "; ") + "."
}

func describeWork(r *Result) string {
	cpu := fmt.Sprintf("a busy shell loop until the container has used %s of CPU", r.InitCPU)
	io := fmt.Sprintf("write, fsync and O_DIRECT read of %.0f MiB in the container's root filesystem", float64(r.IOBytes)/(1<<20))
	switch r.Workload {
	case WorkIO:
		return io
	case WorkFiles:
		return fmt.Sprintf("open and read the patch's %d files of %d KiB (%.0f MiB) one by one", max(1, r.PatchSize/filesSize), filesSize>>10, float64(r.PatchSize)/(1<<20))
	case WorkJIT:
		return fmt.Sprintf("a busy shell loop per core at once until the container has used %s of CPU in all", r.InitCPU)
	case WorkMixed:
		return "about half the pods " + cpu + ", the others " + io
	}
	return cpu
}

func registryDescription(r *Result) string {
	if d := bench.DescribeRegistry(r.RegistryBandwidth, r.RegistryRTT, r.RegistryToken); d != "" {
		return d
	}
	return "on loopback"
}

func ms(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
}

func orDash(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return secs(d)
}

// WriteSummary writes the short table the README quotes: per scenario,
// startgate's modes and the best users' alternative against direct, each
// ratio with its verdict, and where the figures come from (date, commit,
// machine, command, raw data file).
func WriteSummary(w io.Writer, r *Result, rawPath string) error {
	var b strings.Builder
	b.WriteString("| scenario | mode | p50 vs direct | p99 vs direct | completion vs direct | completion / ideal |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --: |\n")
	for _, t := range r.Tables() {
		for _, row := range t.Rows {
			m, _ := r.mode(row.Mode)
			if row.Mode == "direct" || (!m.viaGate() && row.Mode != t.BestAlternative) {
				continue
			}
			name := row.Mode
			if row.Mode == t.BestAlternative {
				name += " (best alternative)"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", t.Scenario, name, row.VsDirect.P50, row.VsDirect.P99, row.VsDirect.Completion, times(row.VsIdeal))
		}
	}
	fmt.Fprintf(&b, "\nMeasured %s at commit %s on %s (%d cores, kernel %s; %s): %d pods, %s; `%s`",
		r.Env.Date.Format("2006-01-02"), orUnknown(r.Env.Commit), orUnknown(r.Env.CPU), r.Cores, orUnknown(r.Env.Kernel), r.Env.versions(), r.Pods, rounds(r), r.Command)
	if rawPath != "" {
		fmt.Fprintf(&b, "; raw data `%s`", rawPath)
	}
	b.WriteString(".\n")
	_, err := io.WriteString(w, b.String())
	return err
}
