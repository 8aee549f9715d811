package fleet

import (
	"testing"
	"time"
)

// The wait between attempts starts at RetryMin and doubles up to
// RetryMax, each jittered ±50%.
func TestRetryWaits(t *testing.T) {
	b := &Budget{opts: BudgetOptions{RetryMin: 50 * time.Millisecond, RetryMax: 300 * time.Millisecond}}
	r := b.retry()
	want := []time.Duration{50, 100, 200, 300, 300, 300}
	for i, w := range want {
		if got := r.Step(); got != w*time.Millisecond {
			t.Errorf("wait %d = %v, want %v", i+1, got, w*time.Millisecond)
		}
	}
	lo, hi := time.Hour, time.Duration(0)
	for range 1000 {
		got := jitter(time.Second)
		if got < 500*time.Millisecond || got >= 1500*time.Millisecond {
			t.Fatalf("jitter(1s) = %v, want within [500ms, 1.5s)", got)
		}
		lo, hi = min(lo, got), max(hi, got)
	}
	// That a thousand draws all miss the outer tenth at one end has a
	// chance of 0.9^1000.
	if lo > 600*time.Millisecond || hi < 1400*time.Millisecond {
		t.Errorf("jitter(1s) over 1000 draws spans [%v, %v], want about [500ms, 1.5s)", lo, hi)
	}
}
