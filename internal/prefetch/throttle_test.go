package prefetch

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/startgate/startgate/internal/admission"
)

// fakeClock is the Throttle's clock: sleep advances it at once.
type fakeClock struct {
	mu     sync.Mutex
	t      time.Time
	slept  time.Duration
	sleeps int
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *fakeClock) sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	c.slept += d
	c.sleeps++
	return nil
}

// sizeReader records the size of every read asked of it.
type sizeReader struct {
	r     io.Reader
	sizes []int
}

func (s *sizeReader) Read(p []byte) (int, error) {
	s.sizes = append(s.sizes, len(p))
	return s.r.Read(p)
}

func TestThrottleBandwidthCap(t *testing.T) {
	const bps = 1000
	th, err := NewThrottle(ThrottleOptions{BytesPerSecond: bps})
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{t: time.Unix(1e9, 0)}
	th.now, th.sleep = clk.now, clk.sleep
	data := bytes.Repeat([]byte("x"), 10*bps)
	src := &sizeReader{r: bytes.NewReader(data)}
	got, err := io.ReadAll(th.Reader(context.Background(), src))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadAll = %d bytes, %v; want %d bytes", len(got), err, len(data))
	}
	for _, n := range src.sizes {
		if n > bps {
			t.Fatalf("a read of %d bytes asked of the body, more than the burst %d", n, bps)
		}
	}
	// The bucket starts full (one burst, 1 s worth): the other 9000 bytes
	// take 9 s of the injected clock, not a nanosecond less.
	if want := 9 * time.Second; clk.slept < want || clk.slept > want+time.Millisecond {
		t.Errorf("slept %v for %d bytes at %d B/s, want %v", clk.slept, len(data), bps, want)
	}
	// The bucket is empty now: one more byte waits 1 ms.
	before := clk.slept
	if _, err := io.ReadAll(th.Reader(context.Background(), bytes.NewReader([]byte("y")))); err != nil {
		t.Fatal(err)
	}
	if d := clk.slept - before; d != time.Millisecond {
		t.Errorf("one byte on an empty bucket slept %v, want 1ms", d)
	}
}

func TestThrottleSharedAcrossReaders(t *testing.T) {
	// Two blobs read through one Throttle share its bucket: the cap is
	// node-wide, not per blob.
	const bps = 4096
	th, _ := NewThrottle(ThrottleOptions{BytesPerSecond: bps})
	clk := &fakeClock{t: time.Unix(1e9, 0)}
	th.now, th.sleep = clk.now, clk.sleep
	a := th.Reader(context.Background(), bytes.NewReader(make([]byte, 3*bps)))
	b := th.Reader(context.Background(), bytes.NewReader(make([]byte, 3*bps)))
	buf := make([]byte, 1024)
	for done := 0; done < 2; {
		done = 0
		for _, r := range []io.Reader{a, b} {
			if _, err := r.Read(buf); err == io.EOF {
				done++
			} else if err != nil {
				t.Fatal(err)
			}
		}
	}
	if want := 5 * time.Second; clk.slept < want || clk.slept > want+time.Millisecond {
		t.Errorf("slept %v for 6 s of bytes at the cap with a 1 s burst, want %v", clk.slept, want)
	}
}

func TestThrottleReaderCancelled(t *testing.T) {
	th, _ := NewThrottle(ThrottleOptions{BytesPerSecond: 10})
	ctx, cancel := context.WithCancel(context.Background())
	r := th.Reader(ctx, bytes.NewReader(make([]byte, 100)))
	buf := make([]byte, 100)
	if n, err := r.Read(buf); n != 10 || err != nil { // the burst, free
		t.Fatalf("first Read = %d, %v; want 10, nil", n, err)
	}
	cancel()
	if _, err := r.Read(buf); !errors.Is(err, context.Canceled) {
		t.Fatalf("Read after cancel: %v, want context.Canceled", err)
	}
}

