package e2e

// The registry side of the prefetch tests: the testbed's docker-registry
// behind a front (a reverse proxy that counts, fails and corrupts), and a
// relay that timestamps the registry's push notifications on their way to
// startgated.

import (
	"bytes"
	"context"
	"encoding/json"
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

	"github.com/startgate/startgate/internal/testbed"
)

// pushHeader marks the test's own pushes: the front never fails, corrupts
// or counts them, so a test can push a patch while the registry "is down"
// for everyone else.
const pushHeader = "X-Startgate-E2e-Push"

// frontMode is what the front does to requests other than the test's
// pushes.
type frontMode int

const (
	frontUp      frontMode = iota // forward to the registry
	frontFail500                  // answer 500 Internal Server Error
	frontDown                     // listener closed: connections are refused
)

// registryFront is a reverse proxy in front of the testbed registry. Image
// references in the prefetch tests name it, so every byte the CRI's pulls
// and startgated's prefetches read from the registry crosses it; the test
// pushes through it too, so the registry's notifications name it as well
// (their request.host is the pusher's Host header, which the proxy keeps).
// It counts blob bytes served, by digest, and can be switched to answer
// 500, to refuse connections, or to flip a byte of one blob.
type registryFront struct {
	t    testing.TB
	host string // 127.0.0.1:PORT, fixed for the front's life
	rp   *httputil.ReverseProxy

	wg sync.WaitGroup // the Serve goroutines

	mu struct {
		sync.Mutex
		srv      *http.Server // nil while down
		mode     frontMode
		served   map[string]int64       // blob digest: bytes sent to pullers
		gets     map[string][]time.Time // blob digest: when pullers asked for it
		corrupt  string                 // blob digest to flip a byte of
		failures []time.Time            // requests answered with an injected 500
		pinPath  string                 // "/v2/REPO/manifests/TAG" answered as pinTo
		pinTo    string                 // "/v2/REPO/manifests/DIGEST"
	}
}

