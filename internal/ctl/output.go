package ctl

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	pb "github.com/startgate/startgate/proto/startgate/v1"
)

// The structs below are startgatectl's machine-readable interface. Keys
// are snake_case and stable; durations are Go duration strings, times
// RFC 3339.

// Status is `status -o json`.
type Status struct {
	InFlight        int            `json:"in_flight"`
	InFlightLimit   int            `json:"in_flight_limit"`
	Rate            float64        `json:"rate"`
	Burst           int            `json:"burst"`
	Tokens          float64        `json:"tokens"`
	QueueLength     int            `json:"queue_length"`
	QueueByClass    map[string]int `json:"queue_by_class"`
	Paused          bool           `json:"paused"`
	Draining        bool           `json:"draining"`
	Bypassed        bool           `json:"bypassed"`
	ControllerState string         `json:"controller_state"`
	Pressure        Pressure       `json:"pressure"`
	PressureError   string         `json:"pressure_error,omitempty"`
	Cores           int            `json:"cores"`
	Counters        Counters       `json:"counters"`
	Policy          Policy         `json:"policy"`
}

// Pressure is the PSI "some" stall fraction per resource.
type Pressure struct {
	CPU    ResourcePressure `json:"cpu"`
	IO     ResourcePressure `json:"io"`
	Memory ResourcePressure `json:"memory"`
}

// ResourcePressure is one resource's smoothed and raw stall fraction.
type ResourcePressure struct {
	Smoothed float64 `json:"smoothed"`
	Raw      float64 `json:"raw"`
	Present  bool    `json:"present"`
}

// Counters are cumulative since the daemon started.
type Counters struct {
	Admitted         uint64 `json:"admitted"`
	DeadlineAdmitted uint64 `json:"deadline_admitted"`
	Bypassed         uint64 `json:"bypassed"`
	Refused          uint64 `json:"refused"`
	Cancelled        uint64 `json:"cancelled"`
	Expired          uint64 `json:"expired"`
}

// Policy is the gate's runtime policy.
type Policy struct {
	Targets            map[string]float64 `json:"targets"`
	MinInFlightPerCore float64            `json:"min_in_flight_per_core"`
	MaxInFlightPerCore float64            `json:"max_in_flight_per_core"`
	MinRatePerCore     float64            `json:"min_rate_per_core"`
	MaxRatePerCore     float64            `json:"max_rate_per_core"`
	Burst              int                `json:"burst"`
	FixedInFlight      int                `json:"fixed_in_flight"`
	FixedRate          float64            `json:"fixed_rate"`
	DeadlineMargin     string             `json:"deadline_margin"`
	OnDeadline         string             `json:"on_deadline"`
	Aging              string             `json:"aging"`
	MaxHold            string             `json:"max_hold"`
	MaxQueue           int                `json:"max_queue"`
}

// Waiter is one entry of `queue -o json`.
type Waiter struct {
	ID          uint64     `json:"id"`
	Class       string     `json:"class"`
	Tenant      string     `json:"tenant"`
	Description string     `json:"description"`
	Enqueued    time.Time  `json:"enqueued"`
	Waited      string     `json:"waited"`
	Deadline    *time.Time `json:"deadline"`
	Position    int        `json:"position"`
}

// Lease is one entry of `leases -o json`.
type Lease struct {
	ID          uint64     `json:"id"`
	Class       string     `json:"class"`
	Tenant      string     `json:"tenant"`
	Description string     `json:"description"`
	Granted     time.Time  `json:"granted"`
	Expires     *time.Time `json:"expires"`
	Held        string     `json:"held"`
	Reason      string     `json:"reason"`
	Waited      string     `json:"waited"`
}