func TestThrottleUnlimitedAndNil(t *testing.T) {
	var nilT *Throttle
	br := bytes.NewReader(nil)
	if r := nilT.Reader(context.Background(), br); r != io.Reader(br) {
		t.Error("nil Throttle wrapped the reader")
	}
	if err := nilT.WaitIO(context.Background()); err != nil {
		t.Errorf("nil Throttle WaitIO: %v", err)
	}
	th, err := NewThrottle(ThrottleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r := th.Reader(context.Background(), br); r != io.Reader(br) {
		t.Error("unlimited Throttle without IO wrapped the reader")
	}
	for _, o := range []ThrottleOptions{
		{BytesPerSecond: -1},
		{IOPressure: func() float64 { return 0 }, IOTarget: 0},
		{IOPressure: func() float64 { return 0 }, IOTarget: 1.5},
	} {
		if _, err := NewThrottle(o); err == nil {
			t.Errorf("NewThrottle(%+v) accepted", o)
		}
	}
}

// ioGauge is a settable IO pressure.
type ioGauge struct{ v atomic.Uint64 } // per mille

func (g *ioGauge) set(f float64) { g.v.Store(uint64(f * 1000)) }
func (g *ioGauge) get() float64  { return float64(g.v.Load()) / 1000 }

func TestThrottleReaderWaitsForIO(t *testing.T) {
	var io_ ioGauge
	io_.set(0.5)
	th, _ := NewThrottle(ThrottleOptions{IOPressure: io_.get, IOTarget: 0.2})
	clk := &fakeClock{}
	th.sleep = func(ctx context.Context, d time.Duration) error {
		if d != time.Second {
			t.Errorf("IO poll every %v, want 1s", d)
		}
		if clk.sleeps == 2 {
			io_.set(0.1) // falls after the third poll
		}
		return clk.sleep(ctx, d)
	}
	src := &sizeReader{r: bytes.NewReader([]byte("blob"))}
	r := th.Reader(context.Background(), src)
	b, err := io.ReadAll(r)
	if err != nil || string(b) != "blob" {
		t.Fatalf("ReadAll = %q, %v", b, err)
	}
	if clk.sleeps != 3 {
		t.Errorf("polled %d times, want 3", clk.sleeps)
	}
	// Pressure rising mid-blob does not stop it: the pause is between blobs.
	io_.set(0.9)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := th.Reader(ctx, bytes.NewReader([]byte("z"))).Read(make([]byte, 1)); !errors.Is(err, context.Canceled) {
		t.Errorf("a new blob under high IO with ctx done: %v, want context.Canceled", err)
	}
}

// blockingFetcher records fetches and blocks each until released.
type blockingFetcher struct {
	noProtect
	started chan string
	finish  chan struct{}
}

func (f *blockingFetcher) FetchProgress(ctx context.Context, ref, dgst string, _ Progress) (Result, error) {
	f.started <- ref + "@" + dgst
	select {
	case <-f.finish:
		return Result{Bytes: 42, LayersFetched: 1}, nil
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
}

// gatedAdmitter blocks Acquire until open is closed, then takes a real
// lease from a real gate.
type gatedAdmitter struct {
	gate   *admission.Gate
	open   chan struct{}
	mu     sync.Mutex
	reqs   []admission.Request
	leases []*admission.Lease
}

func (a *gatedAdmitter) Acquire(ctx context.Context, req admission.Request) (*admission.Lease, error) {
	a.mu.Lock()
	a.reqs = append(a.reqs, req)
	a.mu.Unlock()
	select {
	case <-a.open:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	l, err := a.gate.Acquire(ctx, req)
	if err == nil {
		a.mu.Lock()
		a.leases = append(a.leases, l)
		a.mu.Unlock()
	}
	return l, err
}

func (a *gatedAdmitter) lastLease() *admission.Lease {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.leases) == 0 {
		return nil
	}
	return a.leases[len(a.leases)-1]
}

func TestManagerFetchWaitsForAdmissionAndIO(t *testing.T) {
	gate, err := admission.New(admission.Config{Policy: admission.DefaultPolicy()})
	if err != nil {
		t.Fatal(err)
	}
	defer gate.Close()
	adm := &gatedAdmitter{gate: gate, open: make(chan struct{})}
	var io_ ioGauge
	io_.set(0.9)
	th, _ := NewThrottle(ThrottleOptions{IOPressure: io_.get, IOTarget: 0.3})
	polls := make(chan struct{}, 100)
	th.sleep = func(ctx context.Context, d time.Duration) error {
		select {
		case polls <- struct{}{}:
		default:
		}
		select {
		case <-time.After(time.Millisecond):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f := &blockingFetcher{started: make(chan string, 1), finish: make(chan struct{})}
	m, err := newManager(nil, nil, f, DefaultNamespace, ManagerOptions{Admitter: adm, Throttle: th})
	if err != nil {
		t.Fatal(err)
	}
	const ref, d = "127.0.0.1:5000/app:1", "sha256:" + zeros64
	m.mu.entries[ref] = &Entry{Ref: ref, New: d, State: StatePending}
	fl := m.flightLocked(ref, d)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); m.fetch(ctx, fl) }()

	notStarted := func(why string) {
		t.Helper()
		select {
		case k := <-f.started:
			t.Fatalf("fetch of %s started %s", k, why)
		case <-time.After(50 * time.Millisecond):
		}
		if s := m.List()[0].State; s != StatePending {
			t.Fatalf("state %s %s, want pending", s, why)
		}
	}
	// IO high: the fetch polls and neither asks for a slot nor starts.
	for range 3 {
		<-polls
	}
	notStarted("while IO pressure is high")
	adm.mu.Lock()
	asked := len(adm.reqs)
	adm.mu.Unlock()
	if asked != 0 {
		t.Fatalf("asked admission %d times while IO was high", asked)
	}
	// IO falls: it asks for a background slot, which the gate withholds.
	io_.set(0.1)
	deadline := time.Now().Add(5 * time.Second)
	for {
		adm.mu.Lock()
		asked = len(adm.reqs)
		adm.mu.Unlock()
		if asked == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no admission request after IO fell")
		}
		time.Sleep(time.Millisecond)
	}
	notStarted("while admission withholds the slot")
	req := adm.reqs[0]
	if req.Class != admission.Background || req.Tenant != "prefetch" || req.Description != "prefetch "+ref+"@"+d || req.Hold != DefaultAdmissionHold {
		t.Errorf("admission request %+v", req)
	}
	// The slot is granted: the fetch starts, holding the lease.
	close(adm.open)
	select {
	case k := <-f.started:
		if k != ref+"@"+d {
			t.Errorf("fetched %s", k)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("fetch did not start once admitted")
	}
	l := adm.lastLease()
	select {
	case <-l.Done():
		t.Fatal("lease released while the fetch runs")
	default:
	}
	if s := m.List()[0].State; s != StateFetching {
		t.Errorf("state %s during the fetch, want fetching", s)
	}
	close(f.finish)
	<-done
	select {
	case <-l.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("lease not released after the fetch")
	}
	if r := l.EndReason(); r != admission.ReleaseByHolder {
		t.Errorf("lease ended %q, want %q", r, admission.ReleaseByHolder)
	}
	if e := m.List()[0]; e.State != StateDone || e.BytesDone != 42 {
		t.Errorf("entry after the fetch: %+v", e)
	}
}

func TestManagerAdmissionCancelledAndIORisesWhileQueued(t *testing.T) {
	gate, err := admission.New(admission.Config{Policy: admission.DefaultPolicy()})
	if err != nil {
		t.Fatal(err)
	}
	defer gate.Close()
	var io_ ioGauge
	th, _ := NewThrottle(ThrottleOptions{IOPressure: io_.get, IOTarget: 0.3})
	th.sleep = func(ctx context.Context, d time.Duration) error {
		io_.set(0) // pressure falls after one poll
		return ctx.Err()
	}
	// The first grant comes while IO rose: the slot goes back, the fetch
	// waits for IO and asks again.
	var grants atomic.Int32
	var leases []*admission.Lease
	adm := admitterFunc(func(ctx context.Context, req admission.Request) (*admission.Lease, error) {
		l, err := gate.Acquire(ctx, req)
		leases = append(leases, l)
		if grants.Add(1) == 1 {
			io_.set(0.9)
		}
		return l, err
	})
	f := &blockingFetcher{started: make(chan string, 1), finish: make(chan struct{})}
	close(f.finish)
	m, _ := newManager(nil, nil, f, DefaultNamespace, ManagerOptions{Admitter: adm, Throttle: th})
	const ref, d = "127.0.0.1:5000/app:1", "sha256:" + zeros64
	m.mu.entries[ref] = &Entry{Ref: ref, New: d, State: StatePending}
	m.fetch(context.Background(), m.flightLocked(ref, d))
	<-f.started
	if grants.Load() != 2 {
		t.Fatalf("%d grants, want 2 (the first given back under high IO)", grants.Load())
	}
	for i, l := range leases {
		select {
		case <-l.Done():
		default:
			t.Errorf("lease %d not released", i)
		}
	}

	// A cancelled context while queued: no fetch, no failure recorded.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	blocked := &gatedAdmitter{gate: gate, open: make(chan struct{})}
	m2, _ := newManager(nil, nil, f, DefaultNamespace, ManagerOptions{Admitter: blocked})
	m2.mu.entries[ref] = &Entry{Ref: ref, New: d, State: StatePending}
	m2.fetch(ctx, m2.flightLocked(ref, d))
	if e := m2.List()[0]; e.State != StatePending {
		t.Errorf("entry after a cancelled admission: %+v", e)
	}
	// A refusal marks the entry failed, naming admission.
	m3, _ := newManager(nil, nil, f, DefaultNamespace, ManagerOptions{Admitter: admitterFunc(func(context.Context, admission.Request) (*admission.Lease, error) {
		return nil, admission.ErrClosed
	})})
	m3.mu.entries[ref] = &Entry{Ref: ref, New: d, State: StatePending}
	m3.fetch(context.Background(), m3.flightLocked(ref, d))
	if e := m3.List()[0]; e.State != StateFailed || e.Error == "" {
		t.Errorf("entry after a refusal: %+v", e)
	}
}

type admitterFunc func(context.Context, admission.Request) (*admission.Lease, error)

func (f admitterFunc) Acquire(ctx context.Context, req admission.Request) (*admission.Lease, error) {
	return f(ctx, req)
}
