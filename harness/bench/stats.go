package bench

import (
	"math"
	"slices"
	"time"
)

// Summary is the distribution of time to ready of one mode's pods, pooled
// over its rounds.
type Summary struct {
	Pods     int           `json:"pods"`
	Ready    int           `json:"ready"`
	Failed   int           `json:"failed"`
	Retries  int           `json:"retries"`
	P50      time.Duration `json:"p50_ns"`
	P90      time.Duration `json:"p90_ns"`
	P99      time.Duration `json:"p99_ns"`
	Mean     time.Duration `json:"mean_ns"`
	Makespan time.Duration `json:"makespan_ns"`
	// InitP50 is the median time from a container's start line to its
	// ready line: how much contention stretched the init work.
	InitP50 time.Duration `json:"init_p50_ns"`
	// PullP50 is the median of the pods' pull time (Pod.Pull: the wait
	// for the node's one pull at a time, and the pull).
	PullP50 time.Duration `json:"pull_p50_ns,omitempty"`
	// FirstPull is the longest PullImage call of a burst, the one that
	// moved the patched layer (or found it prefetched), mean over rounds.
	FirstPull time.Duration `json:"first_pull_ns,omitempty"`
	// Prefetch is startgated's time to fetch the patch before the burst
	// (Burst.Prefetch), mean over the rounds that prefetched.
	Prefetch time.Duration `json:"prefetch_ns,omitempty"`
}

// Percentile is the nearest-rank percentile (0 < p <= 100) of sorted: the
// smallest value that at least p% of the values do not exceed. It is
// always one of the measured values, so p99 of 40 pods is the slowest pod,
// not an interpolation past it. Zero for no values.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = max(1, min(rank, len(sorted)))
	return sorted[rank-1]
}

// Summarize pools the rounds of one mode: percentiles and mean over every
// pod that became ready, makespan as the mean of the rounds' makespans
// (each the time from that burst's start to its last ready pod), failures
// and retries summed; pull and prefetch times as their fields say. A
// failed pod has no time to ready; it is counted, not averaged in.
func Summarize(rounds []Burst) Summary {
	var s Summary
	var ready, inits, pulls []time.Duration
	var makespans, firstPulls, prefetches time.Duration
	var nFirst, nPrefetch int
	for _, b := range rounds {
		var last, first time.Duration
		for _, p := range b.Pods {
			s.Pods++
			s.Retries += p.Retries
			if p.Pull > 0 {
				pulls = append(pulls, p.Pull)
			}
			first = max(first, p.Calls["PullImage"])
			if p.Failed() {
				s.Failed++
				continue
			}
			ready = append(ready, p.Ready)
			inits = append(inits, p.Init)
			last = max(last, p.Ready)
		}
		makespans += last
		if first > 0 {
			firstPulls += first
			nFirst++
		}
		if b.Prefetch > 0 {
			prefetches += b.Prefetch
			nPrefetch++
		}
	}
	if nFirst > 0 {
		s.FirstPull = firstPulls / time.Duration(nFirst)
	}
	if nPrefetch > 0 {
		s.Prefetch = prefetches / time.Duration(nPrefetch)
	}
	slices.Sort(pulls)
	s.PullP50 = Percentile(pulls, 50)
	s.Ready = len(ready)
	if len(rounds) > 0 {
		s.Makespan = makespans / time.Duration(len(rounds))
	}
	fillDistribution(&s, ready)
	slices.Sort(inits)
	s.InitP50 = Percentile(inits, 50)
	return s
}

func fillDistribution(s *Summary, ready []time.Duration) {
	if len(ready) == 0 {
		return
	}
	slices.Sort(ready)
	s.P50 = Percentile(ready, 50)
	s.P90 = Percentile(ready, 90)
	s.P99 = Percentile(ready, 99)
	var sum time.Duration
	for _, d := range ready {
		sum += d
	}
	s.Mean = sum / time.Duration(len(ready))
}

// Ideal is the lower bound the benchmark compares against: n pods, each
// taking alone what one pod took on a quiet node (single), run first in,
// first out, `cores` at a time with no contention at all. Pod i (from 0)
// is ready at (i/cores + 1) × single. It treats the whole of a lone pod's
// time as occupying a core, sandbox setup included, which is what a
// perfect gate in front of a CPU-bound init achieves.
func Ideal(n, cores int, single time.Duration) Summary {
	if n <= 0 || cores <= 0 {
		return Summary{}
	}
	ready := make([]time.Duration, n)
	for i := range ready {
		ready[i] = time.Duration(i/cores+1) * single
	}
	s := Summary{Pods: n, Ready: n, Makespan: ready[n-1]}
	fillDistribution(&s, ready)
	return s
}

// Ratios are one mode's figures divided by direct's: below 1 is better.
type Ratios struct {
	P50      float64 `json:"p50"`
	P90      float64 `json:"p90"`
	P99      float64 `json:"p99"`
	Mean     float64 `json:"mean"`
	Makespan float64 `json:"makespan"`
}

// RatiosTo divides s by base; a figure whose base is zero (no pod of the
// base became ready) is NaN, which the table prints as "n/a".
func RatiosTo(s, base Summary) Ratios {
	div := func(a, b time.Duration) float64 {
		if b <= 0 || a <= 0 {
			return math.NaN()
		}
		return float64(a) / float64(b)
	}
	return Ratios{
		P50:      div(s.P50, base.P50),
		P90:      div(s.P90, base.P90),
		P99:      div(s.P99, base.P99),
		Mean:     div(s.Mean, base.Mean),
		Makespan: div(s.Makespan, base.Makespan),
	}
}
