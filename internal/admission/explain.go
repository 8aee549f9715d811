package admission

import (
	"fmt"
	"strings"

	"github.com/startgate/startgate/internal/pressure"
)

// Explain says, in a sentence for the pod's owner, why the queued request
// with this description waits: its class and place in the queue, the
// slots in use against the limit, and what holds the limit where it is.
// ok is false when no queued request has that description. It takes the
// gate's lock twice (Queue, then Status): the two views may be a moment
// apart, which a message read by a person tolerates.
func (g *Gate) Explain(description string) (msg string, ok bool) {
	q := g.Queue()
	var w *WaiterInfo
	for i := range q {
		if q[i].Description == description {
			w = &q[i]
			break
		}
	}
	if w == nil {
		return "", false
	}
	return explain(*w, len(q), g.Status()), true
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
