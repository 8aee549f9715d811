package testbed

import (
	"testing"
	"time"
)

func TestMostAtOnce(t *testing.T) {
	at := func(s int) time.Time { return time.Unix(int64(s), 0) }
	for _, tt := range []struct {
		spans []Span
		want  int
	}{
		{nil, 0},
		{[]Span{{at(0), at(2)}, {at(2), at(4)}, {at(4), at(6)}}, 1},
		{[]Span{{at(0), at(5)}, {at(1), at(2)}, {at(3), at(4)}}, 2},
		{[]Span{{at(0), at(5)}, {at(1), at(4)}, {at(2), at(3)}, {at(6), at(7)}}, 3},
	} {
		if got := MostAtOnce(tt.spans); got != tt.want {
			t.Errorf("MostAtOnce(%v) = %d, want %d", tt.spans, got, tt.want)
		}
	}
}
