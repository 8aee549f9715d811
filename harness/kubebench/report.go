package kubebench

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/startgate/startgate/harness/bench"
)

// Summary pools the pods of some runs (one scenario, one mode).
type Summary struct {
	Runs     int           `json:"runs"`
	Pods     int           `json:"pods"`
	Ready    int           `json:"ready"`
	Failed   int           `json:"failed"`
	Restarts int           `json:"restarts"`
	P50      time.Duration `json:"p50_ns"`
	P90      time.Duration `json:"p90_ns"`
	P99      time.Duration `json:"p99_ns"`
	// Completion is the median of the runs' completions.
	Completion time.Duration `json:"completion_ns"`
	// PullP50 and PullWaitingP50 are the pods' median pull, without and
	// with the wait for the node's pull worker (kubelet's events).
	PullP50        time.Duration `json:"pull_p50_ns"`
	PullWaitingP50 time.Duration `json:"pull_waiting_p50_ns"`
	// SLIP50 and TotalP50 are the medians over runs of kubelet's own
	// p50s (bucket-interpolated).
	SLIP50   time.Duration `json:"kubelet_sli_p50_ns"`
	TotalP50 time.Duration `json:"kubelet_total_p50_ns"`
	Prefetch time.Duration `json:"prefetch_ns,omitempty"`
}

func summarize(runs []ScenarioRun) Summary {
	var s Summary
	var ready, pulls, waits, comps, slis, totals, pfs []time.Duration
	for _, r := range runs {
		s.Runs++
		s.Failed += r.Failed
		comps = append(comps, r.Completion)
		if r.KubeletSLI.Count > 0 {
			slis = append(slis, r.KubeletSLI.P50)
		}
		if r.KubeletTotal.Count > 0 {
			totals = append(totals, r.KubeletTotal.P50)
		}
		if r.Prefetch > 0 {
			pfs = append(pfs, r.Prefetch)
		}
		for _, p := range r.Pods {
			s.Pods++
			s.Restarts += int(p.Restarts)
			if p.Ready > 0 {
				s.Ready++
				ready = append(ready, p.Ready)
			}
			if p.PullWaiting > 0 {
				pulls = append(pulls, p.Pull)
				waits = append(waits, p.PullWaiting)
			}
		}
		s.Pods += max(0, r.Failed-(len(r.Pods)-countReady(r.Pods))) // pods never created
	}
	s.P50, s.P90, s.P99 = pct(ready, 50), pct(ready, 90), pct(ready, 99)
	s.Completion = pct(comps, 50)
	s.PullP50, s.PullWaitingP50 = pct(pulls, 50), pct(waits, 50)
	s.SLIP50, s.TotalP50 = pct(slis, 50), pct(totals, 50)
	s.Prefetch = pct(pfs, 50)
	return s
}

// pct is the nearest-rank percentile of ds (sorted here).
func pct(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return bench.Percentile(s, p)
}

// Ratio is a figure's ratio to another mode's, taken within each round,
// as the median over rounds with its range.
type Ratio struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	Rounds int     `json:"rounds"`
}

func (r Ratio) String() string {
	if r.Rounds == 0 {
		return "-"
	}
	if r.Rounds == 1 {
		return fmt.Sprintf("%.2f", r.Median)
	}
	return fmt.Sprintf("%.2f (%.2f–%.2f)", r.Median, r.Min, r.Max)
}

