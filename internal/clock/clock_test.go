package clock

import (
	"testing"
	"time"
)

func TestManualFiresInTimeOrder(t *testing.T) {
	start := time.Unix(1000, 0)
	m := NewManual(start)
	var got []string
	m.AfterFunc(3*time.Second, func() { got = append(got, "c@"+m.Now().Sub(start).String()) })
	m.AfterFunc(1*time.Second, func() {
		got = append(got, "a@"+m.Now().Sub(start).String())
		// A callback may schedule another timer that falls due in the same Advance.
		m.AfterFunc(time.Second, func() { got = append(got, "b@"+m.Now().Sub(start).String()) })
	})
	stopped := m.AfterFunc(2500*time.Millisecond, func() { got = append(got, "never") })
	if !stopped.Stop() {
		t.Fatalf("Stop() = false, want true for a pending timer")
	}
	m.Advance(5 * time.Second)
	want := []string{"a@1s", "b@2s", "c@3s"}
	if len(got) != len(want) {
		t.Fatalf("fired %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("fired %v, want %v", got, want)
		}
	}
	if now := m.Now().Sub(start); now != 5*time.Second {
		t.Fatalf("Now after Advance(5s) = %v, want 5s", now)
	}
}

func TestManualTickerDropsMissedTicks(t *testing.T) {
	m := NewManual(time.Unix(0, 0))
	tk := m.NewTicker(time.Second)
	m.Advance(3500 * time.Millisecond)
	select {
	case at := <-tk.C():
		if at != time.Unix(1, 0) {
			t.Fatalf("first tick at %v, want %v (later ticks are dropped while unread)", at, time.Unix(1, 0))
		}
	default:
		t.Fatalf("no tick after advancing 3.5 intervals")
	}
	select {
	case at := <-tk.C():
		t.Fatalf("second buffered tick %v, want none", at)
	default:
	}
	tk.Stop()
	if n := m.Pending(); n != 0 {
		t.Fatalf("Pending() after Stop = %d, want 0", n)
	}
}
