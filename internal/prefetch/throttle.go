package prefetch

// Throttling (issue 4, item 4): a prefetch yields to the node's starts.
//
//   - Admission: the Manager asks the admission gate for a slot in the
//     background class before each fetch and holds it until the fetch
//     ends, so every start (any other class) goes first and a fetch only
//     runs when the gate has room to spare.
//   - IO pressure: a fetch does not start, and a blob's download does not
//     begin, while the node's smoothed IO stall fraction is above the
//     target; the Throttle polls it every second until it falls.
//   - Bandwidth: one token bucket for the node caps the bytes per second
//     read from registries by all fetches together.
//   - Concurrency: ManagerOptions.Concurrency fetches at most.
//
// The Throttle is shared by the Manager (IO before a fetch) and the
// Fetcher (Options.WrapReader: IO before each blob and the bandwidth cap
// on its bytes).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"golang.org/x/time/rate"

	"github.com/startgate/startgate/internal/admission"
)

const (
	// DefaultAdmissionHold caps how long one fetch holds its background
	// slot when ManagerOptions.AdmissionHold is 0. A fetch that runs
	// longer goes on; the gate takes the slot back.
	DefaultAdmissionHold = 10 * time.Minute
	// AdmissionTenant is the tenant of every prefetch admission request.
	AdmissionTenant = "prefetch"
	// ioPoll is how often the Throttle rereads IO pressure while paused.
	ioPoll = time.Second
	// maxBurst bounds the token bucket's depth, and so the largest read
	// passed to a registry body at once: 256 KiB is 5 ms at 50 MiB/s.
	maxBurst = 256 << 10
)

// Admitter is the part of the admission gate the Manager uses;
// *admission.Gate satisfies it.
type Admitter interface {
	Acquire(ctx context.Context, req admission.Request) (*admission.Lease, error)
}

var _ Admitter = (*admission.Gate)(nil)

// ThrottleOptions configure a Throttle. The zero value throttles nothing.
type ThrottleOptions struct {
	// BytesPerSecond caps the registry bytes read by all fetches together;
	// 0 means unlimited.
	BytesPerSecond int64
	// IOPressure returns the node's smoothed IO stall fraction (the
	// admission gate's); nil means IO is never waited for.
	IOPressure func() float64
	// IOTarget is the stall fraction above which fetches pause, in (0, 1].
	IOTarget float64
}

// Throttle is the node-wide bandwidth cap and IO pause of prefetching. It
// is safe for concurrent use; a nil *Throttle throttles nothing.
type Throttle struct {
	lim    *rate.Limiter // nil: unlimited
	burst  int
	io     func() float64
	target float64
	poll   time.Duration
	now    func() time.Time
	sleep  func(ctx context.Context, d time.Duration) error
}

// NewThrottle returns a Throttle for opts.
func NewThrottle(opts ThrottleOptions) (*Throttle, error) {
	if opts.BytesPerSecond < 0 {
		return nil, fmt.Errorf("prefetch: negative bandwidth %d", opts.BytesPerSecond)
	}
	if opts.IOPressure != nil && !(opts.IOTarget > 0 && opts.IOTarget <= 1) {
		return nil, fmt.Errorf("prefetch: IO target %v out of range (0, 1]", opts.IOTarget)
	}
	t := &Throttle{io: opts.IOPressure, target: opts.IOTarget, poll: ioPoll, now: time.Now, sleep: sleepCtx}
	if opts.BytesPerSecond > 0 {
		t.burst = int(min(opts.BytesPerSecond, maxBurst))
		t.lim = rate.NewLimiter(rate.Limit(opts.BytesPerSecond), t.burst)
	}
	return t, nil
}

// ioHigh says whether IO pressure is above the target now.
func (t *Throttle) ioHigh() bool {
	return t != nil && t.io != nil && t.io() > t.target
}

// WaitIO returns once IO pressure is at or below the target (at once when
// it is, or when there is no IO function), or with ctx's error.
func (t *Throttle) WaitIO(ctx context.Context) error {
	for t.ioHigh() {
		if err := t.sleep(ctx, t.poll); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// Reader wraps a blob's body: its first Read waits for IO pressure to be
// at or below the target, and every Read takes its bytes from the
// node-wide bucket, waiting for them (reads are cut to the bucket's
// depth). ctx bounds the waits. It is the Fetcher's Options.WrapReader.
func (t *Throttle) Reader(ctx context.Context, r io.Reader) io.Reader {
	if t == nil || (t.lim == nil && t.io == nil) {
		return r
	}
	return &throttledReader{ctx: ctx, r: r, t: t}
}

type throttledReader struct {
	ctx     context.Context
	r       io.Reader
	t       *Throttle
	started bool
}

func (tr *throttledReader) Read(p []byte) (int, error) {
	if !tr.started {
		tr.started = true
		if err := tr.t.WaitIO(tr.ctx); err != nil {
			return 0, err
		}
	}
	if tr.t.lim == nil {
		return tr.r.Read(p)
	}
	if len(p) > tr.t.burst {
		p = p[:tr.t.burst]
	}
	n, err := tr.r.Read(p)
	if n > 0 {
		if werr := tr.t.take(tr.ctx, n); werr != nil {
			return n, werr
		}
	}
	return n, err
}

// take waits until n bytes' tokens are available and takes them; n is at
// most the burst. Reading first and paying after keeps the bucket exact
// for short reads; the cap holds over any span longer than one burst.
func (t *Throttle) take(ctx context.Context, n int) error {
	now := t.now()
	res := t.lim.ReserveN(now, n)
	if !res.OK() {
		return errors.New("prefetch: read larger than the bandwidth burst")
	}
	d := res.DelayFrom(now)
	if d <= 0 {
		return nil
	}
	if err := t.sleep(ctx, d); err != nil {
		res.CancelAt(t.now())
		return err
	}
	return nil
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
