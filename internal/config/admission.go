package config

import (
	"github.com/startgate/startgate/internal/admission"
	"github.com/startgate/startgate/internal/pressure"
)

// Admission is the [admission] section.
type Admission struct {
	MaxQueue       int      `toml:"max_queue"`
	DeadlineMargin Duration `toml:"deadline_margin"`
	// OnDeadline is admit or refuse: what happens to a waiter whose
	// deadline comes within DeadlineMargin.
	OnDeadline string   `toml:"on_deadline"`
	Aging      Duration `toml:"aging"`
	MaxHold    Duration `toml:"max_hold"`
	Targets    Targets  `toml:"targets"`
	Limits     Limits   `toml:"limits"`
}

// Targets is [admission.targets]: PSI "some" stall fractions above which
// the controller backs off.
type Targets struct {
	CPU    float64 `toml:"cpu"`
	IO     float64 `toml:"io"`
	Memory float64 `toml:"memory"`
}

// Limits is [admission.limits].
type Limits struct {
	MinInFlightPerCore float64 `toml:"min_inflight_per_core"`
	MaxInFlightPerCore float64 `toml:"max_inflight_per_core"`
	MinRatePerCore     float64 `toml:"min_rate_per_core"`
	MaxRatePerCore     float64 `toml:"max_rate_per_core"`
	// Burst is the token bucket's depth; 0 is one per core.
	Burst          int     `toml:"burst"`
	DecreaseFactor float64 `toml:"decrease_factor"`
	// DecreaseEvery: at most one decrease per this long.
	DecreaseEvery Duration `toml:"decrease_every"`
	// GrowBelow: limits grow only while every resource is under this
	// fraction of its target; between it and the target they hold.
	GrowBelow float64 `toml:"grow_below"`
	// DoubleBelow: below this fraction of every target a binding
	// in-flight limit doubles; 0 is off.
	DoubleBelow  float64 `toml:"double_below"`
	IncreaseStep int     `toml:"increase_step"`
	RateStep     float64 `toml:"rate_step"`
	// InFlight and Rate pin a limit; 0 leaves it to the controller.
	InFlight int     `toml:"inflight"`
	Rate     float64 `toml:"rate"`
	// StaticInFlight and StaticRate apply without PSI; 0 is 2 in flight
	// and 5 starts per second per core.
	StaticInFlight int     `toml:"static_inflight"`
	StaticRate     float64 `toml:"static_rate"`
}

// defaultAdmission is the [admission] section of a node with no config
// file: admission.DefaultPolicy, so that a daemon configured with nothing
// behaves like a gate configured with nothing.
func defaultAdmission() Admission {
	p := admission.DefaultPolicy()
	onDeadline := "admit"
	if p.DeadlineRefuse {
		onDeadline = "refuse"
	}
	return Admission{
		MaxQueue:       p.MaxQueue,
		DeadlineMargin: Duration(p.DeadlineMargin),
		OnDeadline:     onDeadline,
		Aging:          Duration(p.Aging),
		MaxHold:        Duration(p.MaxHold),
		Targets: Targets{
			CPU:    p.Targets[pressure.CPU],
			IO:     p.Targets[pressure.IO],
			Memory: p.Targets[pressure.Memory],
		},
		Limits: Limits{
			MinInFlightPerCore: p.MinInFlightPerCore,
			MaxInFlightPerCore: p.MaxInFlightPerCore,
			MinRatePerCore:     p.MinRatePerCore,
			MaxRatePerCore:     p.MaxRatePerCore,
			Burst:              p.Burst,
			DecreaseFactor:     p.DecreaseFactor,
			DecreaseEvery:      Duration(p.DecreaseEvery),
			GrowBelow:          p.GrowBelow,
			DoubleBelow:        p.DoubleBelow,
			IncreaseStep:       p.IncreaseStep,
			RateStep:           p.RateStep,
			InFlight:           p.FixedInFlight,
			Rate:               p.FixedRate,
			StaticInFlight:     p.StaticInFlight,
			StaticRate:         p.StaticRate,
		},
	}
}

