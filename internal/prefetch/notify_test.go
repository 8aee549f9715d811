package prefetch

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/startgate/startgate/harness/testbed"
)

const (
	testToken    = "t0ken"
	testDigest   = "sha256:4e07408562bedb8b60ce05c1decfe3ad16b72230967de01f640b7e4729b49fce"
	ociManifest  = "application/vnd.oci.image.manifest.v1+json"
	dockerLayer  = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	dockerConfig = "application/vnd.docker.container.image.v1+json"
)

type pushed struct{ ref, digest string }

// recorder collects OnPush calls without blocking, as the contract asks.
type recorder struct {
	mu  sync.Mutex
	got []pushed
	ch  chan pushed
}

func newRecorder() *recorder { return &recorder{ch: make(chan pushed, 16)} }

func (r *recorder) onPush(ref, dgst string) {
	r.mu.Lock()
	r.got = append(r.got, pushed{ref, dgst})
	r.mu.Unlock()
	select {
	case r.ch <- pushed{ref, dgst}:
	default:
	}
}

func (r *recorder) calls() []pushed {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]pushed(nil), r.got...)
}

// ev builds one distribution event as the registry sends it.
func ev(action, mediaType, repo, tag, host string) map[string]any {
	return map[string]any{
		"id":        "1",
		"timestamp": "2024-01-01T00:00:00Z",
		"action":    action,
		"target": map[string]any{
			"mediaType": mediaType, "digest": testDigest, "size": 1,
			"repository": repo, "tag": tag,
		},
		"request": map[string]any{"id": "r", "addr": "127.0.0.1:5555", "host": host, "method": "PUT"},
		"source":  map[string]any{"addr": "0.0.0.0:5000"},
	}
}

func envelope(events ...map[string]any) string {
	if events == nil {
		events = []map[string]any{}
	}
	b, _ := json.Marshal(map[string]any{"events": events})
	return string(b)
}