// Event is one line of `watch -o json`.
type Event struct {
	Seq           uint64    `json:"seq"`
	Time          time.Time `json:"time"`
	Type          string    `json:"type"`
	ID            uint64    `json:"id,omitempty"`
	Class         string    `json:"class,omitempty"`
	Tenant        string    `json:"tenant,omitempty"`
	Description   string    `json:"description,omitempty"`
	Reason        string    `json:"reason,omitempty"`
	Waited        string    `json:"waited,omitempty"`
	InFlight      int       `json:"in_flight"`
	InFlightLimit int       `json:"in_flight_limit"`
	QueueLength   int       `json:"queue_length"`
	Rate          float64   `json:"rate"`
	Lost          uint64    `json:"lost,omitempty"`
	// Prefetch is the watched reference a "prefetch" event is about; the
	// gate's fields are then zero.
	Prefetch *PrefetchEntry `json:"prefetch,omitempty"`
}

// className is the lower-case word an operator types.
func className(c pb.Class) string {
	if c == pb.Class_CLASS_UNSPECIFIED {
		return "normal"
	}
	s, ok := strings.CutPrefix(c.String(), "CLASS_")
	if !ok {
		return fmt.Sprintf("class(%d)", c)
	}
	return strings.ToLower(s)
}

// eventName is the daemon's own name of the event (type_name), or the
// enum's for a daemon too old to send one.
func eventName(e *pb.Event) string {
	if e.TypeName != "" {
		return e.TypeName
	}
	return strings.ToLower(strings.TrimPrefix(e.Type.String(), "EVENT_TYPE_"))
}

func durStr(d *durationpb.Duration) string {
	if d == nil {
		return "0s"
	}
	return roundDur(d.AsDuration()).String()
}

// roundDur keeps listings readable: milliseconds are enough for starts.
func roundDur(d time.Duration) time.Duration {
	if d > time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Microsecond)
}

func timePtr(t *timestamppb.Timestamp) *time.Time {
	if t == nil {
		return nil
	}
	v := t.AsTime().Local()
	return &v
}

func timeVal(t *timestamppb.Timestamp) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.AsTime().Local()
}

func statusOut(r *pb.StatusResponse) Status {
	out := Status{
		InFlight:        int(r.InFlight),
		InFlightLimit:   int(r.InFlightLimit),
		Rate:            r.Rate,
		Burst:           int(r.Burst),
		Tokens:          r.Tokens,
		QueueLength:     int(r.QueueLength),
		QueueByClass:    map[string]int{},
		Paused:          r.Paused,
		Draining:        r.Draining,
		Bypassed:        r.Bypassed,
		ControllerState: r.ControllerState,
		PressureError:   r.PressureError,
		Cores:           int(r.Cores),
		Policy:          policyOut(r.Policy),
	}
	for _, c := range r.QueuedByClass {
		out.QueueByClass[className(c.Class)] = int(c.Count)
	}
	rp := func(p *pb.ResourcePressure) ResourcePressure {
		return ResourcePressure{Smoothed: p.GetSmoothed(), Raw: p.GetRaw(), Present: p.GetPresent()}
	}
	out.Pressure = Pressure{CPU: rp(r.GetPressure().GetCpu()), IO: rp(r.GetPressure().GetIo()), Memory: rp(r.GetPressure().GetMemory())}
	if c := r.Counters; c != nil {
		out.Counters = Counters{Admitted: c.Admitted, DeadlineAdmitted: c.DeadlineAdmitted, Bypassed: c.Bypassed,
			Refused: c.Refused, Cancelled: c.Cancelled, Expired: c.Expired}
	}
	return out
}

func policyOut(p *pb.Policy) Policy {
	if p == nil {
		return Policy{}
	}
	od := "admit"
	if p.OnDeadline == pb.OnDeadline_ON_DEADLINE_REFUSE {
		od = "refuse"
	}
	return Policy{
		Targets:            map[string]float64{"cpu": p.CpuTarget, "io": p.IoTarget, "memory": p.MemoryTarget},
		MinInFlightPerCore: p.MinInFlightPerCore,
		MaxInFlightPerCore: p.MaxInFlightPerCore,
		MinRatePerCore:     p.MinRatePerCore,
		MaxRatePerCore:     p.MaxRatePerCore,
		Burst:              int(p.Burst),
		FixedInFlight:      int(p.FixedInFlight),
		FixedRate:          p.FixedRate,
		DeadlineMargin:     durStr(p.DeadlineMargin),
		OnDeadline:         od,
		Aging:              durStr(p.Aging),
		MaxHold:            durStr(p.MaxHold),
		MaxQueue:           int(p.MaxQueue),
	}
}

