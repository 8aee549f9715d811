package admission

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/startgate/startgate/internal/clock"
	"github.com/startgate/startgate/internal/pressure"
)

// PressureSampler is what the controller needs of the pressure package:
// *pressure.Sampler implements it.
type PressureSampler interface {
	Sample(now time.Time) (pressure.Sample, error)
}

var _ PressureSampler = (*pressure.Sampler)(nil)

// Observer receives every admission outcome; the metrics package
// implements it. Calls are made with the gate's lock held: they must be
// quick and must not call back into the gate.
type Observer interface {
	Admitted(c Class, reason AdmitReason, waited time.Duration)
	// Refused: reason is "queue-full", "deadline" or "shutdown".
	Refused(c Class, reason string)
	Cancelled(c Class, waited time.Duration)
	Released(c Class, reason ReleaseReason, held time.Duration)
}

// Config wires a Gate.
type Config struct {
	// Clock defaults to clock.Real.
	Clock  clock.Clock
	Logger *zap.Logger
	Policy Policy
	// Cores scales the per-core floors and ceilings; defaults to
	// runtime.NumCPU().
	Cores int
	// Interval is the controller's sample interval.
	Interval time.Duration
	// Pressure may be nil: the static fallback limits apply.
	Pressure PressureSampler
	// Observer may be nil.
	Observer Observer
}

// ErrUnknownLease: Release by ID of a lease that is not held.
var ErrUnknownLease = errors.New("admission: no such lease")

var _ = context.Background
