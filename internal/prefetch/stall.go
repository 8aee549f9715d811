package prefetch

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// A registry that answers and then trickles its body (a byte now and then,
// as an overloaded registry or a broken proxy does) would hold a fetch for
// hours: no timeout covers a body (one would cut big layers on slow
// links), and a trickle never looks idle. stallTransport cuts a response
// body that, in a window of the request timeout, kept its reader waiting
// for at least half the window and delivered less than stallFloor bytes
// per window at that pace: the fetch fails, says so, and backs off like
// any other failure. At the default 30 s the floor is about 1 KiB/s: a
// link that slow takes a day for a 100 MB layer. Time the reader spends
// elsewhere (the bandwidth cap's waits, the pause while the node's IO
// pressure is high) is not the registry's and does not count.
const stallFloor = 32 << 10

// ErrStalled matches (errors.Is) the error of a body cut as stalled.
var ErrStalled = errors.New("prefetch: registry stalled")

// stallTransport wraps every response body of rt in a stallBody.
type stallTransport struct {
	rt     http.RoundTripper
	window time.Duration
	floor  int64
}

// CloseIdleConnections closes rt's idle connections, when rt can.
func (t stallTransport) CloseIdleConnections() {
	if c, ok := t.rt.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

func (t stallTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(req)
	if err != nil || resp.Body == nil || resp.Body == http.NoBody {
		return resp, err
	}
	resp.Body = newStallBody(resp.Body, req.URL.Host, t.window, t.floor)
	return resp, nil
}

// stallBody counts the bytes read through it; a timer looks at the count
// every window and closes the body (which ends a Read blocked in it) when
// fewer than floor bytes came in that window.
type stallBody struct {
	body   io.ReadCloser
	host   string
	window time.Duration
	floor  int64
	timer  *time.Timer

	mu sync.Mutex
	// In the current window: bytes read, and time spent waiting in the
	// body's Read (inSince is when the Read under way began, zero when
	// none is).
	read    int64
	waited  time.Duration
	inSince time.Time
	stalled error
	closed  bool
}

func newStallBody(body io.ReadCloser, host string, window time.Duration, floor int64) *stallBody {
	b := &stallBody{body: body, host: host, window: window, floor: floor}
	b.timer = time.AfterFunc(window, b.check)
	return b
}

func (b *stallBody) check() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	now := time.Now()
	waited := b.waited
	if !b.inSince.IsZero() {
		waited += now.Sub(b.inSince)
	}
	if waited >= b.window/2 && float64(b.read) < float64(b.floor)*waited.Seconds()/b.window.Seconds() {
		b.stalled = fmt.Errorf("%w: %s sent %d bytes in %v of waiting, below the floor of %d bytes per %v",
			ErrStalled, b.host, b.read, waited.Round(time.Millisecond), b.floor, b.window)
		b.mu.Unlock()
		_ = b.body.Close()
		return
	}
	b.read, b.waited = 0, 0
	if !b.inSince.IsZero() {
		b.inSince = now
	}
	b.timer.Reset(b.window)
	b.mu.Unlock()
}

func (b *stallBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.stalled != nil {
		err := b.stalled
		b.mu.Unlock()
		return 0, err
	}
	b.inSince = time.Now()
	b.mu.Unlock()
	n, err := b.body.Read(p)
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.inSince.IsZero() {
		b.waited += time.Since(b.inSince)
	}
	b.inSince = time.Time{}
	b.read += int64(n)
	if b.stalled != nil {
		return n, b.stalled
	}
	return n, err
}

func (b *stallBody) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.timer.Stop()
	return b.body.Close()
}
