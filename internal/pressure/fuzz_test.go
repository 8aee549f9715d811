package pressure

import (
	"strings"
	"testing"
	"time"
)

// FuzzParseSomeTotal: any cgroup pressure file either parses to a
// non-negative total or is an error; none panics.
func FuzzParseSomeTotal(f *testing.F) {
	f.Add("some avg10=0.00 avg60=0.00 avg300=0.00 total=12345\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
	f.Add("full avg10=0.00 total=1\nsome total=18446744073709551615\n")
	f.Add("some avg10=1.00\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseSomeTotal(strings.NewReader(s))
		if err == nil && d < 0 {
			t.Fatalf("parseSomeTotal(%q) = %v, want a non-negative total", s, d)
		}
	})
}

// FuzzSampler: whatever totals a source reports, in whatever order, the
// stall fractions stay within [0, 1].
func FuzzSampler(f *testing.F) {
	f.Add(uint64(0), uint64(100_000), uint64(250_000), int64(250_000_000))
	f.Add(uint64(1<<62), uint64(0), uint64(1<<63), int64(1))
	f.Add(uint64(5), uint64(5), uint64(5), int64(0))
	f.Fuzz(func(t *testing.T, a, b, c uint64, step int64) {
		src := &seqSource{}
		for _, us := range []uint64{a, b, c} {
			var tot Totals
			tot.Some[CPU] = time.Duration(us % (1 << 62))
			tot.Present[CPU] = true
			src.seq = append(src.seq, tot)
		}
		s, err := NewSampler(src, 0.5)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Unix(1_700_000_000, 0)
		for range src.seq {
			sm, err := s.Sample(now)
			if err != nil {
				continue
			}
			for _, r := range Resources {
				if v := sm.Some[r]; !(v >= 0 && v <= 1) {
					t.Fatalf("Some[%v] = %v out of [0, 1] (totals %v, %v, %v, step %v)", r, v, a, b, c, step)
				}
				if v := sm.Raw[r]; !(v >= 0 && v <= 1) {
					t.Fatalf("Raw[%v] = %v out of [0, 1] (totals %v, %v, %v, step %v)", r, v, a, b, c, step)
				}
			}
			now = now.Add(time.Duration(step))
		}
	})
}

// seqSource reports its totals in turn, the last one from then on.
type seqSource struct {
	seq []Totals
	i   int
}

func (s *seqSource) Read() (Totals, error) {
	t := s.seq[min(s.i, len(s.seq)-1)]
	s.i++
	return t, nil
}

func (*seqSource) String() string { return "fuzz" }
