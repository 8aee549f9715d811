package pressure

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func writePSI(t *testing.T, path string, someTotalUS uint64) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	body := "some avg10=1.00 avg60=0.50 avg300=0.10 total=" + itoa(someTotalUS) + "\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func itoa(v uint64) string {
	if v == 0 {
		return "0"
	}
	var b []byte
	for v > 0 {
		b = append([]byte{byte('0' + v%10)}, b...)
		v /= 10
	}
	return string(b)
}

func TestProcSourceReadsAndSamplerDerivesFractions(t *testing.T) {
	root := t.TempDir()
	for _, r := range []string{"cpu", "io", "memory"} {
		writePSI(t, filepath.Join(root, "pressure", r), 1_000_000)
	}
	src, err := NewProcSource(root)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSampler(src, 1) // no smoothing: raw fractions
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(100, 0)
	if _, err := s.Sample(t0); err != nil {
		t.Fatalf("first Sample: %v", err)
	}
	// Over 1 s: cpu stalled 500 ms, io 100 ms, memory none.
	writePSI(t, filepath.Join(root, "pressure", "cpu"), 1_500_000)
	writePSI(t, filepath.Join(root, "pressure", "io"), 1_100_000)
	got, err := s.Sample(t0.Add(time.Second))
	if err != nil {
		t.Fatalf("Sample: %v", err)
	}
	want := Values{CPU: 0.5, IO: 0.1, Memory: 0}
	for _, r := range Resources {
		if math.Abs(got.Some[r]-want[r]) > 1e-9 || !got.Present[r] {
			t.Fatalf("%s: got %v (present %t), want %v", r, got.Some[r], got.Present[r], want[r])
		}
	}
}

func TestSamplerSmoothsAndClamps(t *testing.T) {
	f := &fakeSource{}
	s, err := NewSampler(f, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(0, 0)
	f.set(0)
	s.Sample(t0)
	f.set(time.Second) // fully stalled for the next second
	got, _ := s.Sample(t0.Add(time.Second))
	if got.Raw[CPU] != 1 || got.Some[CPU] != 0.5 {
		t.Fatalf("after a stalled second: raw %v smoothed %v, want 1 and 0.5", got.Raw[CPU], got.Some[CPU])
	}
	f.set(3 * time.Second) // more stall than wall time (rounding in the kernel): clamp to 1
	got, _ = s.Sample(t0.Add(2 * time.Second))
	if got.Raw[CPU] != 1 || got.Some[CPU] != 0.75 {
		t.Fatalf("clamped: raw %v smoothed %v, want 1 and 0.75", got.Raw[CPU], got.Some[CPU])
	}
	if _, err := NewSampler(f, 0); err == nil {
		t.Fatalf("NewSampler(alpha 0) = nil error, want one")
	}
}

type fakeSource struct{ total time.Duration }

func (f *fakeSource) set(d time.Duration) { f.total = d }
func (f *fakeSource) String() string      { return "fake" }
func (f *fakeSource) Read() (Totals, error) {
	var t Totals
	t.Some[CPU], t.Present[CPU] = f.total, true
	return t, nil
}

func TestNoPSIIsErrUnavailable(t *testing.T) {
	src, err := NewProcSource(t.TempDir()) // a proc root without pressure/
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Read(); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Read without PSI = %v, want ErrUnavailable", err)
	}
	if _, err := NewCgroupSource(t.TempDir()).Read(); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("cgroup Read without files = %v, want ErrUnavailable", err)
	}
}

func TestCgroupSource(t *testing.T) {
	dir := t.TempDir()
	writePSI(t, filepath.Join(dir, "cpu.pressure"), 250)
	writePSI(t, filepath.Join(dir, "io.pressure"), 500)
	got, err := NewCgroupSource(dir).Read()
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if got.Some[CPU] != 250*time.Microsecond || got.Some[IO] != 500*time.Microsecond || got.Present[Memory] {
		t.Fatalf("Read = %+v, want cpu 250µs, io 500µs, memory absent", got)
	}
	if err := os.WriteFile(filepath.Join(dir, "memory.pressure"), []byte("some avg10=0 total=x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := NewCgroupSource(dir).Read(); err != nil || got.Present[Memory] {
		t.Fatalf("a malformed memory.pressure: %+v, %v; want memory absent, others read", got, err)
	}
}

// The real /proc/pressure on this machine, when present.
func TestRealProcPressure(t *testing.T) {
	src, err := NewProcSource("")
	if err != nil {
		t.Fatal(err)
	}
	got, err := src.Read()
	if errors.Is(err, ErrUnavailable) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and no PSI: %v", err)
		}
		t.Skipf("no PSI here: %v", err)
	}
	if err != nil || !got.Present[CPU] {
		t.Fatalf("Read of /proc/pressure = %+v, %v; want at least cpu", got, err)
	}
}
