package admission

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/startgate/startgate/internal/pressure"
)

func TestExplainWhy(t *testing.T) {
	w := WaiterInfo{Class: Normal, Position: 3}
	base := Status{InFlight: 4, Limits: Limits{InFlight: 4, Rate: 10}, Tokens: 3, State: StateSteady}
	base.Policy.Targets = pressure.Values{0.5, 0.5, 0.5}
	for _, tc := range []struct {
		name string
		edit func(*Status)
		want string
	}{
		{"at the limit", func(*Status) {}, "class normal, 3rd of 12 queued; 4 of 4 start slots in use; the node is starting as many as its limit of 4 allows"},
		{"paused", func(s *Status) { s.Paused = true }, "an operator paused the gate (startgatectl resume ends it)"},
		{"draining", func(s *Status) { s.Paused, s.Draining = true, true }, "an operator is draining the gate"},
		{"pinned", func(s *Status) { s.State = StateManual }, "an operator pinned the limit at 4"},
		{"pressure", func(s *Status) {
			s.State = StateDecrease
			s.Pressure.Present = [3]bool{true, true, true}
			s.Pressure.Some = pressure.Values{0.71, 0.1, 0}
		}, "the limit is lowered: cpu pressure 0.71 above its target 0.50"},
		{"paced", func(s *Status) { s.InFlight, s.Tokens = 2, 0.2 }, "starts are paced at 10.0 a second"},
		{"static", func(s *Status) { s.State, s.PressureErr = StateStatic, "no PSI" }, "the static limit of 4 holds (no PSI)"},
	} {
		st := base
		tc.edit(&st)
		if got := explain(w, 12, st); !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want it to contain %q", tc.name, got, tc.want)
		}
	}
}

func TestOrdinal(t *testing.T) {
	for n, want := range map[int]string{1: "1st", 2: "2nd", 3: "3rd", 4: "4th", 11: "11th", 12: "12th", 13: "13th", 21: "21st", 102: "102nd", 111: "111th"} {
		if got := ordinal(n); got != want {
			t.Errorf("ordinal(%d) = %q, want %q", n, got, want)
		}
	}
}

// Explain finds a queued request by its description, on a real gate.
func TestExplainOnGate(t *testing.T) {
	p := DefaultPolicy()
	p.FixedInFlight, p.FixedRate, p.Burst = 1, 1000, 100
	g, err := New(Config{Policy: p, Cores: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	held, err := g.Acquire(context.Background(), Request{Class: Normal, Description: "first"})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _, _ = g.Acquire(ctx, Request{Class: High, Description: "start pod default/web-1"}) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		msg, ok := g.Explain("start pod default/web-1", "nobody")["start pod default/web-1"]
		if ok {
			if want := "class high, 1st of 1 queued; 1 of 1 start slots in use; an operator pinned the limit at 1"; !strings.HasPrefix(msg, want) {
				t.Errorf("Explain = %q, want it to start %q", msg, want)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the second request never showed in Explain")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := g.Explain("nobody"); len(got) != 0 {
		t.Errorf("Explain of a description nobody queued = %v, want none", got)
	}
}