var admissionDocs = map[string]string{
	"admission":                              "How starts are queued and admitted.",
	"admission.max_queue":                    "Most waiters queued at once; more are refused (ResourceExhausted).",
	"admission.deadline_margin":              "A waiter whose deadline is this close is admitted or refused (on_deadline)\ninstead of waiting on.",
	"admission.on_deadline":                  "admit or refuse a waiter whose deadline comes within deadline_margin.",
	"admission.aging":                        "A waiting class is promoted one step per aging waited, so none starves.",
	"admission.max_hold":                     "Default cap on how long a lease is held before it is taken back.",
	"admission.targets":                      "PSI \"some\" stall fractions, (0, 1], above which the controller backs off.",
	"admission.targets.cpu":                  "",
	"admission.targets.io":                   "",
	"admission.targets.memory":               "",
	"admission.limits":                       "Bounds and steps of the in-flight limit and the start rate, per core.",
	"admission.limits.min_inflight_per_core": "Floor of the in-flight limit (never below one start).",
	"admission.limits.max_inflight_per_core": "Ceiling of the in-flight limit.",
	"admission.limits.min_rate_per_core":     "Floor of the start rate, starts per second.",
	"admission.limits.max_rate_per_core":     "Ceiling of the start rate, starts per second.",
	"admission.limits.burst":                 "Token bucket depth; 0 is one per core.",
	"admission.limits.decrease_factor":       "Limits are multiplied by this when a resource is above target, (0, 1).",
	"admission.limits.decrease_every":        "At most one decrease per this long, [0s, 1m]: a spike over the target costs one\nstep, not one per interval (0 decreases every interval).",
	"admission.limits.grow_below":            "Limits grow only while every resource is under this fraction of its target,\n(0, 1]; between it and the target they hold.",
	"admission.limits.double_below": "Below this fraction of every target, a binding in-flight limit doubles per\n" +
		"interval instead of growing by increase_step (slow start), in [0, grow_below];\n0 is off.",
	"admission.limits.increase_step":   "In-flight slots added per interval while below target and the limit binds.",
	"admission.limits.rate_step":       "Starts per second added per interval while below target and the rate binds.",
	"admission.limits.inflight":        "Pin the in-flight limit; 0 leaves it to the controller.",
	"admission.limits.rate":            "Pin the start rate; 0 leaves it to the controller.",
	"admission.limits.static_inflight": "In-flight limit without PSI; 0 is 2 per core.",
	"admission.limits.static_rate":     "Start rate without PSI; 0 is 5 per core.",
}

// validate checks the [admission] section: on_deadline here, every other
// value by the gate's own ranges (admission.Policy.Check), so that the
// config file, `startgated config check` and `startgatectl set` accept the
// same values.
func (a Admission) validate() []error {
	var errs problems
	switch a.OnDeadline {
	case "admit", "refuse":
	default:
		errs.add("admission.on_deadline", "%q not one of admit, refuse", a.OnDeadline)
	}
	for _, fe := range a.policy().Check() {
		errs.add("admission."+fe.Field, "%s", fe.Problem)
	}
	return errs
}

// Policy maps the admission section onto the gate's policy.
func (c *Config) Policy() admission.Policy { return c.Admission.policy() }

func (a Admission) policy() admission.Policy {
	return admission.Policy{
		Targets: pressure.Values{
			pressure.CPU:    a.Targets.CPU,
			pressure.IO:     a.Targets.IO,
			pressure.Memory: a.Targets.Memory,
		},
		MinInFlightPerCore: a.Limits.MinInFlightPerCore,
		MaxInFlightPerCore: a.Limits.MaxInFlightPerCore,
		MinRatePerCore:     a.Limits.MinRatePerCore,
		MaxRatePerCore:     a.Limits.MaxRatePerCore,
		Burst:              a.Limits.Burst,
		DecreaseFactor:     a.Limits.DecreaseFactor,
		DecreaseEvery:      a.Limits.DecreaseEvery.Std(),
		GrowBelow:          a.Limits.GrowBelow,
		DoubleBelow:        a.Limits.DoubleBelow,
		IncreaseStep:       a.Limits.IncreaseStep,
		RateStep:           a.Limits.RateStep,
		FixedInFlight:      a.Limits.InFlight,
		FixedRate:          a.Limits.Rate,
		StaticInFlight:     a.Limits.StaticInFlight,
		StaticRate:         a.Limits.StaticRate,
		DeadlineMargin:     a.DeadlineMargin.Std(),
		DeadlineRefuse:     a.OnDeadline == "refuse",
		Aging:              a.Aging.Std(),
		MaxHold:            a.MaxHold.Std(),
		MaxQueue:           a.MaxQueue,
	}
}