func TestNotifierHandler(t *testing.T) {
	const host = "reg.example:5000"
	okPush := ev("push", ociManifest, "app", "1", host)
	tests := []struct {
		name        string
		method      string
		auth        string // "-" means no header
		contentType string
		body        string
		opts        func(*NotifierOptions)
		wantCode    int
		wantBody    string // substring
		wantPush    []pushed
		wantStats   NotifierStats
	}{
		{name: "tagged OCI manifest push", body: envelope(okPush), wantCode: 200,
			wantPush: []pushed{{host + "/app:1", testDigest}}, wantStats: NotifierStats{Accepted: 1}},
		{name: "docker manifest list, nested repo, content type with params",
			contentType: NotificationMediaType + "; charset=utf-8",
			body:        envelope(ev("push", "application/vnd.docker.distribution.manifest.list.v2+json", "team/app", "v2.1", host)),
			wantCode:    200, wantPush: []pushed{{host + "/team/app:v2.1", testDigest}}, wantStats: NotifierStats{Accepted: 1}},
		{name: "no token", auth: "-", body: envelope(okPush), wantCode: 401, wantBody: "unauthorized", wantStats: NotifierStats{Rejected: 1}},
		{name: "wrong token", auth: "Bearer nope", body: envelope(okPush), wantCode: 401, wantBody: "unauthorized", wantStats: NotifierStats{Rejected: 1}},
		{name: "token without Bearer", auth: testToken, body: envelope(okPush), wantCode: 401, wantStats: NotifierStats{Rejected: 1}},
		{name: "wrong token and wrong method says only unauthorized", method: http.MethodGet, auth: "Bearer nope",
			wantCode: 401, wantBody: "unauthorized", wantStats: NotifierStats{Rejected: 1}},
		{name: "GET", method: http.MethodGet, wantCode: 405, wantStats: NotifierStats{Rejected: 1}},
		{name: "PUT", method: http.MethodPut, body: envelope(okPush), wantCode: 405, wantStats: NotifierStats{Rejected: 1}},
		{name: "content type", contentType: "text/plain", body: envelope(okPush), wantCode: 415, wantStats: NotifierStats{Rejected: 1}},
		{name: "too large", body: envelope(okPush, okPush, okPush), opts: func(o *NotifierOptions) { o.MaxBody = 600 },
			wantCode: 413, wantStats: NotifierStats{Rejected: 1}},
		{name: "bad JSON", body: `{"events": [`, wantCode: 400, wantBody: "malformed notification", wantStats: NotifierStats{Rejected: 1}},
		{name: "events not a list", body: `{"events": {}}`, wantCode: 400, wantBody: "malformed notification", wantStats: NotifierStats{Rejected: 1}},
		{name: "no events field", body: `{}`, wantCode: 400, wantBody: `no "events"`, wantStats: NotifierStats{Rejected: 1}},
		{name: "empty events", body: envelope(), wantCode: 200},
		{name: "layer and config pushes ignored",
			body:     envelope(ev("push", dockerLayer, "app", "", host), ev("push", dockerConfig, "app", "", host), okPush),
			wantCode: 200, wantPush: []pushed{{host + "/app:1", testDigest}}, wantStats: NotifierStats{Accepted: 1, Ignored: 2}},
		{name: "pull events ignored", body: envelope(ev("pull", ociManifest, "app", "1", host), ev("pull", dockerLayer, "app", "", host)),
			wantCode: 200, wantStats: NotifierStats{Ignored: 2}},
		{name: "delete ignored", body: envelope(ev("delete", ociManifest, "app", "1", host)), wantCode: 200, wantStats: NotifierStats{Ignored: 1}},
		{name: "tagless manifest push ignored", body: envelope(ev("push", ociManifest, "app", "", host)),
			wantCode: 200, wantStats: NotifierStats{Ignored: 1}},
		{name: "schema1 ignored", body: envelope(ev("push", "application/vnd.docker.distribution.manifest.v1+prettyjws", "app", "1", host)),
			wantCode: 200, wantStats: NotifierStats{Ignored: 1}},
		{name: "no host and no default ignored", body: envelope(ev("push", ociManifest, "app", "1", "")),
			wantCode: 200, wantStats: NotifierStats{Ignored: 1}},
		{name: "no host uses default", body: envelope(ev("push", ociManifest, "app", "1", "")),
			opts:     func(o *NotifierOptions) { o.DefaultHost = "10.0.0.1:5000" },
			wantCode: 200, wantPush: []pushed{{"10.0.0.1:5000/app:1", testDigest}}, wantStats: NotifierStats{Accepted: 1}},
		{name: "host alias", body: envelope(okPush),
			opts:     func(o *NotifierOptions) { o.HostAliases = map[string]string{host: "registry.nodes.example"} },
			wantCode: 200, wantPush: []pushed{{"registry.nodes.example/app:1", testDigest}}, wantStats: NotifierStats{Accepted: 1}},
		{name: "host with a path ignored", body: envelope(ev("push", ociManifest, "app", "1", "evil.example/x")),
			wantCode: 200, wantStats: NotifierStats{Ignored: 1}},
		{name: "bad tag ignored", body: envelope(ev("push", ociManifest, "app", "a b", host)),
			wantCode: 200, wantStats: NotifierStats{Ignored: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			opts := NotifierOptions{Token: testToken, OnPush: rec.onPush}
			if tc.opts != nil {
				tc.opts(&opts)
			}
			n, err := NewNotifier(opts)
			if err != nil {
				t.Fatal(err)
			}
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			req := httptest.NewRequest(method, "/events", strings.NewReader(tc.body))
			switch tc.auth {
			case "":
				req.Header.Set("Authorization", "Bearer "+testToken)
			case "-":
			default:
				req.Header.Set("Authorization", tc.auth)
			}
			ct := tc.contentType
			if ct == "" {
				ct = NotificationMediaType
			}
			req.Header.Set("Content-Type", ct)
			w := httptest.NewRecorder()
			n.ServeHTTP(w, req)

			if w.Code != tc.wantCode {
				t.Errorf("%s: status %d (%q), want %d", tc.name, w.Code, w.Body.String(), tc.wantCode)
			}
			if !strings.Contains(w.Body.String(), tc.wantBody) {
				t.Errorf("%s: body %q, want it to contain %q", tc.name, w.Body.String(), tc.wantBody)
			}
			if w.Code == 401 && strings.TrimSpace(w.Body.String()) != "unauthorized" {
				t.Errorf("%s: 401 body %q, want only \"unauthorized\"", tc.name, w.Body.String())
			}
			if got := rec.calls(); fmt.Sprint(got) != fmt.Sprint(tc.wantPush) {
				t.Errorf("%s: OnPush calls %v, want %v", tc.name, got, tc.wantPush)
			}
			if got := n.Stats(); got != tc.wantStats {
				t.Errorf("%s: stats %+v, want %+v", tc.name, got, tc.wantStats)
			}
		})
	}
}

func TestNewNotifierRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts NotifierOptions
	}{
		{"no token", NotifierOptions{OnPush: func(string, string) {}}},
		{"no callback", NotifierOptions{Token: "x"}},
	} {
		if _, err := NewNotifier(tc.opts); err == nil {
			t.Errorf("NewNotifier(%s) succeeded, want an error", tc.name)
		}
	}
}

// serveNotifier serves n on a loopback port until the test ends and
// returns the URL of its endpoint.
func serveNotifier(t *testing.T, n http.Handler) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeNotifications(ctx, lis, n) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeNotifications: %v", err)
		}
	})
	return "http://" + lis.Addr().String() + "/events"
}

func TestServeNotificationsShutsDown(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeNotifications(ctx, lis, http.NotFoundHandler()) }()
	resp, err := http.Get("http://" + lis.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeNotifications after cancel: %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeNotifications did not return after cancel")
	}
	if c, err := net.Dial("tcp", lis.Addr().String()); err == nil {
		c.Close()
		t.Errorf("listener still accepts after shutdown")
	}
}

// TestNotifierFromRegistry: the real registry notifies a real listener;
// a push of app:1 yields exactly one callback, with the manifest digest,
// and the blob uploads yield none.
func TestNotifierFromRegistry(t *testing.T) {
	ctx := context.Background()
	rec := newRecorder()
	n, err := NewNotifier(NotifierOptions{Token: testToken, OnPush: rec.onPush})
	if err != nil {
		t.Fatal(err)
	}
	url := serveNotifier(t, n)
	reg := testbed.StartRegistryT(t, testbed.RegistryOptions{NotifyURL: url, NotifyToken: testToken})

	img, err := testbed.BusyboxImage()
	if err != nil {
		t.Fatal(err)
	}
	d, err := reg.Push(ctx, "app:1", img)
	if err != nil {
		t.Fatal(err)
	}
	want := pushed{reg.Ref("app:1"), d}
	select {
	case got := <-rec.ch:
		if got != want {
			t.Errorf("OnPush(%q, %q), want (%q, %q)", got.ref, got.digest, want.ref, want.digest)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no OnPush within 5s of pushing %s (stats %+v)", want.ref, n.Stats())
	}

	// Distribution delivers events in order, so once an event sent after
	// the push has arrived, every event of the push has. A manifest pull
	// sends one; it is ignored too.
	ignoredBefore := n.Stats().Ignored
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+reg.Host()+"/v2/app/manifests/1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", ociManifest+", application/vnd.docker.distribution.manifest.v2+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	deadline := time.Now().Add(5 * time.Second)
	for n.Stats().Ignored == ignoredBefore {
		if time.Now().After(deadline) {
			t.Fatalf("no pull event within 5s (stats %+v)", n.Stats())
		}
		time.Sleep(10 * time.Millisecond) // polling a real registry, not a clock
	}

	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	st := n.Stats()
	if got := rec.calls(); len(got) != 1 || got[0] != want {
		t.Errorf("OnPush calls %v, want exactly [%v]", got, want)
	}
	// Each layer and the config is a tagless blob push, ignored; plus the pull.
	if minIgnored := uint64(len(layers) + 2); st.Accepted != 1 || st.Ignored < minIgnored || st.Rejected != 0 {
		t.Errorf("stats %+v, want Accepted 1, Ignored >= %d, Rejected 0", st, minIgnored)
	}
	t.Logf("stats %+v for a push of %d layers and a pull", st, len(layers))
}
