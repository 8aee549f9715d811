package admission

import (
	"errors"
	"time"

	"github.com/startgate/startgate/internal/pressure"
)

// Sentinel errors. The server maps them to gRPC codes at its edge.
var (
	// ErrQueueFull: the bounded queue holds MaxQueue waiters already
	// (gRPC ResourceExhausted).
	ErrQueueFull = errors.New("admission: queue full")
	// ErrDeadlineTooNear: the caller's deadline leaves less than the
	// configured margin and the deadline policy is refuse
	// (gRPC DeadlineExceeded).
	ErrDeadlineTooNear = errors.New("admission: deadline too near to wait for a start slot")
	// ErrClosed: the gate is shutting down (gRPC Unavailable).
	ErrClosed = errors.New("admission: gate is shutting down")
	// ErrInvalid wraps request and policy validation errors
	// (gRPC InvalidArgument); the message names the field.
	ErrInvalid = errors.New("admission: invalid")
)

// Request describes one start that wants a slot.
type Request struct {
	Class Class
	// Tenant groups requests for fairness within a class (a Kubernetes
	// namespace, say). Empty is a tenant of its own.
	Tenant string
	// Description says what is being started, for the queue listing and
	// events ("create container default/web-0/nginx").
	Description string
	// Hold caps how long the slot may be held before it is taken back;
	// zero means the class's default (Policy.MaxHold).
	Hold time.Duration
	// Deadline, when set, is the caller's deadline; otherwise the
	// context's deadline is used. The CRI proxy passes kubelet's.
	Deadline time.Time
	// OnQueued, if set, is called on the caller's goroutine, before
	// Acquire blocks, when the request has to wait; not at all when it is
	// decided at once. The server uses it to tell its client.
	OnQueued func(WaiterInfo)
}

// AdmitReason says why a lease was granted.
type AdmitReason string

const (
	AdmitGranted  AdmitReason = "granted"  // capacity was available
	AdmitBypass   AdmitReason = "bypass"   // critical class
	AdmitDeadline AdmitReason = "deadline" // the caller's deadline was near
	AdmitRestored AdmitReason = "restored" // held before a restart (Gate.Restore)
)

// ReleaseReason says why a lease ended.
type ReleaseReason string

const (
	ReleaseByHolder ReleaseReason = "released" // Release was called
	ReleaseExpired  ReleaseReason = "expired"  // the hold cap passed
	ReleaseShutdown ReleaseReason = "shutdown" // the gate closed
)

// Limits are what the controller sizes and the granter enforces.
type Limits struct {
	// InFlight is the most leases held at once (critical and deadline
	// admissions may exceed it; they are counted, never refused).
	InFlight int
	// Rate is the token refill rate in starts per second; Burst the
	// bucket's depth.
	Rate  float64
	Burst int
}

// ControllerState says what the controller did on its last tick.
type ControllerState string

const (
	StateIncrease ControllerState = "increase" // below target and the limit was binding
	StateDecrease ControllerState = "decrease" // a resource above its target
	StateSteady   ControllerState = "steady"   // below target, limit not binding
	StateRelax    ControllerState = "relax"    // idle: limits stepping back to neutral
	StateStatic   ControllerState = "static"   // no PSI: static fallback limits
	StateManual   ControllerState = "manual"   // an operator fixed both limits
)

// WaiterInfo is one queued request, for listings.
type WaiterInfo struct {
	ID          uint64
	Class       Class
	Tenant      string
	Description string
	Enqueued    time.Time
	// Deadline is the caller's deadline, zero if none.
	Deadline time.Time
	// Position is the 1-based position in the queue listing
	// (class order, then arrival).
	Position int
}

// LeaseInfo is one held lease, for listings.
type LeaseInfo struct {
	ID          uint64
	Class       Class
	Tenant      string
	Description string
	Granted     time.Time
	Expires     time.Time
	Reason      AdmitReason
	Waited      time.Duration
}

// Status is a snapshot of the gate.
type Status struct {
	Limits   Limits
	Tokens   float64
	InFlight int
	Queued   int
	// QueuedByClass is indexed by Class.
	QueuedByClass [numClasses]int
	Paused        bool
	Draining      bool
	Bypassed      bool
	State         ControllerState
	// Pressure is the last sample the controller used.
	Pressure pressure.Sample
	// PressureErr is set when PSI could not be read (the static fallback
	// is in force).
	PressureErr string
	Policy      Policy
	Counters    Counters
	// LastTick is when the controller last ran; zero before its first
	// tick. A stale LastTick means the controller is stuck and the limits
	// are frozen where they were (the gate still admits).
	LastTick time.Time
	Cores    int
}