func waitersOut(ws []*pb.Waiter, now time.Time) []Waiter {
	out := make([]Waiter, 0, len(ws))
	for _, w := range ws {
		enq := timeVal(w.Enqueued)
		out = append(out, Waiter{
			ID: w.Id, Class: className(w.Class), Tenant: w.Tenant, Description: w.Description,
			Enqueued: enq, Waited: roundDur(max(0, now.Sub(enq))).String(), Deadline: timePtr(w.Deadline), Position: int(w.Position),
		})
	}
	return out
}

func leasesOut(ls []*pb.Lease, now time.Time) []Lease {
	out := make([]Lease, 0, len(ls))
	for _, l := range ls {
		g := timeVal(l.Granted)
		out = append(out, Lease{
			ID: l.Id, Class: className(l.Class), Tenant: l.Tenant, Description: l.Description,
			Granted: g, Expires: timePtr(l.Expires), Held: roundDur(max(0, now.Sub(g))).String(),
			Reason: l.Reason, Waited: durStr(l.Waited),
		})
	}
	return out
}

func eventOut(e *pb.Event) Event {
	out := Event{
		Seq: e.Seq, Time: timeVal(e.Time), Type: eventName(e), ID: e.Id,
		Tenant: e.Tenant, Description: e.Description, Reason: e.Reason,
		InFlight: int(e.InFlight), InFlightLimit: int(e.InFlightLimit), QueueLength: int(e.QueueLength), Rate: e.Rate, Lost: e.Lost,
	}
	if e.Id != 0 {
		out.Class = className(e.Class)
	}
	if d := e.Waited.AsDuration(); d > 0 {
		out.Waited = roundDur(d).String()
	}
	if e.Prefetch != nil {
		pe := prefetchOut([]*pb.PrefetchEntry{e.Prefetch})[0]
		out.Prefetch = &pe
	}
	return out
}

// writeWaitersJSON writes ws byte for byte as emit(w, "json", ws) does,
// about 8 times faster: `queue -o json` lists up to admission.max_queue
// waiters (10,000 by default), and MarshalIndent, reflection then a second
// pass to indent, was most of its run time. TestWriteWaitersJSON holds it
// to emit's output.
func writeWaitersJSON(w io.Writer, ws []Waiter) error {
	if len(ws) == 0 {
		_, err := io.WriteString(w, "[]\n")
		return err
	}
	b := make([]byte, 0, 64+len(ws)*320)
	b = append(b, "[\n"...)
	for i, x := range ws {
		b = append(b, "  {\n    \"id\": "...)
		b = strconv.AppendUint(b, x.ID, 10)
		b = append(b, ",\n    \"class\": "...)
		b = appendJSONString(b, x.Class)
		b = append(b, ",\n    \"tenant\": "...)
		b = appendJSONString(b, x.Tenant)
		b = append(b, ",\n    \"description\": "...)
		b = appendJSONString(b, x.Description)
		b = append(b, ",\n    \"enqueued\": "...)
		var err error
		if b, err = appendJSONTime(b, x.Enqueued); err != nil {
			return err
		}
		b = append(b, ",\n    \"waited\": "...)
		b = appendJSONString(b, x.Waited)
		b = append(b, ",\n    \"deadline\": "...)
		if x.Deadline == nil {
			b = append(b, "null"...)
		} else if b, err = appendJSONTime(b, *x.Deadline); err != nil {
			return err
		}
		b = append(b, ",\n    \"position\": "...)
		b = strconv.AppendInt(b, int64(x.Position), 10)
		b = append(b, "\n  }"...)
		if i < len(ws)-1 {
			b = append(b, ',')
		}
		b = append(b, '\n')
	}
	b = append(b, "]\n"...)
	_, err := w.Write(b)
	return err
}

