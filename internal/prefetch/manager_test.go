package prefetch

import (
	"errors"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	for _, tc := range []struct {
		failures int
		want     time.Duration
	}{
		{1, time.Second},
		{2, 2 * time.Second},
		{4, 8 * time.Second},
		{6, 30 * time.Second}, // capped
		{1000, 30 * time.Second},
	} {
		b := backoff(time.Second, 30*time.Second)
		var got time.Duration
		for range tc.failures {
			got = b.Step()
		}
		if got != tc.want {
			t.Errorf("backoff(1s, 30s) after %d failures = %v, want %v", tc.failures, got, tc.want)
		}
	}
}

// jittered spreads a wait over ±20%: never outside, and over the whole
// band (that a thousand draws all miss the outer 5% at one end has a
// chance of 0.875^1000).
func TestJittered(t *testing.T) {
	lo, hi := time.Hour, time.Duration(0)
	for range 1000 {
		got := jittered(time.Second)
		if got < 800*time.Millisecond || got >= 1200*time.Millisecond {
			t.Fatalf("jittered(1s) = %v, want within [800ms, 1.2s)", got)
		}
		lo, hi = min(lo, got), max(hi, got)
	}
	if lo > 850*time.Millisecond || hi < 1150*time.Millisecond {
		t.Errorf("jittered(1s) over 1000 draws spans [%v, %v], want about [800ms, 1.2s)", lo, hi)
	}
}

func TestTagRef(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      error
	}{
		{"app", "docker.io/library/app:latest", nil},
		{"127.0.0.1:5000/app:1", "127.0.0.1:5000/app:1", nil},
		{"127.0.0.1:5000/app@sha256:" + zeros64, "", ErrNotTag},
	} {
		got, err := tagRef(tc.in)
		if got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("tagRef(%q) = %q, %v; want %q, %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

const zeros64 = "0000000000000000000000000000000000000000000000000000000000000000"
