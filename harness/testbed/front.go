package testbed

// Front: the registry side of the prefetch tests, a reverse proxy in front
// of the testbed's docker-registry that counts, fails and corrupts.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// pushHeader marks the test's own pushes: the front never fails, corrupts
// or counts them, so a test can push a patch while the registry "is down"
// for everyone else.
const pushHeader = "X-Startgate-Testbed-Push"

// FrontMode is what the front does to requests other than the test's
// pushes.
type FrontMode int

const (
	FrontUp      FrontMode = iota // forward to the registry
	FrontFail500                  // answer 500 Internal Server Error
	FrontDown                     // listener closed: connections are refused
	// FrontTrickle serves blob bodies at about FrontTrickleRate bytes a
	// second: a registry that answers, then hardly sends.
	FrontTrickle
)

// FrontTrickleRate is the pace of a blob body in FrontTrickle mode.
const FrontTrickleRate = 320

// Front is a reverse proxy in front of a testbed registry. Image
// references in the prefetch tests name it, so every byte the CRI's pulls
// and startgated's prefetches read from the registry crosses it; the test
// pushes through it too, so the registry's notifications name it as well
// (their request.host is the pusher's Host header, which the proxy keeps).
// It counts blob bytes served, by digest, and can be switched to answer
// 500, to refuse connections, or to flip a byte of one blob.
type Front struct {
	t    testing.TB
	host string // 127.0.0.1:PORT, fixed for the front's life
	rp   *httputil.ReverseProxy

	wg sync.WaitGroup // the Serve goroutines

	mu struct {
		sync.Mutex
		srv      *http.Server // nil while down
		mode     FrontMode
		served   map[string]int64       // blob digest: bytes sent to pullers
		gets     map[string][]time.Time // blob digest: when pullers asked for it
		spans    map[string][]Span      // blob digest: each body served, from request to close
		corrupt  string                 // blob digest to flip a byte of
		failures []time.Time            // requests answered with an injected 500
		pinPath  string                 // "/v2/REPO/manifests/TAG" answered as pinTo
		pinTo    string                 // "/v2/REPO/manifests/DIGEST"
	}
}

// StartFrontT starts a Front for reg on a loopback port, stopped when
// the test ends.
func StartFrontT(t testing.TB, reg *Registry) *Front {
	t.Helper()
	f := &Front{t: t}
	f.mu.served = map[string]int64{}
	f.mu.gets = map[string][]time.Time{}
	f.rp = httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: reg.Host()})
	f.rp.ModifyResponse = f.count
	// The proxy's own transport, so its idle connections to the registry
	// can be closed with it.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	f.rp.Transport = tr
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.host = l.Addr().String()
	f.serve(l)
	t.Cleanup(func() {
		f.mu.Lock()
		srv := f.mu.srv
		f.mu.srv = nil
		f.mu.Unlock()
		if srv != nil {
			srv.Close()
		}
		f.wg.Wait()
		tr.CloseIdleConnections()
	})
	return f
}

func (f *Front) serve(l net.Listener) {
	srv := &http.Server{Handler: f, ReadHeaderTimeout: 10 * time.Second}
	f.mu.Lock()
	f.mu.srv = srv
	f.mu.Unlock()
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			f.t.Errorf("registry front: %v", err)
		}
	}()
}

func (f *Front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get(pushHeader) == "" {
		f.mu.Lock()
		mode := f.mu.mode
		if mode == FrontFail500 {
			f.mu.failures = append(f.mu.failures, time.Now())
		}
		if f.mu.pinPath != "" && r.URL.Path == f.mu.pinPath {
			r.URL.Path, r.URL.RawPath = f.mu.pinTo, ""
		}
		f.mu.Unlock()
		if mode == FrontFail500 {
			http.Error(w, "startgate testbed: injected registry failure", http.StatusInternalServerError)
			return
		}
	}
	f.rp.ServeHTTP(w, r)
}

// count wraps the body of a blob served to a puller, to count (and
// perhaps corrupt) it.
func (f *Front) count(resp *http.Response) error {
	req := resp.Request
	i := strings.LastIndex(req.URL.Path, "/blobs/")
	if req.Method != http.MethodGet || i < 0 || req.Header.Get(pushHeader) != "" {
		return nil
	}
	dgst := req.URL.Path[i+len("/blobs/"):]
	f.mu.Lock()
	flip := f.mu.corrupt == dgst
	trickle := f.mu.mode == FrontTrickle
	start := time.Now()
	f.mu.gets[dgst] = append(f.mu.gets[dgst], start)
	f.mu.Unlock()
	resp.Body = &countingBody{rc: resp.Body, flip: flip, trickle: trickle, add: func(n int64) {
		f.mu.Lock()
		f.mu.served[dgst] += n
		f.mu.Unlock()
	}, closed: func() {
		f.mu.Lock()
		if f.mu.spans == nil {
			f.mu.spans = map[string][]Span{}
		}
		f.mu.spans[dgst] = append(f.mu.spans[dgst], Span{Start: start, End: time.Now()})
		f.mu.Unlock()
	}}
	return nil
}

