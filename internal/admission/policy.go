package admission

import (
	"fmt"
	"math"
	"time"

	"github.com/startgate/startgate/internal/pressure"
)

// DefaultPolicy is the policy of a gate configured with nothing, tuned on
// the patch-rollout burst benchmark (startgate-bench; docs/architecture.md
// "Tuning" has the measurements behind each value):
//
//   - CPU target 0.95 with growth only below 0.7 of a target
//     (GrowBelow): during a saturated burst CPU "some" reads 0.8 to 0.95,
//     so a plain AIMD either held the gate at its floor (target 0.75) or
//     never reached its target and sat at the ceiling (0.95); with a band
//     the limit holds where the burst found it (the neutral limits an
//     idle gate relaxes to) while the node is busy, backs off only when
//     runnable tasks pile up, and grows when there is room;
//   - floors of one start in flight per core and two starts per second per
//     core: a node loaded by other work still starts its pods at the pace
//     of a fixed limit of one per core, instead of one at a time at one a
//     second (which made 100 pods slower through the gate than without it);
//   - a ceiling of four starts in flight per core: on a real node
//     (startgate-bench kube) a slot is held from RunPodSandbox to Ready,
//     through the sandbox's network set-up and up to a probe period
//     waiting for the readiness probe, so the best fixed limit there was 4
//     per core and a ceiling of 3 held startgate at 1.13 times its p50
//     (4: 0.99; 5: 0.98, with a longer tail). The band keeps the limit
//     from climbing to the ceiling while the node is saturated: before
//     it, a ceiling of 8 per core let the limit reach 16 on 2 cores
//     within three seconds of an emulated burst, every start contended;
//     the neutral limit the band holds is 2 per core, the best fixed
//     limit of the emulated benchmark;
//   - IO 0.4 and memory 0.1 stay: IO stalls hurt every start at once, and
//     memory stalls mean reclaim, where more starts only add to it.
func DefaultPolicy() Policy {
	return Policy{
		Targets:            pressure.Values{pressure.CPU: 0.95, pressure.IO: 0.4, pressure.Memory: 0.1},
		MinInFlightPerCore: 1,
		MaxInFlightPerCore: 4,
		MinRatePerCore:     2,
		MaxRatePerCore:     25,
		Burst:              0,
		DecreaseFactor:     0.7,
		DecreaseEvery:      time.Second,
		GrowBelow:          0.7,
		IncreaseStep:       1,
		RateStep:           1,
		DeadlineMargin:     10 * time.Second,
		DeadlineRefuse:     false,
		Aging:              10 * time.Second,
		MaxHold:            60 * time.Second,
		MaxQueue:           10000,
	}
}

func invalid(field string, format string, args ...any) error {
	return fmt.Errorf("%w %s: %s", ErrInvalid, field, fmt.Sprintf(format, args...))
}

// Validate checks every field and returns the first problem, naming the
// field.
func (p Policy) Validate() error {
	for _, r := range pressure.Resources {
		if v := p.Targets[r]; !(v > 0 && v <= 1) {
			return invalid("targets."+r.String(), "%v out of range (0, 1]", v)
		}
	}
	type perCore struct {
		name string
		v    float64
	}
	for _, f := range []perCore{
		{"min_inflight_per_core", p.MinInFlightPerCore},
		{"max_inflight_per_core", p.MaxInFlightPerCore},
		{"min_rate_per_core", p.MinRatePerCore},
		{"max_rate_per_core", p.MaxRatePerCore},
	} {
		if !(f.v > 0) || math.IsInf(f.v, 0) {
			return invalid(f.name, "%v must be positive and finite", f.v)
		}
	}
	if p.MaxInFlightPerCore < p.MinInFlightPerCore {
		return invalid("max_inflight_per_core", "%v below min_inflight_per_core %v", p.MaxInFlightPerCore, p.MinInFlightPerCore)
	}
	if p.MaxRatePerCore < p.MinRatePerCore {
		return invalid("max_rate_per_core", "%v below min_rate_per_core %v", p.MaxRatePerCore, p.MinRatePerCore)
	}
	if p.Burst < 0 {
		return invalid("burst", "%d is negative", p.Burst)
	}
	if !(p.GrowBelow > 0 && p.GrowBelow <= 1) {
		return invalid("grow_below", "%v out of range (0, 1]", p.GrowBelow)
	}
	if !(p.DecreaseFactor > 0 && p.DecreaseFactor < 1) {
		return invalid("decrease_factor", "%v out of range (0, 1)", p.DecreaseFactor)
	}
	if p.DecreaseEvery < 0 || p.DecreaseEvery > time.Minute {
		return invalid("decrease_every", "%v out of range [0s, 1m]", p.DecreaseEvery)
	}
	if p.IncreaseStep < 1 {
		return invalid("increase_step", "%d must be at least 1", p.IncreaseStep)
	}
	if !(p.RateStep > 0) {
		return invalid("rate_step", "%v must be positive", p.RateStep)
	}
	if p.FixedInFlight < 0 {
		return invalid("inflight", "%d is negative", p.FixedInFlight)
	}
	if p.FixedRate < 0 || math.IsInf(p.FixedRate, 0) || math.IsNaN(p.FixedRate) {
		return invalid("rate", "%v must be zero (controlled) or positive", p.FixedRate)
	}
	if p.StaticInFlight < 0 {
		return invalid("static_inflight", "%d is negative", p.StaticInFlight)
	}
	if p.StaticRate < 0 || math.IsNaN(p.StaticRate) {
		return invalid("static_rate", "%v is negative", p.StaticRate)
	}
	if p.DeadlineMargin < 0 {
		return invalid("deadline_margin", "%v is negative", p.DeadlineMargin)
	}
	if p.Aging <= 0 {
		return invalid("aging", "%v must be positive", p.Aging)
	}
	if p.MaxHold <= 0 {
		return invalid("max_hold", "%v must be positive", p.MaxHold)
	}
	if p.MaxQueue < 1 {
		return invalid("max_queue", "%d must be at least 1", p.MaxQueue)
	}
	return nil
}

// bounds are the policy's limits resolved for a number of cores.
type bounds struct {
	minInFlight, maxInFlight int
	minRate, maxRate         float64
	burst                    int
	staticInFlight           int
	staticRate               float64
}

func (p Policy) bounds(cores int) bounds {
	c := float64(cores)
	b := bounds{
		minInFlight: max(1, int(math.Round(p.MinInFlightPerCore*c))),
		minRate:     p.MinRatePerCore * c,
		maxRate:     p.MaxRatePerCore * c,
		burst:       p.Burst,
	}
	b.maxInFlight = max(b.minInFlight, int(math.Round(p.MaxInFlightPerCore*c)))
	b.maxRate = math.Max(b.minRate, b.maxRate)
	if b.burst == 0 {
		b.burst = max(1, cores)
	}
	b.staticInFlight = p.StaticInFlight
	if b.staticInFlight == 0 {
		b.staticInFlight = 2 * cores
	}
	b.staticRate = p.StaticRate
	if b.staticRate == 0 {
		b.staticRate = 5 * c
	}
	return b
}
