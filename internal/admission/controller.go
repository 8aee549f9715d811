package admission

import (
	"math"

	"github.com/startgate/startgate/internal/pressure"
)

// binding records which limit held a waiter back since the last tick: the
// controller raises only a limit that is actually binding, so an idle node
// does not drift to its ceiling and then admit a whole burst at once.
type binding struct {
	inFlight bool
	rate     bool
	// idle: nothing queued and nothing in flight at the tick.
	idle bool
}

// nextLimits is the controller's step, pure so that scenario tests drive it
// through the gate with a fake clock. Any resource above its target
// decreases both limits multiplicatively, at most once per
// Policy.DecreaseEvery (mayDecrease says whether that long has passed
// since the last decrease): a spike of pressure that lasts two ticks
// costs one step, not two, as TCP backs off once per round trip. In the
// band just under the targets (above GrowBelow of them) the limits hold,
// (with DoubleBelow set, far under them, below DoubleBelow of every
// target, a binding in-flight limit doubles instead),
// except that a binding limit below the neutral one climbs back toward
// it: a saturated burst runs at the neutral limits, and one spike must
// not leave it at the floor for the rest of the burst. Below the band a
// binding limit grows additively, and on an idle gate both limits relax
// toward the neutral limits a gate starts with (the static ones), a step
// per tick: a burst must start neither from the last burst's peak
// (admitting a dozen starts at once) nor from the trough its teardown
// left (pacing it at the floor). Limits stay within the policy's
// per-core floor and ceiling, and the floor admits at least one start at
// a positive rate, so the gate always makes progress. Pinned (fixed)
// limits are left as the operator set them.
func nextLimits(p Policy, b bounds, cur Limits, s pressure.Sample, bind binding, mayDecrease bool) (Limits, ControllerState) {
	next := cur
	next.Burst = b.burst
	state := StateSteady
	over, near, low := false, false, p.DoubleBelow > 0
	for _, r := range pressure.Resources {
		if !s.Present[r] {
			continue
		}
		if s.Some[r] > p.Targets[r] {
			over = true
		}
		if s.Some[r] >= p.GrowBelow*p.Targets[r] {
			near = true
		}
		if s.Some[r] >= p.DoubleBelow*p.Targets[r] {
			low = false
		}
	}
	neutralInFlight := min(max(b.staticInFlight, b.minInFlight), b.maxInFlight)
	neutralRate := math.Min(math.Max(b.staticRate, b.minRate), b.maxRate)
	switch {
	case over && !mayDecrease:
		// Decreased less than DecreaseEvery ago: that step has not had
		// time to show in the pressure yet.
	case over:
		state = StateDecrease
		// At least one slot less, so small limits still move; rounded, so
		// that one decrease of a small limit is not a halving (4 to 3, not 2).
		next.InFlight = min(cur.InFlight-1, int(math.Round(float64(cur.InFlight)*p.DecreaseFactor)))
		next.Rate = cur.Rate * p.DecreaseFactor
	case bind.idle:
		next.InFlight = stepToward(cur.InFlight, neutralInFlight, p.IncreaseStep)
		next.Rate = stepTowardF(cur.Rate, neutralRate, p.RateStep)
		if next.InFlight != cur.InFlight || next.Rate != cur.Rate {
			state = StateRelax
		}
	case near:
		// In the band under the target: hold. A node this busy is
		// absorbing what runs; more starts would only queue on it. But a
		// binding limit under the neutral one (a spike decreased it)
		// climbs back to it.
		if bind.inFlight && cur.InFlight < neutralInFlight {
			next.InFlight = min(cur.InFlight+p.IncreaseStep, neutralInFlight)
		}
		if bind.rate && cur.Rate < neutralRate {
			next.Rate = math.Min(cur.Rate+p.RateStep, neutralRate)
		}
		if next.InFlight != cur.InFlight || next.Rate != cur.Rate {
			state = StateIncrease
		}
	case bind.inFlight || bind.rate:
		state = StateIncrease
		if bind.inFlight {
			next.InFlight = cur.InFlight + p.IncreaseStep
			if low {
				next.InFlight = max(next.InFlight, 2*cur.InFlight)
			}
		}
		if bind.rate {
			next.Rate = cur.Rate + p.RateStep
		}
	}
	next.InFlight = min(max(next.InFlight, b.minInFlight), b.maxInFlight)
	next.Rate = math.Min(math.Max(next.Rate, b.minRate), b.maxRate)
	return pinned(p, next, state)
}

// stepToward moves v toward target by at most step.
func stepToward(v, target, step int) int {
	if v < target {
		return min(v+step, target)
	}
	return max(v-step, target)
}

// stepTowardF moves v toward target by at most step.
func stepTowardF(v, target, step float64) float64 {
	if v < target {
		return math.Min(v+step, target)
	}
	return math.Max(v-step, target)
}

// staticLimits are used while PSI cannot be read.
func staticLimits(p Policy, b bounds) (Limits, ControllerState) {
	return pinned(p, Limits{InFlight: b.staticInFlight, Rate: b.staticRate, Burst: b.burst}, StateStatic)
}

func pinned(p Policy, l Limits, state ControllerState) (Limits, ControllerState) {
	if p.FixedInFlight > 0 {
		l.InFlight = p.FixedInFlight
	}
	if p.FixedRate > 0 {
		l.Rate = p.FixedRate
	}
	if p.FixedInFlight > 0 && p.FixedRate > 0 {
		state = StateManual
	}
	return l, state
}
