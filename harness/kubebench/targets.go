package kubebench

import (
	"fmt"
	"io"
	"strings"

	"github.com/startgate/startgate/harness/stats"
)

// Target is one of issue 20's targets, judged on a run: met or not, with
// the figure it was judged on. A target whose modes did not run is
// "not measured", never met.
type Target struct {
	Scenario string `json:"scenario"`
	Target   string `json:"target"`
	Figure   string `json:"figure"`
	// Verdict is "met", "not met" or "not measured".
	Verdict string `json:"verdict"`
}

const (
	met         = "met"
	notMet      = "not met"
	notMeasured = "not measured"
)

// Targets judges r against the targets, per scenario:
//   - startgate-prefetch: p50 ≤ 0.5× direct and ≤ 0.8× the best users'
//     alternative, p99 ≤ 0.6× direct (ratios' medians over rounds);
//   - gate: not worse than direct beyond the noise (no "worse" verdict)
//     on p50, p99 or completion; idle CPU while starts wait ≤ 5% of the
//     rollout (the median over rounds);
//   - startgate ahead of pod-pacemaker's best mode on p99 and completion:
//     better beyond the noise on both (a median below 1 whose interval
//     reaches 1 is not ahead, only not behind);
//   - startgate's completion within 1.3× of the ideal bound (median).
func (r *Result) Targets() []Target {
	var out []Target
	for _, t := range r.Tables() {
		rows := map[string]ModeRow{}
		for _, row := range t.Rows {
			rows[row.Mode] = row
		}
		add := func(target, figure string, ok, measured bool) {
			v := notMeasured
			switch {
			case measured && ok:
				v = met
			case measured:
				v = notMet
			}
			out = append(out, Target{Scenario: t.Scenario, Target: target, Figure: figure, Verdict: v})
		}
		pf, hasPF := rows["startgate-prefetch"]
		_, hasDirect := rows["direct"]
		okPF := hasPF && hasDirect && pf.VsDirect.P50.Ratio.N > 0
		add("prefetch: p50 ≤ 0.5× direct", ratioFigure(pf.VsDirect.P50), pf.VsDirect.P50.Ratio.Median <= 0.5, okPF)
		add("prefetch: p99 ≤ 0.6× direct", ratioFigure(pf.VsDirect.P99), pf.VsDirect.P99.Ratio.Median <= 0.6, okPF)
		if pf.VsBest != nil {
			add("prefetch: p50 ≤ 0.8× the best alternative ("+pf.VsBest.Mode+")", ratioFigure(pf.VsBest.P50), pf.VsBest.P50.Ratio.Median <= 0.8, hasPF && pf.VsBest.P50.Ratio.N > 0)
		} else {
			add("prefetch: p50 ≤ 0.8× the best alternative", "no alternative ran", false, false)
		}
		g, hasGate := rows["gate"]
		okGate := hasGate && hasDirect && g.VsDirect.P50.Ratio.N > 0
		add("gate alone: never worse than direct beyond the noise (p50, p99, completion)",
			fmt.Sprintf("p50 %s; p99 %s; completion %s", g.VsDirect.P50, g.VsDirect.P99, g.VsDirect.Completion),
			g.VsDirect.P50.Verdict != stats.Worse && g.VsDirect.P99.Verdict != stats.Worse && g.VsDirect.Completion.Verdict != stats.Worse, okGate)
		add("gate alone: idle CPU while starts wait ≤ 5% of the rollout", share(g.IdleWaiting), g.IdleWaiting.Median <= 0.05, hasGate && g.IdleWaiting.N > 0)
		sg, hasSG := rows["startgate"]
		best, bestP50 := "", 0.0
		for _, row := range t.Rows {
			if m, ok := r.mode(row.Mode); ok && m.Path == PathPacemaker && (best == "" || row.P50.Median < bestP50) {
				best, bestP50 = row.Mode, row.P50.Median
			}
		}
		if best != "" && hasSG {
			v := versus(best, byRoundOf(sg), byRoundOf(rows[best]))
			add("startgate ahead of pod-pacemaker's best ("+best+") on p99 and completion",
				fmt.Sprintf("p99 %s; completion %s", v.P99, v.Completion),
				v.P99.Verdict == stats.Better && v.Completion.Verdict == stats.Better, v.P99.Ratio.N > 0)
		} else {
			add("startgate ahead of pod-pacemaker's best on p99 and completion", "pod-pacemaker did not run", false, false)
		}
		add("startgate within 1.3× of the ideal bound (completion)", times(sg.VsIdeal), sg.VsIdeal.Median <= 1.3, hasSG && sg.VsIdeal.N > 0)
	}
	return out
}

func byRoundOf(row ModeRow) map[int]RoundFigures {
	m := map[int]RoundFigures{}
	for _, f := range row.Rounds {
		m[f.Round] = f
	}
	return m
}

func ratioFigure(c stats.Comparison) string {
	if c.Ratio.N == 0 {
		return "-"
	}
	return c.String()
}

// WriteTargets writes the targets as a table.
func WriteTargets(w io.Writer, r *Result) error {
	var b strings.Builder
	b.WriteString("| scenario | target | figure | verdict |\n| --- | --- | --- | --- |\n")
	for _, t := range r.Targets() {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", t.Scenario, t.Target, t.Figure, t.Verdict)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