// Counters are cumulative since the gate started.
type Counters struct {
	Admitted         uint64 // all grants, any reason
	DeadlineAdmitted uint64
	Bypassed         uint64
	Refused          uint64 // queue full, deadline refused
	Cancelled        uint64 // waiter's context ended in the queue
	Expired          uint64 // leases taken back at their hold cap
}

// Policy is the runtime-adjustable behaviour of the gate. Zero fields in
// a PolicyUpdate leave the current value.
type Policy struct {
	// Targets are the stall fractions (0..1) of PSI "some" above which the
	// controller decreases the limits, per resource.
	Targets pressure.Values
	// Per-core floor and ceiling of the in-flight limit and of the rate;
	// the floor is never below one start in flight and a positive rate.
	MinInFlightPerCore float64
	MaxInFlightPerCore float64
	MinRatePerCore     float64
	MaxRatePerCore     float64
	Burst              int
	// DecreaseFactor multiplies the limits when a resource is above its
	// target (0 < f < 1); IncreaseStep adds in-flight slots (and
	// RateStep starts per second) per interval while below target and
	// binding.
	DecreaseFactor float64
	// DecreaseEvery: the limits decrease at most once per this long, so
	// that a decrease shows in the pressure before the next; 0 decreases
	// on every interval a resource is above target.
	DecreaseEvery time.Duration
	IncreaseStep  int
	RateStep      float64
	// GrowBelow is the fraction of each target under which a binding
	// limit grows, in (0, 1]; between it and the target the limits hold.
	// The band keeps a saturated node's limit from sawing between its
	// floor and its ceiling; 1 grows right up to the target.
	GrowBelow float64
	// DoubleBelow, when positive, is the fraction of each target under
	// which a binding in-flight limit doubles per interval instead of
	// growing by IncreaseStep (TCP's slow start: a node with room, its
	// CPU and disk idle while starts wait, reaches the concurrency it can
	// take in a few intervals, not one slot a second); in [0, GrowBelow].
	// 0 leaves growth additive.
	DoubleBelow float64
	// FixedInFlight and FixedRate pin a limit (the controller leaves it
	// alone); zero means controlled.
	FixedInFlight int
	FixedRate     float64
	// StaticInFlight and StaticRate are used when PSI is unavailable.
	StaticInFlight int
	StaticRate     float64
	// DeadlineMargin: a waiter whose deadline is within this margin is
	// admitted (or refused, if DeadlineRefuse) instead of waiting on.
	DeadlineMargin time.Duration
	DeadlineRefuse bool
	// Aging: a waiter counts as one class better per Aging it has waited
	// longer than another, so no class starves.
	Aging time.Duration
	// MaxHold is the default hold cap of a lease.
	MaxHold  time.Duration
	MaxQueue int
}

// EventType names what happened.
type EventType string

const (
	EventQueued    EventType = "queued"
	EventGranted   EventType = "granted" // Reason says why
	EventReleased  EventType = "released"
	EventExpired   EventType = "expired"
	EventCancelled EventType = "cancelled"
	EventRefused   EventType = "refused"
	EventLimits    EventType = "limits" // the controller or an operator changed the limits
	EventPaused    EventType = "paused"
	EventResumed   EventType = "resumed"
	EventDraining  EventType = "draining"
	EventShutdown  EventType = "shutdown"
	EventPolicy    EventType = "policy"     // the policy was changed
	EventBypassOn  EventType = "bypass-on"  // an operator turned the gate off
	EventBypassOff EventType = "bypass-off" // and back on
	// EventLost is delivered to a subscriber that fell behind; Lost says
	// how many events it missed.
	EventLost EventType = "lost"
)

// Event is one entry on the watch stream.
type Event struct {
	Seq         uint64
	Time        time.Time
	Type        EventType
	ID          uint64 // waiter or lease ID, when the event is about one
	Class       Class
	Tenant      string
	Description string
	Reason      string
	Waited      time.Duration
	// Snapshot of the gate after the event.
	InFlight int
	Queued   int
	Limits   Limits
	State    ControllerState
	Pressure pressure.Values
	Lost     uint64
}
