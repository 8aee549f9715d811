package daemon

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/startgate/startgate/internal/admission"
)

// fakeGate stands in for the gate's liveness.
type fakeGate struct{ stuck, bypassed atomic.Bool }

func (g *fakeGate) Alive(time.Time) bool { return !g.stuck.Load() }
func (g *fakeGate) Bypassed() bool       { return g.bypassed.Load() }
func (g *fakeGate) Status() admission.Status {
	return admission.Status{Bypassed: g.bypassed.Load()}
}

// get returns the status code and body of GET url.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestHealthChecks(t *testing.T) {
	dir := t.TempDir()
	criSock, upstream := filepath.Join(dir, "cri.sock"), filepath.Join(dir, "containerd.sock")
	lis, err := net.Listen("unix", criSock)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	serveFakeContainerd(t, upstream)
	cri, err := newCRIReadiness(criSock, upstream)
	if err != nil {
		t.Fatal(err)
	}
	defer cri.close()
	g := &fakeGate{}
	h := &health{gate: g, now: time.Now, cri: cri}
	mux := http.NewServeMux()
	h.install(mux, zap.NewNop())
	srv := httptest.NewServer(mux)
	defer srv.Close()

	tests := []struct {
		name  string
		setup func()
		path  string
		code  int
		want  []string // in the body
	}{
		{"proxy not serving yet", func() {}, "/readyz?verbose", 500,
			[]string{"[+]admission ok", "[-]cri-socket failed: the CRI proxy is not serving " + criSock, "[+]containerd ok", "readyz check failed"}},
		{"serving and containerd answers", func() { cri.serving.Store(true) }, "/readyz?verbose", 200,
			[]string{"[+]ping ok", "[+]admission ok", "[+]shutdown ok", "[+]cri-socket ok", "[+]containerd ok", "readyz check passed"}},
		{"healthz", func() {}, "/healthz", 200, []string{"ok"}},
		{"livez names its checks", func() {}, "/livez?verbose", 200, []string{"[+]ping ok\n[+]admission ok\nlivez check passed\n"}},
		// An operator's bypass fails open by choice: healthy, and said.
		{"bypassed", func() { g.bypassed.Store(true) }, "/readyz?verbose", 200,
			[]string{"[+]admission ok", "warn: admission: bypassed by an operator (startgatectl bypass on)"}},
		{"bypassed, not verbose", func() {}, "/healthz", 200, []string{"ok"}},
		// A stuck controller fails open: every endpoint says it.
		{"stuck: healthz", func() { g.bypassed.Store(false); g.stuck.Store(true) }, "/healthz", 500,
			[]string{"[-]admission failed: the admission controller has stopped ticking", "fail open", "healthz check failed"}},
		{"stuck: livez", func() {}, "/livez", 500, []string{"[-]admission failed", "livez check failed"}},
		{"stuck: readyz", func() {}, "/readyz", 500, []string{"[-]admission failed", "[+]containerd ok"}},
		{"stuck: one check", func() {}, "/livez/admission", 500, []string{"internal server error: the admission controller has stopped ticking"}},
		{"the socket file removed", func() { g.stuck.Store(false); os.Remove(criSock) }, "/readyz", 500,
			[]string{"[-]cri-socket failed: kubelet's endpoint cannot be reached", criSock}},
		{"shutting down: not ready, still live", func() { h.stopping.Store(true) }, "/readyz", 500,
			[]string{"[-]shutdown failed: startgated is shutting down"}},
		{"shutting down: live", func() {}, "/livez", 200, []string{"ok"}},
	}
	for _, tt := range tests {
		tt.setup()
		code, body := get(t, srv.URL+tt.path)
		if code != tt.code {
			t.Errorf("%s: GET %s = %d, want %d\n%s", tt.name, tt.path, code, tt.code, body)
		}
		for _, w := range tt.want {
			if !strings.Contains(body, w) {
				t.Errorf("%s: GET %s body:\n%s\nwant it to contain %q", tt.name, tt.path, body, w)
			}
		}
	}
}

// containerd not answering fails readiness, naming its socket.
func TestReadyzContainerdDown(t *testing.T) {
	dir := t.TempDir()
	upstream := filepath.Join(dir, "containerd.sock")
	cri, err := newCRIReadiness(filepath.Join(dir, "cri.sock"), upstream)
	if err != nil {
		t.Fatal(err)
	}
	defer cri.close()
	req := httptest.NewRequest(http.MethodGet, "/readyz/containerd", nil)
	if err := cri.containerdAnswers(req); err == nil || !strings.Contains(err.Error(), "containerd on "+upstream+" does not answer a CRI Version") {
		t.Errorf("containerd down: %v, want an error naming %s", err, upstream)
	}
}