func startFront(t testing.TB, reg *testbed.Registry) *registryFront {
	t.Helper()
	f := &registryFront{t: t}
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

func (f *registryFront) serve(l net.Listener) {
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

func (f *registryFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get(pushHeader) == "" {
		f.mu.Lock()
		mode := f.mu.mode
		if mode == frontFail500 {
			f.mu.failures = append(f.mu.failures, time.Now())
		}
		if f.mu.pinPath != "" && r.URL.Path == f.mu.pinPath {
			r.URL.Path, r.URL.RawPath = f.mu.pinTo, ""
		}
		f.mu.Unlock()
		if mode == frontFail500 {
			http.Error(w, "startgate e2e: injected registry failure", http.StatusInternalServerError)
			return
		}
	}
	f.rp.ServeHTTP(w, r)
}

// count wraps the body of a blob served to a puller, to count (and
// perhaps corrupt) it.
func (f *registryFront) count(resp *http.Response) error {
	req := resp.Request
	i := strings.LastIndex(req.URL.Path, "/blobs/")
	if req.Method != http.MethodGet || i < 0 || req.Header.Get(pushHeader) != "" {
		return nil
	}
	dgst := req.URL.Path[i+len("/blobs/"):]
	f.mu.Lock()
	flip := f.mu.corrupt == dgst
	f.mu.gets[dgst] = append(f.mu.gets[dgst], time.Now())
	f.mu.Unlock()
	resp.Body = &countingBody{rc: resp.Body, flip: flip, add: func(n int64) {
		f.mu.Lock()
		f.mu.served[dgst] += n
		f.mu.Unlock()
	}}
	return nil
}

// ref names repoTag through the front: "127.0.0.1:PORT/app:1".
func (f *registryFront) ref(repoTag string) string { return f.host + "/" + repoTag }

// take returns the blob bytes served since the last take and resets them.
func (f *registryFront) take() map[string]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.mu.served
	f.mu.served = map[string]int64{}
	return s
}

func (f *registryFront) setCorrupt(dgst string) {
	f.mu.Lock()
	f.mu.corrupt = dgst
	f.mu.Unlock()
}

// pinTag makes the front answer requests for repo:tag's manifest with
// digest's, as a registry whose tag has not moved yet would; "" unpins.
func (f *registryFront) pinTag(repo, tag, digest string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if digest == "" {
		f.mu.pinPath, f.mu.pinTo = "", ""
		return
	}
	f.mu.pinPath, f.mu.pinTo = "/v2/"+repo+"/manifests/"+tag, "/v2/"+repo+"/manifests/"+digest
}

// getsSince returns when pullers asked for blob dgst after t0.
func (f *registryFront) getsSince(dgst string, t0 time.Time) []time.Time {
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

// failuresSince returns the times of the injected 500s after t0.
func (f *registryFront) failuresSince(t0 time.Time) []time.Time {
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

// setMode switches the front. Down closes the listener and every
// connection (the registry's clients see their connections refused);
// leaving down listens again on the same port.
func (f *registryFront) setMode(mode frontMode) {
	f.t.Helper()
	f.mu.Lock()
	old, srv := f.mu.mode, f.mu.srv
	f.mu.mode = mode
	f.mu.Unlock()
	switch {
	case mode == frontDown && old != frontDown:
		srv.Close()
		f.mu.Lock()
		f.mu.srv = nil
		f.mu.Unlock()
	case mode != frontDown && old == frontDown:
		l, err := net.Listen("tcp", f.host)
		if err != nil {
			f.t.Fatalf("registry front: listen again on %s: %v", f.host, err)
		}
		f.serve(l)
	}
}

type countingBody struct {
	rc   io.ReadCloser
	flip bool
	off  int64
	add  func(int64)
}

// flipAt is well inside a layer blob, past gzip's header: only the digest
// check can catch the corruption (a flip in the header would fail the
// unpack instead, after the commit).
const flipAt = 4096

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.rc.Read(p)
	if c.flip && c.off <= flipAt && flipAt < c.off+int64(n) {
		p[flipAt-c.off] ^= 0xff
	}
	c.off += int64(n)
	c.add(int64(n))
	return n, err
}

func (c *countingBody) Close() error { return c.rc.Close() }

// markedTransport marks the test's pushes for the front.
type markedTransport struct{ rt http.RoundTripper }

func (m markedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(pushHeader, "1")
	return m.rt.RoundTrip(r)
}

// push uploads img under repoTag through the front (go-containerregistry,
// as a CI pipeline would) and returns its manifest digest.
func (f *registryFront) push(ctx context.Context, repoTag string, img v1.Image) (string, error) {
	ref, err := name.ParseReference(f.ref(repoTag))
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

// notifyRelay sits between the registry's notifications and startgated's
// webhook listener: it forwards every request as it came (token and all)
// and notes when each tagged manifest push arrived and what startgated
// answered. Its times are when the notification reached the node, the
// start of the "within 5 s of the notification".
type notifyRelay struct {
	// Not httptest.Server: its Close waits for the registry's idle
	// keep-alive connections longer than a test should.
	l   net.Listener
	srv *http.Server
	wg  sync.WaitGroup

	mu     sync.Mutex
	pushes []relayedPush
}

type relayedPush struct {
	digest string
	tag    string
	at     time.Time
	status int
}

// startRelay relays notifications to target.
func startRelay(t testing.TB, target string) *notifyRelay {
	t.Helper()
	r := &notifyRelay{}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	tr := http.DefaultTransport.(*http.Transport).Clone()
	rp.Transport = tr
	rp.ModifyResponse = func(resp *http.Response) error {
		pushes, _ := resp.Request.Context().Value(relayKey{}).([]relayedPush)
		r.mu.Lock()
		for _, p := range pushes {
			p.status = resp.StatusCode
			r.pushes = append(r.pushes, p)
		}
		r.mu.Unlock()
		return nil
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		at := time.Now()
		body, err := io.ReadAll(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var env struct {
			Events []struct {
				Action string `json:"action"`
				Target struct {
					MediaType string `json:"mediaType"`
					Digest    string `json:"digest"`
					Tag       string `json:"tag"`
				} `json:"target"`
			} `json:"events"`
		}
		var pushes []relayedPush
		if json.Unmarshal(body, &env) == nil {
			for _, e := range env.Events {
				if e.Action == "push" && e.Target.Tag != "" && strings.Contains(e.Target.MediaType, "manifest") {
					pushes = append(pushes, relayedPush{digest: e.Target.Digest, tag: e.Target.Tag, at: at})
				}
			}
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		req = req.WithContext(context.WithValue(req.Context(), relayKey{}, pushes))
		rp.ServeHTTP(w, req)
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.l, r.srv = l, &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		_ = r.srv.Serve(l)
	}()
	t.Cleanup(func() {
		r.srv.Close()
		r.wg.Wait()
		tr.CloseIdleConnections()
	})
	return r
}

type relayKey struct{}

func (r *notifyRelay) url() string { return "http://" + r.l.Addr().String() + "/" }

// delivered returns when the push of digest reached startgated and was
// answered 200.
func (r *notifyRelay) delivered(digest string) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.pushes {
		if p.digest == digest && p.status == http.StatusOK {
			return p.at, true
		}
	}
	return time.Time{}, false
}

func (r *notifyRelay) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, p := range r.pushes {
		fmt.Fprintf(&b, "[%s %s at %s: %d] ", p.tag, p.digest, p.at.Format(time.RFC3339Nano), p.status)
	}
	return b.String()
}

// freeLoopbackAddr picks a free port for startgated's webhook listener.
// The relay must know it before startgated runs; another process could
// take it in between, which startgated's start would report.
func freeLoopbackAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
