package e2e

// The registry side of the prefetch tests besides testbed.Front (the
// reverse proxy in front of the registry that counts, fails and
// corrupts): a relay that timestamps the registry's push notifications on
// their way to startgated.

import (
	"bytes"
	"context"
	"encoding/json"
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
)

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
