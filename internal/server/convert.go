package server

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/startgate/startgate/internal/admission"
	"github.com/startgate/startgate/internal/pressure"
	pb "github.com/startgate/startgate/proto/startgate/v1"
)

// The proto enum is the admission class shifted by one, so that the zero
// value can mean "unspecified" (normal).

func classFromProto(c pb.Class) (admission.Class, bool) {
	if c == pb.Class_CLASS_UNSPECIFIED {
		return admission.Normal, true
	}
	ac := admission.Class(c - 1)
	return ac, ac.Valid() && c > 0
}

// ClassToProto converts an admission class to the API enum.
func ClassToProto(c admission.Class) pb.Class { return pb.Class(c + 1) }

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func dur(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

func statusToProto(st admission.Status, cores int) *pb.StatusResponse {
	out := &pb.StatusResponse{
		InFlight:        int32(st.InFlight),
		InFlightLimit:   int32(st.Limits.InFlight),
		Rate:            st.Limits.Rate,
		Burst:           int32(st.Limits.Burst),
		Tokens:          st.Tokens,
		QueueLength:     int32(st.Queued),
		Paused:          st.Paused,
		Draining:        st.Draining,
		Bypassed:        st.Bypassed,
		ControllerState: string(st.State),
		Pressure:        pressureToProto(st.Pressure),
		PressureError:   st.PressureErr,
		Counters: &pb.Counters{
			Admitted:         st.Counters.Admitted,
			DeadlineAdmitted: st.Counters.DeadlineAdmitted,
			Bypassed:         st.Counters.Bypassed,
			Refused:          st.Counters.Refused,
			Cancelled:        st.Counters.Cancelled,
			Expired:          st.Counters.Expired,
		},
		Policy: policyToProto(st.Policy),
		Cores:  int32(cores),
	}
	for _, c := range admission.Classes {
		out.QueuedByClass = append(out.QueuedByClass, &pb.ClassCount{Class: ClassToProto(c), Count: int32(st.QueuedByClass[c])})
	}
	return out
}

func pressureToProto(s pressure.Sample) *pb.Pressure {
	rp := func(r pressure.Resource) *pb.ResourcePressure {
		return &pb.ResourcePressure{Smoothed: s.Some[r], Raw: s.Raw[r], Present: s.Present[r]}
	}
	return &pb.Pressure{Time: ts(s.Time), Cpu: rp(pressure.CPU), Io: rp(pressure.IO), Memory: rp(pressure.Memory)}
}

func policyToProto(p admission.Policy) *pb.Policy {
	od := pb.OnDeadline_ON_DEADLINE_ADMIT
	if p.DeadlineRefuse {
		od = pb.OnDeadline_ON_DEADLINE_REFUSE
	}
	return &pb.Policy{
		CpuTarget:          p.Targets[pressure.CPU],
		IoTarget:           p.Targets[pressure.IO],
		MemoryTarget:       p.Targets[pressure.Memory],
		MinInFlightPerCore: p.MinInFlightPerCore,
		MaxInFlightPerCore: p.MaxInFlightPerCore,
		MinRatePerCore:     p.MinRatePerCore,
		MaxRatePerCore:     p.MaxRatePerCore,
		Burst:              int32(p.Burst),
		DecreaseFactor:     p.DecreaseFactor,
		IncreaseStep:       int32(p.IncreaseStep),
		RateStep:           p.RateStep,
		FixedInFlight:      int32(p.FixedInFlight),
		FixedRate:          p.FixedRate,
		StaticInFlight:     int32(p.StaticInFlight),
		StaticRate:         p.StaticRate,
		DeadlineMargin:     dur(p.DeadlineMargin),
		OnDeadline:         od,
		Aging:              dur(p.Aging),
		MaxHold:            dur(p.MaxHold),
		MaxQueue:           int32(p.MaxQueue),
	}
}

// applyPolicy copies the set fields of req onto p. Validation of the
// result is the gate's (UpdatePolicy); this only rejects what cannot be
// converted.
func applyPolicy(req *pb.SetPolicyRequest, p *admission.Policy) error {
	if req.Auto {
		p.FixedInFlight, p.FixedRate = 0, 0
	}
	if req.InFlight != nil {
		p.FixedInFlight = int(*req.InFlight)
	}
	if req.Rate != nil {
		p.FixedRate = *req.Rate
	}
	if req.CpuTarget != nil {
		p.Targets[pressure.CPU] = *req.CpuTarget
	}
	if req.IoTarget != nil {
		p.Targets[pressure.IO] = *req.IoTarget
	}
	if req.MemoryTarget != nil {
		p.Targets[pressure.Memory] = *req.MemoryTarget
	}
	if req.MinInFlightPerCore != nil {
		p.MinInFlightPerCore = *req.MinInFlightPerCore
	}
	if req.MaxInFlightPerCore != nil {
		p.MaxInFlightPerCore = *req.MaxInFlightPerCore
	}
	if req.MinRatePerCore != nil {
		p.MinRatePerCore = *req.MinRatePerCore
	}
	if req.MaxRatePerCore != nil {
		p.MaxRatePerCore = *req.MaxRatePerCore
	}
	if req.Burst != nil {
		p.Burst = int(*req.Burst)
	}
	for _, d := range []struct {
		name string
		v    *durationpb.Duration
		dst  *time.Duration
	}{
		{"deadline_margin", req.DeadlineMargin, &p.DeadlineMargin},
		{"aging", req.Aging, &p.Aging},
		{"max_hold", req.MaxHold, &p.MaxHold},
	} {
		if d.v == nil {
			continue
		}
		if err := d.v.CheckValid(); err != nil {
			return invalid(d.name, "%v", err)
		}
		*d.dst = d.v.AsDuration()
	}
	switch req.OnDeadline {
	case pb.OnDeadline_ON_DEADLINE_UNSPECIFIED:
	case pb.OnDeadline_ON_DEADLINE_ADMIT:
		p.DeadlineRefuse = false
	case pb.OnDeadline_ON_DEADLINE_REFUSE:
		p.DeadlineRefuse = true
	default:
		return invalid("on_deadline", "unknown value %d", req.OnDeadline)
	}
	if req.MaxQueue != nil {
		p.MaxQueue = int(*req.MaxQueue)
	}
	return nil
}

func waiterToProto(w admission.WaiterInfo) *pb.Waiter {
	return &pb.Waiter{
		Id:          w.ID,
		Class:       ClassToProto(w.Class),
		Tenant:      w.Tenant,
		Description: w.Description,
		Enqueued:    ts(w.Enqueued),
		Deadline:    ts(w.Deadline),
		Position:    int32(w.Position),
	}
}

func leaseToProto(l admission.LeaseInfo) *pb.Lease {
	return &pb.Lease{
		Id:          l.ID,
		Class:       ClassToProto(l.Class),
		Tenant:      l.Tenant,
		Description: l.Description,
		Granted:     ts(l.Granted),
		Expires:     ts(l.Expires),
		Reason:      string(l.Reason),
		Waited:      dur(l.Waited),
	}
}

var eventTypes = map[admission.EventType]pb.EventType{
	admission.EventQueued:    pb.EventType_EVENT_TYPE_QUEUED,
	admission.EventGranted:   pb.EventType_EVENT_TYPE_GRANTED,
	admission.EventReleased:  pb.EventType_EVENT_TYPE_RELEASED,
	admission.EventExpired:   pb.EventType_EVENT_TYPE_EXPIRED,
	admission.EventCancelled: pb.EventType_EVENT_TYPE_CANCELLED,
	admission.EventRefused:   pb.EventType_EVENT_TYPE_REFUSED,
	admission.EventLimits:    pb.EventType_EVENT_TYPE_LIMITS,
	admission.EventPaused:    pb.EventType_EVENT_TYPE_PAUSED,
	admission.EventResumed:   pb.EventType_EVENT_TYPE_RESUMED,
	admission.EventDraining:  pb.EventType_EVENT_TYPE_DRAINING,
	admission.EventShutdown:  pb.EventType_EVENT_TYPE_SHUTDOWN,
	admission.EventBypassOn:  pb.EventType_EVENT_TYPE_BYPASS_ON,
	admission.EventBypassOff: pb.EventType_EVENT_TYPE_BYPASS_OFF,
	admission.EventLost:      pb.EventType_EVENT_TYPE_LOST,
}

// eventToProto converts an event. A type the enum lacks (admission grew
// one before the proto did) goes out as EVENT_TYPE_UNSPECIFIED with its
// name in type_name, which every event carries: watchers still see what
// happened.
func eventToProto(e admission.Event) *pb.Event {
	return &pb.Event{
		Seq:             e.Seq,
		Time:            ts(e.Time),
		Type:            eventTypes[e.Type],
		TypeName:        string(e.Type),
		Id:              e.ID,
		Class:           ClassToProto(e.Class),
		Tenant:          e.Tenant,
		Description:     e.Description,
		Reason:          e.Reason,
		Waited:          dur(e.Waited),
		InFlight:        int32(e.InFlight),
		QueueLength:     int32(e.Queued),
		InFlightLimit:   int32(e.Limits.InFlight),
		Rate:            e.Limits.Rate,
		Burst:           int32(e.Limits.Burst),
		ControllerState: string(e.State),
		CpuPressure:     e.Pressure[pressure.CPU],
		IoPressure:      e.Pressure[pressure.IO],
		MemoryPressure:  e.Pressure[pressure.Memory],
		Lost:            e.Lost,
	}
}