// The watchdog is pinged on the signal /healthz answers: while it fails,
// no ping goes out and the log says why.
func TestWatchdogWithheldWhileNotAlive(t *testing.T) {
	nsock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: nsock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", nsock)
	t.Setenv("WATCHDOG_USEC", "20000")
	g := &fakeGate{}
	g.stuck.Store(true)
	core, logs := observer.New(zap.DebugLevel)
	n := notifier{log: zap.New(core), alive: func(now time.Time) error { return controllerTicking(g, now) }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.run(ctx, g) }()
	waitFor(t, "two withheld pings", func() bool { return logs.FilterMessageSnippet("withholding the watchdog ping").Len() >= 2 })
	cancel()
	<-done
	if err := conn.SetReadDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for {
		k, err := conn.Read(buf)
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatal(err)
			}
			break
		}
		if m := string(buf[:k]); strings.HasPrefix(m, "WATCHDOG=1") {
			t.Errorf("watchdog pinged while the controller was stuck: %q", m)
		}
	}
	if e := logs.FilterMessageSnippet("withholding").All()[0].ContextMap()["error"]; !strings.Contains(e.(string), "stopped ticking") {
		t.Errorf("withheld ping's error = %q, want the liveness error", e)
	}
}

// listenNotify stands in for systemd's notify socket: every message the
// daemon sends arrives on the channel.
func listenNotify(t *testing.T) <-chan string {
	t.Helper()
	nsock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: nsock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", nsock)
	msgs := make(chan string, 1000)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			select {
			case msgs <- string(buf[:n]):
			default:
			}
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return msgs
}

// awaitNotify waits for a message that starts with prefix and contains
// every one of parts.
func awaitNotify(t *testing.T, msgs <-chan string, prefix string, parts ...string) string {
	t.Helper()
	timeout := time.After(15 * time.Second)
	var seen []string
	for {
		select {
		case m := <-msgs:
			seen = append(seen, m)
			if strings.HasPrefix(m, prefix) && !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(m, p) }) {
				return m
			}
		case <-timeout:
			t.Fatalf("no %q with %q from the daemon; got %q", prefix, parts, seen)
			return ""
		}
	}
}

// The whole daemon with its metrics port taken by another process: the
// CRI socket is served and READY=1 sent all the same, `systemctl status`
// says the endpoint is retrying, and once the port is free the endpoint
// comes up by itself with the health checks: live, and ready once
// containerd answers.
func TestRunWithItsMetricsPortTaken(t *testing.T) {
	holder, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	addr := holder.Addr().String()
	msgs := listenNotify(t)

	cfg := testConfig(t)
	dir := t.TempDir()
	cfg.Metrics.Listen = addr
	cfg.CRI.Enabled = true
	cfg.CRI.Socket = filepath.Join(dir, "cri.sock")
	cfg.CRI.ContainerdSocket = filepath.Join(dir, "containerd", "containerd.sock")
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	r := startRun(t, cfg)

	awaitNotify(t, msgs, "READY=1")
	if _, err := criVersion(t, cfg.CRI.Socket); err == nil || !strings.Contains(err.Error(), "Unavailable") {
		// containerd is not up: the proxy answers, Unavailable.
		t.Errorf("CRI Version before containerd = %v, want the proxy's Unavailable", err)
	}
	// The endpoint tries beside READY=1, not before it: the first STATUS
	// may precede its first attempt; a later one (every statusEvery)
	// says it.
	waitFor(t, "a failed attempt to listen", func() bool { return r.logs.FilterMessageSnippet("cannot listen").Len() > 0 })
	awaitNotify(t, msgs, "STATUS=", ", cri: on, metrics: not listening on "+addr+" (bind: address already in use), retrying")
	if r.logs.FilterMessage("metrics and health endpoint listening").Len() != 0 {
		t.Fatal("the endpoint says it listens on a port another process holds")
	}

	holder.Close()
	if got := endpointAddr(t, r); got != addr {
		t.Errorf("endpoint listens on %s, want %s", got, addr)
	}
	base := "http://" + addr
	if code, body := get(t, base+"/healthz"); code != 200 || body != "ok" {
		t.Errorf("GET /healthz = %d %q, want 200 ok", code, body)
	}
	code, body := get(t, base+"/readyz?verbose")
	if code != 500 || !strings.Contains(body, "[+]cri-socket ok") || !strings.Contains(body, "[-]containerd failed: containerd on "+cfg.CRI.ContainerdSocket) {
		t.Errorf("GET /readyz with containerd down = %d\n%s\nwant 500, the CRI socket served, containerd failed", code, body)
	}
	if _, m := get(t, base+"/metrics"); !strings.Contains(m, "startgate_metrics_listen_failures_total") || strings.Contains(m, "startgate_metrics_listen_failures_total 0\n") {
		t.Errorf("metrics do not count the failed attempts to listen:\n%.2000s", m)
	}

	serveFakeContainerd(t, cfg.CRI.ContainerdSocket)
	waitFor(t, "readiness once containerd answers", func() bool { code, _ := get(t, base+"/readyz"); return code == 200 })
	if err := r.stop(t); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}
