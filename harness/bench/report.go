package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// WriteMarkdown writes the result as a short note and a markdown table:
// one row per mode, then the ideal bound.
func WriteMarkdown(w io.Writer, r *Result) error {
	var b strings.Builder
	c := r.Calibration
	rounds := "1 round"
	if r.Rounds > 1 {
		rounds = fmt.Sprintf("%d rounds, the modes alternating", r.Rounds)
	}
	fmt.Fprintf(&b, "%d pods started at once, %s; %d cores, %s (%s).\n",
		r.Pods, rounds, r.Cores, orUnknown(r.Runtime), orUnknown(r.Snapshotter))
	fmt.Fprintf(&b, "Before each burst the app's tag is patched (one %s layer of random bytes replaced) and every pod pulls it first, "+
		"one pull at a time on the node (kubelet's serialized pulls, imagePullPolicy Always)%s.\n", mib(int64(r.PatchSize)), registryLink(r))
	fmt.Fprintf(&b, "Init (%s): %s; one pod alone is ready %s after RunPodSandbox.\n",
		orUnknown(r.Workload), Workload{Kind: r.Workload}.describe(c), secs(c.Single))
	b.WriteString("Time to ready: from the burst's start to the container's ready line (CRI log time). " +
		"Nearest-rank percentiles over every round's pods (p99 is the slowest of fewer than 100); makespan is the mean over rounds. " +
		"init p50: start line to ready line, the init work's wall time under contention. " +
		"pull p50: a pod's wait for the node's pull worker plus its PullImage; first pull: the burst's longest PullImage " +
		"(the one that moved the layer), mean over rounds; prefetch: startgated's fetch of the patch before the burst, " +
		"from PrefetchAdd to PrefetchList showing it done (not in time to ready).\n")
	if r.Command != "" {
		fmt.Fprintf(&b, "Command: `%s` (took %s).\n", r.Command, r.Took.Round(time.Second))
	}
	if r.Chart != "" {
		fmt.Fprintf(&b, "Chart (time to ready, CDF per mode): %s.\n", r.Chart)
	}
	if r.Interrupted {
		b.WriteString("**Interrupted: the figures cover the bursts that ran.**\n")
	}
	for _, wn := range r.Warnings {
		fmt.Fprintf(&b, "Warning: %s.\n", wn)
	}
	b.WriteString("\n| mode | p50 | p90 | p99 | mean | makespan | init p50 | pull p50 | first pull | prefetch | failed | retries | p50 vs direct | p99 vs direct | makespan vs direct |\n")
	b.WriteString("| --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |\n")
	for _, m := range r.Modes {
		s := m.Summary
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d/%d | %d | %s |\n",
			m.Mode, dur(s.P50), dur(s.P90), dur(s.P99), dur(s.Mean), dur(s.Makespan), dur(s.InitP50),
			dur(s.PullP50), dur(s.FirstPull), orDash(s.Prefetch), s.Failed, s.Pods, s.Retries, ratios(m.VsDirect))
	}
	s := r.Ideal
	init := c.Init
	if r.Workload == WorkIO {
		init = c.IOInit
	}
	fmt.Fprintf(&b, "| ideal (FIFO, %d at a time, no pull) | %s | %s | %s | %s | %s | %s | - | - | - | - | - | %s |\n",
		r.Cores, dur(s.P50), dur(s.P90), dur(s.P99), dur(s.Mean), dur(s.Makespan), dur(init), ratios(r.IdealVsDirect))
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// registryLink says how far away the registry was.
func registryLink(r *Result) string {
	d := DescribeRegistry(r.RegistryBandwidth, r.RegistryRTT, r.RegistryToken)
	if d == "" {
		return "; the registry is on loopback, unthrottled"
	}
	return "; the registry is far away: " + d
}

// DescribeRegistry says how far away a registry is (a bandwidth cap in
// bytes per second, a round trip, token auth); "" for loopback.
func DescribeRegistry(bytesPerSec float64, rtt time.Duration, token bool) string {
	var parts []string
	if bytesPerSec > 0 {
		parts = append(parts, fmt.Sprintf("capped at %.0f Mbit/s", bytesPerSec*8/1e6))
	}
	if rtt > 0 {
		parts = append(parts, fmt.Sprintf("%s round trip", rtt))
	}
	if token {
		parts = append(parts, "a bearer token per pull")
	}
	return strings.Join(parts, ", ")
}

func orDash(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return dur(d)
}

func dur(d time.Duration) string {
	if d <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

func ratios(r *Ratios) string {
	if r == nil {
		return "n/a | n/a | n/a"
	}
	f := func(x float64) string {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return "n/a"
		}
		return fmt.Sprintf("%.2f", x)
	}
	return f(r.P50) + " | " + f(r.P99) + " | " + f(r.Makespan)
}

// MarshalJSON writes a ratio that has no value (NaN: nothing to divide
// by) as null; encoding/json refuses NaN.
func (r Ratios) MarshalJSON() ([]byte, error) {
	f := func(x float64) *float64 {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil
		}
		return &x
	}
	return json.Marshal(struct {
		P50      *float64 `json:"p50"`
		P90      *float64 `json:"p90"`
		P99      *float64 `json:"p99"`
		Mean     *float64 `json:"mean"`
		Makespan *float64 `json:"makespan"`
	}{f(r.P50), f(r.P90), f(r.P99), f(r.Mean), f(r.Makespan)})
}
