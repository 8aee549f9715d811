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
		if got := backoff(time.Second, 30*time.Second, tc.failures); got != tc.want {
			t.Errorf("backoff(1s, 30s, %d) = %v, want %v", tc.failures, got, tc.want)
		}
	}
}

func TestJittered(t *testing.T) {
	for _, tc := range []struct {
		r    float64
		want time.Duration
	}{
		{0, 800 * time.Millisecond},
		{0.5, time.Second},
		{0.999, 1199600 * time.Microsecond},
	} {
		m := &Manager{rand: func() float64 { return tc.r }}
		if got := m.jittered(time.Second); got != tc.want {
			t.Errorf("jittered(1s) with rand %v = %v, want %v", tc.r, got, tc.want)
		}
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