// Ref names repoTag through the front: "127.0.0.1:PORT/app:1".
func (f *Front) Ref(repoTag string) string { return f.host + "/" + repoTag }

// Take returns the blob bytes served since the last take and resets them.
func (f *Front) Take() map[string]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.mu.served
	f.mu.served = map[string]int64{}
	return s
}

// SetCorrupt makes the front flip a byte of blob dgst for pullers; ""
// stops it.
func (f *Front) SetCorrupt(dgst string) {
	f.mu.Lock()
	f.mu.corrupt = dgst
	f.mu.Unlock()
}

// PinTag makes the front answer requests for repo:tag's manifest with
// digest's, as a registry whose tag has not moved yet would; "" unpins.
func (f *Front) PinTag(repo, tag, digest string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if digest == "" {
		f.mu.pinPath, f.mu.pinTo = "", ""
		return
	}
	f.mu.pinPath, f.mu.pinTo = "/v2/"+repo+"/manifests/"+tag, "/v2/"+repo+"/manifests/"+digest
}

// GetsSince returns when pullers asked for blob dgst after t0.
func (f *Front) GetsSince(dgst string, t0 time.Time) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []time.Time
	for _, gt := range f.mu.gets[dgst] {
		if gt.After(t0) {
			out = append(out, gt)
		}
	}
	return out
}

// FailuresSince returns the times of the injected 500s after t0.
func (f *Front) FailuresSince(t0 time.Time) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []time.Time
	for _, ft := range f.mu.failures {
		if ft.After(t0) {
			out = append(out, ft)
		}
	}
	return out
}

// SetMode switches the front. Down closes the listener and every
// connection (the registry's clients see their connections refused);
// leaving down listens again on the same port.
func (f *Front) SetMode(mode FrontMode) {
	f.t.Helper()
	f.mu.Lock()
	old, srv := f.mu.mode, f.mu.srv
	f.mu.mode = mode
	f.mu.Unlock()
	switch {
	case mode == FrontDown && old != FrontDown:
		srv.Close()
		f.mu.Lock()
		f.mu.srv = nil
		f.mu.Unlock()
	case mode != FrontDown && old == FrontDown:
		l, err := net.Listen("tcp", f.host)
		if err != nil {
			f.t.Fatalf("registry front: listen again on %s: %v", f.host, err)
		}
		f.serve(l)
	}
}

type countingBody struct {
	rc      io.ReadCloser
	flip    bool
	trickle bool
	off     int64
	add     func(int64)
	closed  func() // once, on Close
	once    sync.Once
}

// FrontFlipAt, the offset of the byte SetCorrupt flips, is well inside a layer blob, past gzip's header: only the digest
// check can catch the corruption (a flip in the header would fail the
// unpack instead, after the commit).
const FrontFlipAt = 4096

func (c *countingBody) Read(p []byte) (int, error) {
	if c.trickle {
		// 32 bytes every 100 ms.
		time.Sleep(100 * time.Millisecond)
		p = p[:min(len(p), FrontTrickleRate/10)]
	}
	n, err := c.rc.Read(p)
	if c.flip && c.off <= FrontFlipAt && FrontFlipAt < c.off+int64(n) {
		p[FrontFlipAt-c.off] ^= 0xff
	}
	c.off += int64(n)
	c.add(int64(n))
	return n, err
}

func (c *countingBody) Close() error {
	c.once.Do(c.closed)
	return c.rc.Close()
}

// Span is when a blob body was served: from its request to its close.
type Span struct{ Start, End time.Time }

// Spans returns each body of blob dgst served to a puller (the test's
// pushes not counted), from request to close, in order of closing.
func (f *Front) Spans(dgst string) []Span {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Span(nil), f.mu.spans[dgst]...)
}

// MostAtOnce is the most spans that overlap at any instant.
func MostAtOnce(spans []Span) int {
	most := 0
	for _, s := range spans {
		n := 0
		for _, o := range spans {
			if o.Start.Before(s.End) && s.Start.Before(o.End) && !o.Start.After(s.Start) {
				n++
			}
		}
		most = max(most, n)
	}
	return most
}

// markedTransport marks the test's pushes for the front.
type markedTransport struct{ rt http.RoundTripper }

func (m markedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(pushHeader, "1")
	return m.rt.RoundTrip(r)
}

// Push uploads img under repoTag through the front (go-containerregistry,
// as a CI pipeline would) and returns its manifest digest.
func (f *Front) Push(ctx context.Context, repoTag string, img v1.Image) (string, error) {
	ref, err := name.ParseReference(f.Ref(repoTag))
	if err != nil {
		return "", err
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx), remote.WithTransport(markedTransport{http.DefaultTransport})); err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		return "", err
	}
	return d.String(), nil
}

// Host is the front's host:port.
func (f *Front) Host() string { return f.host }
