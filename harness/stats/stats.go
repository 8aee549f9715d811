// Package stats is the benchmarks' statistics: a figure taken once per
// round, summarized over rounds as a median with its range and a
// bootstrap interval, and a verdict when two modes are compared.
//
// Rounds, not pods, are the unit: the pods of one round share its
// machine state (another tenant's load, the page cache, a slow disk
// flush), so pooling them would count one noisy minute forty times. Each
// figure (a round's p50, its p99, its completion) is taken within a
// round; a comparison between modes is a ratio taken within the same
// round (the modes ran minutes apart on the same node), and only the
// ratios' spread over rounds says whether a difference is more than this
// machine's noise.
package stats

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// Resamples is the bootstrap's number of resamples.
const Resamples = 10000

// Confidence is the bootstrap interval's coverage.
const Confidence = 0.95

// seed makes every report of the same data print the same interval.
const seed = 20261204

// Estimate is one figure over rounds.
type Estimate struct {
	N      int     `json:"n"`
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	// Lo and Hi bound the median: the percentile bootstrap interval at
	// Confidence (with 5 rounds it is close to the range, as it should
	// be: five values say little more).
	Lo float64 `json:"lo"`
	Hi float64 `json:"hi"`
}

// Of summarizes xs (one value per round); NaNs are refused by the caller.
func Of(xs []float64) Estimate {
	if len(xs) == 0 {
		return Estimate{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	e := Estimate{N: len(s), Median: median(s), Min: s[0], Max: s[len(s)-1]}
	e.Lo, e.Hi = bootstrap(s)
	return e
}

// Durations summarizes durations, in seconds.
func Durations(ds []time.Duration) Estimate {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = d.Seconds()
	}
	return Of(xs)
}

// median of sorted s: the mean of the middle two for an even count.
func median(s []float64) float64 {
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// bootstrap is the percentile interval of the median of sorted s.
func bootstrap(s []float64) (lo, hi float64) {
	if len(s) == 1 {
		return s[0], s[0]
	}
	r := rand.New(rand.NewPCG(seed, uint64(len(s))))
	meds := make([]float64, Resamples)
	buf := make([]float64, len(s))
	for i := range meds {
		for j := range buf {
			buf[j] = s[r.IntN(len(s))]
		}
		slices.Sort(buf)
		meds[i] = median(buf)
	}
	slices.Sort(meds)
	tail := (1 - Confidence) / 2
	return Quantile(meds, tail), Quantile(meds, 1-tail)
}

// Quantile is the nearest-rank q-quantile of sorted s (q in [0, 1]).
func Quantile(s []float64, q float64) float64 {
	if len(s) == 0 {
		return math.NaN()
	}
	rank := int(math.Ceil(q * float64(len(s))))
	return s[max(1, min(rank, len(s)))-1]
}

// Verdict is a comparison's outcome at this noise.
type Verdict string

const (
	Better Verdict = "better"
	Worse  Verdict = "worse"
	// Same: the interval holds 1; the rounds cannot tell the two apart.
	Same Verdict = "not distinguishable"
	// Unknown: fewer than two rounds to compare.
	Unknown Verdict = "too few rounds"
)

// Comparison is a figure of one mode against the same figure of another,
// as ratios taken within each round (lower is better: times).
type Comparison struct {
	Ratio   Estimate `json:"ratio"`
	Verdict Verdict  `json:"verdict"`
}

// Compare takes the ratio a[i]/b[i] of each round i (both lower-is-better
// figures of the same round) and judges it: better when the whole
// interval is below 1, worse when above, else not distinguishable.
// Rounds where b is 0 are skipped.
func Compare(a, b []float64) Comparison {
	var rs []float64
	for i := range min(len(a), len(b)) {
		if b[i] > 0 {
			rs = append(rs, a[i]/b[i])
		}
	}
	c := Comparison{Ratio: Of(rs), Verdict: Unknown}
	switch {
	case len(rs) < 2:
	case c.Ratio.Hi < 1:
		c.Verdict = Better
	case c.Ratio.Lo > 1:
		c.Verdict = Worse
	default:
		c.Verdict = Same
	}
	return c
}

// String is "0.84 (0.71–0.93) better".
func (c Comparison) String() string {
	if c.Ratio.N == 0 {
		return "-"
	}
	if c.Verdict == Unknown {
		return fmt.Sprintf("%.2f", c.Ratio.Median)
	}
	return fmt.Sprintf("%.2f [%.2f–%.2f] %s", c.Ratio.Median, c.Ratio.Lo, c.Ratio.Hi, c.Verdict)
}

// Seconds prints an estimate of seconds: "12.3 s (10.1–14.0)".
func (e Estimate) Seconds() string {
	if e.N == 0 {
		return "-"
	}
	if e.N == 1 {
		return fmt.Sprintf("%.1f s", e.Median)
	}
	return fmt.Sprintf("%.1f s (%.1f–%.1f)", e.Median, e.Min, e.Max)
}
