package admission

import (
	"fmt"
	"strings"

	"github.com/startgate/startgate/internal/pressure"
)

// Explain says, in a sentence for each pod's owner, why the queued
// requests with these descriptions wait: class and place in the queue,
// the slots in use against the limit, and what holds the limit where it
// is. A description no queued request has is not in the map. The queue
// and the status are read once for all (two takes of the gate's lock, a
// moment apart, which a message read by a person tolerates).
func (g *Gate) Explain(descriptions ...string) map[string]string {
	want := make(map[string]bool, len(descriptions))
	for _, d := range descriptions {
		want[d] = true
	}
	q := g.Queue()
	out := make(map[string]string)
	var st *Status
	for _, w := range q {
		if !want[w.Description] {
			continue
		}
		if st == nil {
			s := g.Status()
			st = &s
		}
		out[w.Description] = explain(w, len(q), *st)
	}
	return out
}

func explain(w WaiterInfo, queued int, st Status) string {
	var b strings.Builder
	fmt.Fprintf(&b, "class %s, %s of %d queued; %d of %d start slots in use; ", w.Class, ordinal(w.Position), queued, st.InFlight, st.Limits.InFlight)
	b.WriteString(why(st))
	return b.String()
}

// why names what holds the gate where it is.
func why(st Status) string {
	switch {
	case st.Draining:
		return "an operator is draining the gate (startgatectl resume ends it)"
	case st.Paused:
		return "an operator paused the gate (startgatectl resume ends it)"
	case st.State == StateManual:
		return fmt.Sprintf("an operator pinned the limit at %d (startgatectl set --auto unpins it)", st.Limits.InFlight)
	case st.State == StateStatic:
		return fmt.Sprintf("the node's pressure cannot be read, so the static limit of %d holds (%s)", st.Limits.InFlight, st.PressureErr)
	case st.State == StateDecrease:
		var over []string
		for _, r := range pressure.Resources {
			if st.Pressure.Present[r] && st.Pressure.Some[r] > st.Policy.Targets[r] {
				over = append(over, fmt.Sprintf("%s pressure %.2f above its target %.2f", r, st.Pressure.Some[r], st.Policy.Targets[r]))
			}
		}
		if len(over) == 0 {
			return "the limit was lowered for pressure above its target"
		}
		return "the limit is lowered: " + strings.Join(over, ", ")
	case st.InFlight < st.Limits.InFlight && st.Tokens < 1:
		return fmt.Sprintf("starts are paced at %.1f a second", st.Limits.Rate)
	default:
		return fmt.Sprintf("the node is starting as many as its limit of %d allows", st.Limits.InFlight)
	}
}

// ordinal is 1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, 21st.
func ordinal(n int) string {
	suffix := "th"
	switch n % 100 {
	case 11, 12, 13:
	default:
		switch n % 10 {
		case 1:
			suffix = "st"
		case 2:
			suffix = "nd"
		case 3:
			suffix = "rd"
		}
	}
	return fmt.Sprintf("%d%s", n, suffix)
}
