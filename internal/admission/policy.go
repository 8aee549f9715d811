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

// The ranges every policy value must lie in. Each keeps the gate's
// arithmetic finite and its progress positive: per-core values are
// multiplied by the node's cores, class × Aging is added to a time, and a
// rate or an in-flight limit near zero would freeze the gate as surely as
// a pause (and a pause is what `startgatectl pause` is for).
const (
	maxInFlightPerCore = 64        // in-flight slots per core, floor and ceiling
	minRatePerCore     = 0.1       // starts per second per core: a start per 10 s on one core
	maxRatePerCore     = 1000      // starts per second per core
	maxCount           = 100_000   // in-flight limits, burst
	minRate            = 0.1       // a pinned or static rate, starts per second
	maxRate            = 1_000_000 // a pinned or static rate: unlimited, in effect
	maxStep            = 1000      // increase_step, rate_step
	maxQueue           = 1_000_000
	maxDecreaseEvery   = time.Minute
	maxDeadlineMargin  = 10 * time.Minute
	minAging           = time.Millisecond
	maxAging           = time.Hour
	minMaxHold         = time.Second
	maxMaxHold         = 24 * time.Hour
)

// FieldError says what is wrong with one policy value. Field is its key
// under the config file's [admission] section ("limits.rate", "aging"),
// so one message serves the config file and SetPolicy.
type FieldError struct {
	Field   string
	Problem string
}

func (e *FieldError) Error() string { return fmt.Sprintf("%v %s: %s", ErrInvalid, e.Field, e.Problem) }

// Unwrap makes errors.Is(err, ErrInvalid) hold.
func (e *FieldError) Unwrap() error { return ErrInvalid }

// Validate checks every field and returns the first problem, naming the
// field and its accepted range; Check returns them all.
func (p Policy) Validate() error {
	if errs := p.Check(); len(errs) > 0 {
		return errs[0]
	}
	return nil
}

// Check returns a FieldError for every value out of its range.
func (p Policy) Check() []*FieldError {
	var c checker
	for _, r := range pressure.Resources {
		c.float("targets."+r.String(), p.Targets[r], 0, false, 1)
	}
	c.float("limits.min_inflight_per_core", p.MinInFlightPerCore, 0, false, maxInFlightPerCore)
	c.float("limits.max_inflight_per_core", p.MaxInFlightPerCore, 0, false, maxInFlightPerCore)
	if p.MaxInFlightPerCore < p.MinInFlightPerCore {
		c.add("limits.max_inflight_per_core", "%v below min_inflight_per_core %v", p.MaxInFlightPerCore, p.MinInFlightPerCore)
	}
	c.float("limits.min_rate_per_core", p.MinRatePerCore, minRatePerCore, true, maxRatePerCore)
	c.float("limits.max_rate_per_core", p.MaxRatePerCore, minRatePerCore, true, maxRatePerCore)
	if p.MaxRatePerCore < p.MinRatePerCore {
		c.add("limits.max_rate_per_core", "%v below min_rate_per_core %v", p.MaxRatePerCore, p.MinRatePerCore)
	}
	c.int("limits.burst", p.Burst, 0, maxCount, " (0 is one per core)")
	if !(p.DecreaseFactor > 0 && p.DecreaseFactor < 1) {
		c.add("limits.decrease_factor", "%v out of range (0, 1)", p.DecreaseFactor)
	}
	c.duration("limits.decrease_every", p.DecreaseEvery, 0, maxDecreaseEvery)
	c.float("limits.grow_below", p.GrowBelow, 0, false, 1)
	if p.DoubleBelow < 0 || p.DoubleBelow > p.GrowBelow {
		c.add("limits.double_below", "%v out of range [0, grow_below %v]", p.DoubleBelow, p.GrowBelow)
	}
	c.int("limits.increase_step", p.IncreaseStep, 1, maxStep, "")
	c.float("limits.rate_step", p.RateStep, 0, false, maxStep)
	c.int("limits.inflight", p.FixedInFlight, 0, maxCount, " (0 is controlled)")
	c.optionalRate("limits.rate", p.FixedRate, "controlled")
	c.int("limits.static_inflight", p.StaticInFlight, 0, maxCount, " (0 is 2 per core)")
	c.optionalRate("limits.static_rate", p.StaticRate, "5 per core")
	c.duration("deadline_margin", p.DeadlineMargin, 0, maxDeadlineMargin)
	c.duration("aging", p.Aging, minAging, maxAging)
	c.duration("max_hold", p.MaxHold, minMaxHold, maxMaxHold)
	c.int("max_queue", p.MaxQueue, 1, maxQueue, "")
	return c.errs
}

// validate checks what a caller asks for: its class, and a hold within the
// range max_hold may have (a lease's expiry must not overflow).
func (req Request) validate() error {
	if !req.Class.Valid() {
		return invalid("class", "%d is not a class", int(req.Class))
	}
	if req.Hold < 0 || req.Hold > maxMaxHold {
		return invalid("hold", "%v out of range [0s, %v] (0 is max_hold)", req.Hold, maxMaxHold)
	}
	return nil
}

func invalid(field string, format string, args ...any) error {
	return &FieldError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

type checker struct{ errs []*FieldError }

func (c *checker) add(field, format string, args ...any) {
	c.errs = append(c.errs, &FieldError{Field: field, Problem: fmt.Sprintf(format, args...)})
}

// float checks lo < v <= hi, or lo <= v <= hi when closed; NaN fails both.
func (c *checker) float(field string, v, lo float64, closed bool, hi float64) {
	if (closed && v >= lo || !closed && v > lo) && v <= hi {
		return
	}
	open := "("
	if closed {
		open = "["
	}
	c.add(field, "%v out of range %s%v, %v]", v, open, lo, hi)
}

func (c *checker) int(field string, v, lo, hi int, zero string) {
	if v < lo || v > hi {
		c.add(field, "%d out of range [%d, %d]%s", v, lo, hi, zero)
	}
}

func (c *checker) duration(field string, v, lo, hi time.Duration) {
	if v < lo || v > hi {
		c.add(field, "%v out of range [%v, %v]", v, lo, hi)
	}
}

// optionalRate checks a rate that is 0 (what zero means is said) or in
// [minRate, maxRate].
func (c *checker) optionalRate(field string, v float64, zero string) {
	if v == 0 || v >= minRate && v <= maxRate {
		return
	}
	c.add(field, "%v out of range: 0 (%s) or [%v, %v]", v, zero, minRate, float64(maxRate))
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