// appendJSONString quotes s as encoding/json does. Printable ASCII that
// needs no escape is the common case; anything else goes to json.Marshal,
// which knows the rules (HTML escapes, U+2028, invalid UTF-8).
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendJSONTime is time.Time's MarshalJSON, without the allocation.
func appendJSONTime(b []byte, t time.Time) ([]byte, error) {
	if y := t.Year(); y < 0 || y > 9999 {
		return nil, fmt.Errorf("ctl: encode: time %v: year outside [0,9999]", t)
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"'), nil
}

// emit writes v as JSON or YAML; table output is the caller's.
func emit(w io.Writer, format string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("ctl: encode: %w", err)
	}
	if format == "yaml" {
		if b, err = yaml.JSONToYAML(b); err != nil {
			return fmt.Errorf("ctl: encode yaml: %w", err)
		}
		_, err = w.Write(b)
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// tableWriter buffers below the tabwriter, which writes cell by cell: on
// an unbuffered stdout that was one write(2) per cell, a third of a second
// for a 10,000-waiter queue.
type tableWriter struct {
	*tabwriter.Writer
	buf *bufio.Writer
}

func table(w io.Writer) tableWriter {
	buf := bufio.NewWriterSize(w, 64<<10)
	return tableWriter{Writer: tabwriter.NewWriter(buf, 0, 4, 2, ' ', 0), buf: buf}
}

// Flush writes the table out.
func (t tableWriter) Flush() error {
	if err := t.Writer.Flush(); err != nil {
		return err
	}
	return t.buf.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func writeStatusTable(w io.Writer, s Status) error {
	tw := table(w)
	state := "running"
	switch {
	case s.Bypassed:
		// Bypass overrides pause and drain: every start passes.
		state = "bypassed"
	case s.Draining:
		state = "draining"
	case s.Paused:
		state = "paused"
	}
	fmt.Fprintf(tw, "gate:\t%s\n", state)
	fmt.Fprintf(tw, "in flight:\t%d / %d\n", s.InFlight, s.InFlightLimit)
	fmt.Fprintf(tw, "rate:\t%.2f/s (burst %d, tokens %.2f)\n", s.Rate, s.Burst, s.Tokens)
	fmt.Fprintf(tw, "controller:\t%s\n", s.ControllerState)
	var byClass []string
	for _, c := range []string{"critical", "high", "normal", "low", "background"} {
		byClass = append(byClass, fmt.Sprintf("%s %d", c, s.QueueByClass[c]))
	}
	fmt.Fprintf(tw, "queue:\t%d (%s)\n", s.QueueLength, strings.Join(byClass, ", "))
	pr := func(p ResourcePressure) string {
		if !p.Present {
			return "n/a"
		}
		return fmt.Sprintf("%.3f (raw %.3f)", p.Smoothed, p.Raw)
	}
	fmt.Fprintf(tw, "pressure:\tcpu %s, io %s, memory %s\n", pr(s.Pressure.CPU), pr(s.Pressure.IO), pr(s.Pressure.Memory))
	if s.PressureError != "" {
		fmt.Fprintf(tw, "pressure error:\t%s\n", s.PressureError)
	}
	c := s.Counters
	fmt.Fprintf(tw, "counters:\tadmitted %d (deadline %d, bypass %d), refused %d, cancelled %d, expired %d\n",
		c.Admitted, c.DeadlineAdmitted, c.Bypassed, c.Refused, c.Cancelled, c.Expired)
	writePolicyRows(tw, s.Policy)
	return tw.Flush()
}

func writePolicyRows(tw io.Writer, p Policy) {
	fixed := func(v float64) string {
		if v == 0 {
			return "auto"
		}
		return fmt.Sprintf("fixed %g", v)
	}
	burst := "one per core"
	if p.Burst > 0 {
		burst = fmt.Sprint(p.Burst)
	}
	fmt.Fprintf(tw, "policy:\tin flight %s, rate %s, burst %s\n", fixed(float64(p.FixedInFlight)), fixed(p.FixedRate), burst)
	fmt.Fprintf(tw, "\ttargets cpu %g, io %g, memory %g\n", p.Targets["cpu"], p.Targets["io"], p.Targets["memory"])
	fmt.Fprintf(tw, "\tper core: in flight %g..%g, rate %g..%g\n", p.MinInFlightPerCore, p.MaxInFlightPerCore, p.MinRatePerCore, p.MaxRatePerCore)
	fmt.Fprintf(tw, "\tdeadline margin %s (%s), aging %s, max hold %s, max queue %d\n", p.DeadlineMargin, p.OnDeadline, p.Aging, p.MaxHold, p.MaxQueue)
}

func writeQueueTable(w io.Writer, ws []Waiter) error {
	tw := table(w)
	fmt.Fprintln(tw, "POS\tID\tCLASS\tTENANT\tWAITED\tDEADLINE\tDESCRIPTION")
	for _, x := range ws {
		dl := "-"
		if x.Deadline != nil {
			dl = x.Deadline.Format(time.TimeOnly)
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t%s\n", x.Position, x.ID, x.Class, orDash(x.Tenant), x.Waited, dl, orDash(x.Description))
	}
	return tw.Flush()
}

func writeLeasesTable(w io.Writer, ls []Lease) error {
	tw := table(w)
	fmt.Fprintln(tw, "ID\tCLASS\tTENANT\tHELD\tWAITED\tREASON\tEXPIRES\tDESCRIPTION")
	for _, l := range ls {
		exp := "-"
		if l.Expires != nil {
			exp = l.Expires.Format(time.TimeOnly)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", l.ID, l.Class, orDash(l.Tenant), l.Held, l.Waited, l.Reason, exp, orDash(l.Description))
	}
	return tw.Flush()
}

// eventLine is the one-line text form of an event.
func eventLine(e Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-9s", e.Time.Format("15:04:05.000"), e.Type)
	if p := e.Prefetch; p != nil {
		fmt.Fprintf(&b, " %s ref=%s state=%s running=%s new=%s", e.Reason, p.Reference, p.State, shortDigest(p.RunningDigest), shortDigest(p.NewDigest))
		if p.BytesTotal > 0 {
			fmt.Fprintf(&b, " progress=%q", progress(p.BytesDone, p.BytesTotal))
		}
		if p.PreviousDigest != "" {
			fmt.Fprintf(&b, " previous=%s", shortDigest(p.PreviousDigest))
		}
		if p.Error != "" {
			fmt.Fprintf(&b, " error=%q", p.Error)
		}
		return b.String()
	}
	if e.ID != 0 {
		fmt.Fprintf(&b, " id=%d class=%s", e.ID, e.Class)
	}
	if e.Tenant != "" {
		fmt.Fprintf(&b, " tenant=%s", e.Tenant)
	}
	if e.Description != "" {
		fmt.Fprintf(&b, " desc=%q", e.Description)
	}
	if e.Reason != "" {
		fmt.Fprintf(&b, " reason=%s", e.Reason)
	}
	if e.Waited != "" {
		fmt.Fprintf(&b, " waited=%s", e.Waited)
	}
	if e.Lost != 0 {
		fmt.Fprintf(&b, " lost=%d", e.Lost)
	}
	fmt.Fprintf(&b, " in_flight=%d/%d queued=%d rate=%.2f", e.InFlight, e.InFlightLimit, e.QueueLength, e.Rate)
	return b.String()
}

func jsonLine(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("ctl: encode: %w", err)
	}
	return append(b, '\n'), nil
}
