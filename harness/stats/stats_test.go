package stats

import (
	"math"
	"testing"
	"time"
)

func TestOf(t *testing.T) {
	e := Of([]float64{5, 1, 4, 2, 3})
	if e.N != 5 || e.Median != 3 || e.Min != 1 || e.Max != 5 {
		t.Fatalf("Of = %+v, want n 5, median 3, range 1–5", e)
	}
	if e.Lo < e.Min || e.Hi > e.Max || e.Lo > e.Median || e.Hi < e.Median {
		t.Errorf("interval [%v, %v] not inside the range around the median", e.Lo, e.Hi)
	}
	if again := Of([]float64{5, 1, 4, 2, 3}); again != e {
		t.Errorf("the same data gave %+v, then %+v: the interval must be reproducible", e, again)
	}
	if e := Of([]float64{2, 4}); e.Median != 3 {
		t.Errorf("median of 2 and 4 = %v, want 3", e.Median)
	}
	if e := Of(nil); e.N != 0 {
		t.Errorf("Of(nil) = %+v, want zero", e)
	}
	if e := Durations([]time.Duration{1500 * time.Millisecond}); e.Median != 1.5 || e.Lo != 1.5 || e.Hi != 1.5 {
		t.Errorf("one round of 1.5 s = %+v", e)
	}
}

func TestCompare(t *testing.T) {
	direct := []float64{10, 12, 9, 11, 10}
	for _, tt := range []struct {
		name string
		a    []float64
		want Verdict
	}{
		{"every round faster", []float64{5, 6, 5, 6, 5}, Better},
		{"every round slower", []float64{15, 18, 14, 16, 15}, Worse},
		{"faster in some rounds, slower in others", []float64{8, 14, 7, 13, 10}, Same},
		{"one round", []float64{5}, Unknown},
	} {
		c := Compare(tt.a, direct)
		if c.Verdict != tt.want {
			t.Errorf("%s: verdict %q (ratio %+v), want %q", tt.name, c.Verdict, c.Ratio, tt.want)
		}
	}
	// A round with no baseline figure is left out, not divided by zero.
	c := Compare([]float64{1, 2}, []float64{0, 4})
	if c.Ratio.N != 1 || c.Ratio.Median != 0.5 || math.IsInf(c.Ratio.Max, 0) {
		t.Errorf("Compare with a zero baseline = %+v", c.Ratio)
	}
}

func TestQuantile(t *testing.T) {
	s := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, tt := range []struct{ q, want float64 }{{0, 1}, {0.5, 5}, {0.9, 9}, {0.99, 10}, {1, 10}} {
		if got := Quantile(s, tt.q); got != tt.want {
			t.Errorf("Quantile(1..10, %v) = %v, want %v", tt.q, got, tt.want)
		}
	}
	if !math.IsNaN(Quantile(nil, 0.5)) {
		t.Error("Quantile of nothing is not NaN")
	}
}