func ratioOf(xs []float64) Ratio {
	if len(xs) == 0 {
		return Ratio{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	// The median of an even count is the mean of the middle two.
	mid := s[len(s)/2]
	if len(s)%2 == 0 {
		mid = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Ratio{Median: mid, Min: s[0], Max: s[len(s)-1], Rounds: len(s)}
}

// ModeRow is one mode's line of a scenario's table.
type ModeRow struct {
	Mode    string  `json:"mode"`
	Summary Summary `json:"summary"`
	// P50, P99 and Completion against direct, and P50 against the best
	// fixed-K of the same round.
	P50VsDirect        Ratio `json:"p50_vs_direct"`
	P99VsDirect        Ratio `json:"p99_vs_direct"`
	CompletionVsDirect Ratio `json:"completion_vs_direct"`
	P50VsBestFixed     Ratio `json:"p50_vs_best_fixed"`
}

// Table is one scenario's figures, a row per mode.
type Table struct {
	Scenario string    `json:"scenario"`
	Rows     []ModeRow `json:"rows"`
}

// Tables summarizes r per scenario and mode.
func (r *Result) Tables() []Table {
	var out []Table
	for _, sc := range r.Scenarios {
		t := Table{Scenario: sc}
		byRound := map[int]map[string]Summary{}
		for _, run := range r.Runs {
			if run.Scenario != sc {
				continue
			}
			if byRound[run.Round] == nil {
				byRound[run.Round] = map[string]Summary{}
			}
			byRound[run.Round][run.Mode] = summarize([]ScenarioRun{run})
		}
		for _, mode := range r.Modes {
			var runs []ScenarioRun
			for _, run := range r.Runs {
				if run.Scenario == sc && run.Mode == mode {
					runs = append(runs, run)
				}
			}
			if len(runs) == 0 {
				continue
			}
			row := ModeRow{Mode: mode, Summary: summarize(runs)}
			var p50, p99, comp, fixed []float64
			for _, modes := range byRound {
				me, ok := modes[mode]
				if !ok {
					continue
				}
				if d, ok := modes["direct"]; ok && d.P50 > 0 && d.P99 > 0 && d.Completion > 0 {
					p50 = append(p50, float64(me.P50)/float64(d.P50))
					p99 = append(p99, float64(me.P99)/float64(d.P99))
					comp = append(comp, float64(me.Completion)/float64(d.Completion))
				}
				var best time.Duration
				for name, s := range modes {
					if strings.HasPrefix(name, "fixed-") && s.P50 > 0 && (best == 0 || s.P50 < best) {
						best = s.P50
					}
				}
				if best > 0 {
					fixed = append(fixed, float64(me.P50)/float64(best))
				}
			}
			row.P50VsDirect, row.P99VsDirect, row.CompletionVsDirect, row.P50VsBestFixed = ratioOf(p50), ratioOf(p99), ratioOf(comp), ratioOf(fixed)
			t.Rows = append(t.Rows, row)
		}
		out = append(out, t)
	}
	return out
}

// WriteMarkdown writes the report: what ran, then a table per scenario.
func WriteMarkdown(w io.Writer, r *Result) error {
	var b strings.Builder
	rounds := "1 round"
	if r.Rounds > 1 {
		rounds = fmt.Sprintf("%d rounds, the modes alternating", r.Rounds)
	}
	fmt.Fprintf(&b, "Real one-node cluster (Kubernetes v1.34 kubelet and control plane, containerd 1.6), %d cores; a Deployment of %d pods, %s.\n", r.Cores, r.Pods, rounds)
	fmt.Fprintf(&b, "Init (%s): %s. Readiness: HTTP probe every second once init is done. imagePullPolicy Always; kubelet %s.\n",
		r.Workload, describeWork(r), pullsDescription(r.ParallelPulls))
	fmt.Fprintf(&b, "Registry: %s; each patch replaces one %.1f MiB layer.\n", registryDescription(r), float64(r.PatchSize)/(1<<20))
	b.WriteString("Per pod: creation to Ready as the API's watch saw them (reboot: kubelet start to Ready). Completion: the scenario's start to every new pod Ready and no old one left, median over rounds. " +
		"pull: kubelet's Pulled event, median (with the wait for the node's pull worker in brackets). kubelet SLI / total: kubelet_pod_start_sli_duration_seconds and _total_, p50 from the histogram, median over rounds. " +
		"Ratios are taken within each round, then the median over rounds with its range.\n")
	fmt.Fprintf(&b, "Command: `%s` (took %s).\n", r.Command, r.Took.Round(time.Second))
	for _, t := range r.Tables() {
		fmt.Fprintf(&b, "\n**%s**\n\n", t.Scenario)
		b.WriteString("| mode | p50 | p90 | p99 | completion | pull p50 | kubelet SLI p50 | kubelet total p50 | prefetch | failed | restarts | p50 vs direct | p99 vs direct | completion vs direct | p50 vs best fixed |\n")
		b.WriteString("| --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |\n")
		for _, row := range t.Rows {
			s := row.Summary
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s (%s) | %s | %s | %s | %d/%d | %d | %s | %s | %s | %s |\n",
				row.Mode, secs(s.P50), secs(s.P90), secs(s.P99), secs(s.Completion), ms(s.PullP50), ms(s.PullWaitingP50),
				orDash(s.SLIP50), orDash(s.TotalP50), orDash(s.Prefetch), s.Failed, s.Pods, s.Restarts,
				row.P50VsDirect, row.P99VsDirect, row.CompletionVsDirect, row.P50VsBestFixed)
		}
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

func describeWork(r *Result) string {
	cpu := fmt.Sprintf("a busy shell loop until the container has used %s of CPU", r.InitCPU)
	io := fmt.Sprintf("write, fsync and O_DIRECT read of %.0f MiB in the container's root filesystem", float64(r.IOBytes)/(1<<20))
	switch r.Workload {
	case WorkIO:
		return io
	case WorkMixed:
		return "about half the pods " + cpu + ", the others " + io
	}
	return cpu
}

func pullsDescription(n int) string {
	if n > 0 {
		return fmt.Sprintf("pulls up to %d images at once (serializeImagePulls false)", n)
	}
	return "pulls one image at a time (its default)"
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
