package pressure

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/procfs"
)

// Resource is one PSI resource.
type Resource int

const (
	CPU Resource = iota
	IO
	Memory
	NumResources
)

// Resources lists the resources in index order.
var Resources = []Resource{CPU, IO, Memory}

var resourceNames = [NumResources]string{"cpu", "io", "memory"}

func (r Resource) String() string {
	if r < 0 || r >= NumResources {
		return fmt.Sprintf("resource(%d)", int(r))
	}
	return resourceNames[r]
}

// ParseResource accepts "cpu", "io" or "memory".
func ParseResource(s string) (Resource, error) {
	for i, n := range resourceNames {
		if s == n {
			return Resource(i), nil
		}
	}
	return 0, fmt.Errorf("pressure: unknown resource %q (want cpu, io or memory)", s)
}

// Values holds one number per resource, indexed by Resource.
type Values [NumResources]float64

// ErrUnavailable means the kernel offers no PSI at the configured place.
var ErrUnavailable = errors.New("pressure: PSI not available")

// Totals are the cumulative "some" stall times of one reading.
type Totals struct {
	// Some is the cumulative stall time per resource.
	Some [NumResources]time.Duration
	// Present says which resources could be read.
	Present [NumResources]bool
}

// Source reads cumulative PSI counters.
type Source interface {
	Read() (Totals, error)
	// String names the source for logs ("/proc/pressure").
	String() string
}

// ProcSource reads the system-wide files under ROOT/pressure.
type ProcSource struct {
	root string
	fs   procfs.FS
}

var _ Source = (*ProcSource)(nil)

// NewProcSource opens the proc filesystem at root ("/proc" by default).
func NewProcSource(root string) (*ProcSource, error) {
	if root == "" {
		root = procfs.DefaultMountPoint
	}
	f, err := procfs.NewFS(root)
	if err != nil {
		return nil, fmt.Errorf("pressure: open %s: %w", root, err)
	}
	return &ProcSource{root: root, fs: f}, nil
}

func (p *ProcSource) String() string { return filepath.Join(p.root, "pressure") }

// Read returns the counters; ErrUnavailable when no resource has PSI.
func (p *ProcSource) Read() (Totals, error) {
	var t Totals
	var firstErr error
	for _, r := range Resources {
		st, err := p.fs.PSIStatsForResource(r.String())
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if st.Some == nil {
			continue
		}
		d, err := micros(st.Some.Total)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		t.Some[r] = d
		t.Present[r] = true
	}
	return t, present(t, p.String(), firstErr)
}

func present(t Totals, where string, firstErr error) error {
	for _, ok := range t.Present {
		if ok {
			return nil
		}
	}
	if firstErr == nil || errors.Is(firstErr, fs.ErrNotExist) || errors.Is(firstErr, os.ErrPermission) ||
		strings.Contains(firstErr.Error(), "operation not supported") {
		return fmt.Errorf("%w at %s", ErrUnavailable, where)
	}
	return fmt.Errorf("%w at %s: %v", ErrUnavailable, where, firstErr)
}

// CgroupSource reads a cgroup v2 directory's *.pressure files.
type CgroupSource struct {
	dir string
}

var _ Source = (*CgroupSource)(nil)

// NewCgroupSource reads dir/{cpu,io,memory}.pressure.
func NewCgroupSource(dir string) *CgroupSource { return &CgroupSource{dir: dir} }

func (c *CgroupSource) String() string { return c.dir }

// Read returns the counters; ErrUnavailable when no file can be read.
func (c *CgroupSource) Read() (Totals, error) {
	var t Totals
	var firstErr error
	for _, r := range Resources {
		f, err := os.Open(filepath.Join(c.dir, r.String()+".pressure"))
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		total, err := parseSomeTotal(f)
		f.Close()
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		t.Some[r] = total
		t.Present[r] = true
	}
	return t, present(t, c.dir, firstErr)
}

// micros converts a PSI total (microseconds) to a Duration; a total past
// what a Duration holds (292 years of stall) is an error, not a negative
// figure.
func micros(us uint64) (time.Duration, error) {
	if us > uint64(math.MaxInt64/int64(time.Microsecond)) {
		return 0, fmt.Errorf("pressure: total %dus out of range", us)
	}
	return time.Duration(us) * time.Microsecond, nil
}

// parseSomeTotal reads the total= of the "some" line. procfs parses only
// <proc>/pressure/<resource>, not a cgroup's files, whose format is the
// same; containerd/cgroups reads them only within Manager.Stat, along
// with every other stat file of the cgroup, and drops their errors (the
// sampler must tell "no PSI" from a bad read). This is the one line of
// them we need.
func parseSomeTotal(r io.Reader) (time.Duration, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != "some" {
			continue
		}
		for _, f := range fields[1:] {
			if v, ok := strings.CutPrefix(f, "total="); ok {
				us, err := strconv.ParseUint(v, 10, 64)
				if err != nil {
					return 0, fmt.Errorf("pressure: bad total %q: %w", v, err)
				}
				return micros(us)
			}
		}
		return 0, fmt.Errorf("pressure: no total= in %q", sc.Text())
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("pressure: no \"some\" line")
}

// Sample is the pressure the controller acts on.
type Sample struct {
	Time time.Time
	// Some is the smoothed stall fraction (0..1) per resource.
	Some Values
	// Raw is the unsmoothed fraction over the last interval.
	Raw Values
	// Present says which resources are measured.
	Present [NumResources]bool
}

// Sampler turns successive readings into smoothed stall fractions. It is
// safe for concurrent use, though the controller is its only caller.
type Sampler struct {
	src   Source
	alpha float64

	mu struct {
		sync.Mutex
		last     Totals
		lastTime time.Time
		have     bool
		sample   Sample
	}
}

// NewSampler smooths with weight alpha (0 < alpha <= 1) on the newest
// interval: 1 means no smoothing.
func NewSampler(src Source, alpha float64) (*Sampler, error) {
	if !(alpha > 0 && alpha <= 1) {
		return nil, fmt.Errorf("pressure: smoothing %v out of range (0, 1]", alpha)
	}
	return &Sampler{src: src, alpha: alpha}, nil
}

// Source returns the sampler's source.
func (s *Sampler) Source() Source { return s.src }

// Sample reads the counters at now and returns the smoothed stall fractions
// since the previous call. The first call only primes the counters and
// returns a zero sample.
func (s *Sampler) Sample(now time.Time) (Sample, error) {
	t, err := s.src.Read()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.mu.have = false
		return s.mu.sample, err
	}
	if !s.mu.have {
		s.mu.last, s.mu.lastTime, s.mu.have = t, now, true
		s.mu.sample = Sample{Time: now, Present: t.Present}
		return s.mu.sample, nil
	}
	dt := now.Sub(s.mu.lastTime)
	if dt <= 0 {
		return s.mu.sample, nil
	}
	out := Sample{Time: now, Present: t.Present}
	for _, r := range Resources {
		if !t.Present[r] || !s.mu.last.Present[r] {
			continue
		}
		d := t.Some[r] - s.mu.last.Some[r]
		frac := math.Max(0, math.Min(1, float64(d)/float64(dt)))
		out.Raw[r] = frac
		out.Some[r] = s.alpha*frac + (1-s.alpha)*s.mu.sample.Some[r]
	}
	s.mu.last, s.mu.lastTime = t, now
	s.mu.sample = out
	return out, nil
}
