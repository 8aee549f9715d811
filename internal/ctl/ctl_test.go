package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/startgate/startgate/internal/admission"
	"github.com/startgate/startgate/internal/kubelet"
	"github.com/startgate/startgate/internal/server"
	"github.com/startgate/startgate/internal/version"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitFor = 10 * time.Second

type daemon struct {
	gate *admission.Gate
	sock string
}

// startDaemon serves a real gate on a real unix socket, as startgated
// does, without pressure (static limits).
func startDaemon(t *testing.T) *daemon {
	t.Helper()
	p := admission.DefaultPolicy()
	p.FixedInFlight, p.FixedRate, p.Burst = 4, 1000, 100
	return serveDaemon(t, p, nil)
}

// serveDaemon serves a real gate with policy pol and the prefetch RPCs of
// pf (nil: prefetch off) on a real unix socket.
func serveDaemon(t *testing.T, pol admission.Policy, pf server.Prefetcher) *daemon {
	t.Helper()
	g, err := admission.New(admission.Config{Policy: pol, Cores: 2})
	if err != nil {
		t.Fatalf("admission.New: %v", err)
	}
	srv, err := server.New(server.Config{Gate: g, Logger: zap.NewNop(), AdminGID: -1, Prefetch: pf})
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	sock := filepath.Join(t.TempDir(), "sg.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		g.Close()
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		srv.Stop(ctx)
		<-served
	})
	return &daemon{gate: g, sock: sock}
}

type result struct {
	code           int
	stdout, stderr string
}

func (d *daemon) run(t *testing.T, args ...string) result {
	t.Helper()
	return runCtl(t, append([]string{"--socket", d.sock}, args...)...)
}

func runCtl(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	var out, errb bytes.Buffer
	code := Run(ctx, args, Streams{In: strings.NewReader(""), Out: &out, Err: &errb})
	return result{code, out.String(), errb.String()}
}

func TestStatusJSON(t *testing.T) {
	d := startDaemon(t)
	r := d.run(t, "status", "-o", "json")
	if r.code != 0 {
		t.Fatalf("status -o json: exit %d, stderr %q", r.code, r.stderr)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("status -o json is not one JSON object: %v\n%s", err, r.stdout)
	}
	for _, k := range []string{"in_flight", "in_flight_limit", "rate", "queue_length", "pressure", "paused", "policy", "counters"} {
		if _, ok := got[k]; !ok {
			t.Errorf("status -o json lacks key %q: %s", k, r.stdout)
		}
	}
	pr, _ := got["pressure"].(map[string]any)
	for _, k := range []string{"cpu", "io", "memory"} {
		if _, ok := pr[k]; !ok {
			t.Errorf("status -o json pressure lacks %q: %v", k, got["pressure"])
		}
	}
	if got["in_flight_limit"] != 4.0 || got["rate"] != 1000.0 {
		t.Errorf("in_flight_limit, rate = %v, %v; want 4, 1000", got["in_flight_limit"], got["rate"])
	}

	r = d.run(t, "status", "-o", "yaml")
	if r.code != 0 || !strings.Contains(r.stdout, "in_flight_limit: 4") {
		t.Errorf("status -o yaml: exit %d, got %q, want in_flight_limit: 4", r.code, r.stdout)
	}
	r = d.run(t, "status")
	if r.code != 0 || !strings.Contains(r.stdout, "in flight:") || !strings.Contains(r.stdout, "0 / 4") {
		t.Errorf("status table: exit %d, got %q", r.code, r.stdout)
	}
}

func TestQueueJSONWithWaiters(t *testing.T) {
	d := startDaemon(t)
	d.gate.Pause()
	events, unsub := d.gate.Subscribe(64)
	defer unsub()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	reqs := []admission.Request{
		{Class: admission.Low, Tenant: "a", Description: "low one"},
		{Class: admission.High, Tenant: "b", Description: "high one"},
		{Class: admission.Normal, Tenant: "c", Description: "normal one"},
	}
	for _, req := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if l, err := d.gate.Acquire(ctx, req); err == nil {
				l.Release()
			}
		}()
	}
	for queued := 0; queued < len(reqs); {
		select {
		case e := <-events:
			if e.Type == admission.EventQueued {
				queued++
			}
		case <-time.After(waitFor):
			t.Fatalf("waiters not queued within %v", waitFor)
		}
	}

	r := d.run(t, "queue", "-o", "json")
	if r.code != 0 {
		t.Fatalf("queue -o json: exit %d, stderr %q", r.code, r.stderr)
	}
	var got []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("queue -o json is not a JSON list: %v\n%s", err, r.stdout)
	}
	if len(got) != 3 {
		t.Fatalf("queue -o json has %d waiters, want 3: %s", len(got), r.stdout)
	}
	for _, k := range []string{"id", "class", "tenant", "description", "enqueued", "waited", "deadline", "position"} {
		if _, ok := got[0][k]; !ok {
			t.Errorf("waiter lacks key %q: %v", k, got[0])
		}
	}
	wantOrder := []string{"high", "normal", "low"}
	for i, w := range got {
		if w["class"] != wantOrder[i] || w["position"] != float64(i+1) {
			t.Errorf("waiter %d = class %v position %v, want %s at %d", i, w["class"], w["position"], wantOrder[i], i+1)
		}
	}
	r = d.run(t, "queue")
	if r.code != 0 || !strings.Contains(r.stdout, "POS") || !strings.Contains(r.stdout, "high one") {
		t.Errorf("queue table: exit %d, got %q", r.code, r.stdout)
	}
}

func TestPauseResume(t *testing.T) {
	d := startDaemon(t)
	for _, tc := range []struct {
		args   []string
		out    string
		paused bool
	}{
		{[]string{"pause"}, "paused\n", true},
		{[]string{"resume"}, "resumed\n", false},
		{[]string{"pause", "-o", "json"}, "{\n  \"result\": \"paused\"\n}\n", true},
	} {
		r := d.run(t, tc.args...)
		if r.code != 0 || r.stdout != tc.out {
			t.Errorf("%v: exit %d, out %q, stderr %q; want 0, %q", tc.args, r.code, r.stdout, r.stderr, tc.out)
		}
		if got := d.gate.Status().Paused; got != tc.paused {
			t.Errorf("after %v paused = %v, want %v", tc.args, got, tc.paused)
		}
	}
	r := d.run(t, "drain", "--timeout", "5s")
	if r.code != 0 || r.stdout != "drained\n" {
		t.Errorf("drain: exit %d, out %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestBypass(t *testing.T) {
	d := startDaemon(t)
	status := func() map[string]any {
		t.Helper()
		r := d.run(t, "status", "-o", "json")
		var got map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &got); r.code != 0 || err != nil {
			t.Fatalf("status -o json: exit %d, %v, stderr %q", r.code, err, r.stderr)
		}
		return got
	}
	if got, ok := status()["bypassed"]; !ok || got != false {
		t.Errorf("status -o json before bypass: bypassed = %v (present %v), want false", got, ok)
	}
	for _, tc := range []struct {
		args     []string
		out      string
		bypassed bool
	}{
		{[]string{"bypass", "on"}, "bypass on\n", true},
		{[]string{"bypass", "off"}, "bypass off\n", false},
		{[]string{"bypass", "on", "-o", "json"}, "{\n  \"result\": \"bypass on\",\n  \"bypassed\": true\n}\n", true},
	} {
		r := d.run(t, tc.args...)
		if r.code != 0 || r.stdout != tc.out {
			t.Errorf("%v: exit %d, out %q, stderr %q; want 0, %q", tc.args, r.code, r.stdout, r.stderr, tc.out)
		}
		if got := d.gate.Bypassed(); got != tc.bypassed {
			t.Errorf("after %v gate bypassed = %v, want %v", tc.args, got, tc.bypassed)
		}
	}
	if got := status()["bypassed"]; got != true {
		t.Errorf("status -o json after bypass on: bypassed = %v, want true", got)
	}
	// Bypass shows over pause: it is what decides whether starts wait.
	d.gate.Pause()
	if r := d.run(t, "status"); r.code != 0 || !strings.Contains(r.stdout, "gate:") || !strings.Contains(r.stdout, "bypassed\n") {
		t.Errorf("status table while bypassed: exit %d, got %q, want a gate: bypassed line", r.code, r.stdout)
	}
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"bypass"}, "accepts 1 arg"},
		{[]string{"bypass", "maybe"}, "want on or off"},
		{[]string{"bypass", "on", "off"}, "accepts 1 arg"},
	} {
		if r := d.run(t, tc.args...); r.code != 2 || !strings.Contains(r.stderr, tc.err) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, r.code, r.stderr, tc.err)
		}
	}
	if !d.gate.Bypassed() {
		t.Errorf("a refused bypass command changed the gate: bypassed false, want true")
	}
}

func TestWatchShowsBypassByName(t *testing.T) {
	d := startDaemon(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb bytes.Buffer
	done := make(chan int, 1)
	w := &lockedBuffer{b: &out}
	go func() {
		done <- Run(ctx, []string{"--socket", d.sock, "watch", "-o", "json"}, Streams{In: strings.NewReader(""), Out: w, Err: &errb})
	}()
	// The watch has subscribed once a pause reaches it.
	eventually(t, "watch prints a paused event", func() bool {
		d.gate.Pause()
		d.gate.Resume()
		return strings.Contains(w.String(), `"type":"paused"`)
	})
	d.gate.SetBypass(true)
	d.gate.SetBypass(false)
	eventually(t, "watch prints the bypass-off event", func() bool { return strings.Contains(w.String(), `"type":"bypass-off"`) })
	if !strings.Contains(w.String(), `"type":"bypass-on"`) {
		t.Errorf("watch -o json lacks the bypass-on event: %q", w.String())
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("watch after interrupt: exit %d, stderr %q; want 0", code, errb.String())
	}
}

// eventually polls cond on a real socket's behalf: there is no clock to
// advance between a daemon and its client.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v: %s", waitFor, what)
		}
		<-tick.C
	}
}

// lockedBuffer lets a test read what a running command has printed.
type lockedBuffer struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestHold(t *testing.T) {
	d := startDaemon(t)
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"exit code", []string{"hold", "--", "sh", "-c", "exit 3"}, 3, "", ""},
		{"success", []string{"hold", "--class", "high", "--tenant", "t", "echo", "hi"}, 0, "hi\n", ""},
		{"verbose", []string{"hold", "-v", "--", "true"}, 0, "", "startgatectl: granted lease"},
		{"signalled", []string{"hold", "--", "sh", "-c", "kill -TERM $$"}, 143, "", ""},
		{"not found", []string{"hold", "--", "/nonexistent/cmd"}, 127, "", "startgatectl:"},
		{"bad class", []string{"hold", "--class", "urgent", "--", "true"}, 2, "", "unknown class"},
		{"no command", []string{"hold"}, 2, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := d.run(t, tc.args...)
			if r.code != tc.code || r.stdout != tc.stdout || !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("%v: exit %d, out %q, stderr %q; want %d, %q, stderr containing %q", tc.args, r.code, r.stdout, r.stderr, tc.code, tc.stdout, tc.stderr)
			}
			if got := d.gate.Status().InFlight; got != 0 {
				t.Errorf("in flight after hold = %d, want 0", got)
			}
		})
	}
	if got := d.gate.Status().Counters.Admitted; got != 4 {
		t.Errorf("admitted = %d, want 4 (one per command that ran)", got)
	}
}

func TestSetAndRelease(t *testing.T) {
	d := startDaemon(t)
	r := d.run(t, "set", "--inflight", "7", "--on-deadline", "refuse", "--cpu-target", "0.5", "-o", "json")
	if r.code != 0 {
		t.Fatalf("set: exit %d, stderr %q", r.code, r.stderr)
	}
	var p Policy
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil {
		t.Fatalf("set -o json: %v\n%s", err, r.stdout)
	}
	if p.FixedInFlight != 7 || p.OnDeadline != "refuse" || p.Targets["cpu"] != 0.5 {
		t.Errorf("set returned %+v, want fixed_in_flight 7, refuse, cpu 0.5", p)
	}
	for _, tc := range []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"set"}, 2, "nothing to change"},
		{[]string{"set", "--on-deadline", "maybe"}, 2, "admit or refuse"},
		{[]string{"set", "--cpu-target", "2"}, 1, "cpu"},
		{[]string{"release", "x"}, 2, "positive integer"},
		{[]string{"release", "99"}, 1, "no such lease"},
		{[]string{"status", "extra"}, 2, "unknown command"},
	} {
		r := d.run(t, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.err) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, r.code, r.stderr, tc.code, tc.err)
		}
	}
}

func TestUnreachable(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "missing.sock")
	for _, args := range [][]string{{"status"}, {"queue", "-o", "json"}, {"pause"}, {"hold", "--fail-open=false", "--", "true"}, {"watch"}} {
		r := runCtl(t, append([]string{"--socket", sock}, args...)...)
		want := "cannot reach startgated at " + sock + ": is it running?\n"
		if r.code == 0 || r.stderr != want {
			t.Errorf("%v: exit %d, stderr %q; want non-zero and %q", args, r.code, r.stderr, want)
		}
	}
	// A socket file nobody listens on: connection refused.
	lis, err := net.Listen("unix", filepath.Join(t.TempDir(), "dead.sock"))
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	dead := lis.Addr().String()
	lis.(*net.UnixListener).SetUnlinkOnClose(false)
	lis.Close()
	r := runCtl(t, "--socket", dead, "status")
	if want := "cannot reach startgated at " + dead + ": is it running?\n"; r.code == 0 || r.stderr != want {
		t.Errorf("refused socket: exit %d, stderr %q; want %q", r.code, r.stderr, want)
	}
}

// hold fails open: with no daemon it warns and still runs COMMAND,
// exiting with its code.
func TestHoldFailsOpen(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "missing.sock")
	r := runCtl(t, "--socket", sock, "hold", "--", "sh", "-c", "echo ran; exit 4")
	if r.code != 4 || r.stdout != "ran\n" {
		t.Fatalf("hold without a daemon: exit %d, stdout %q; want 4 and %q", r.code, r.stdout, "ran\n")
	}
	want := "startgatectl: warning: cannot reach startgated at " + sock + ": is it running?; running the command without a start slot\n"
	if r.stderr != want {
		t.Fatalf("hold without a daemon: stderr %q, want %q", r.stderr, want)
	}
}

// version prints the client's build and the daemon's; with no daemon the
// client's, and fails; --client never calls.
func TestVersion(t *testing.T) {
	d := startDaemon(t)
	want := version.Get().String()
	r := d.run(t, "version")
	if r.code != 0 || r.stdout != "client: "+want+"\ndaemon: "+want+"\n" {
		t.Errorf("version: exit %d, stdout %q, want both lines with %q", r.code, r.stdout, want)
	}
	r = d.run(t, "version", "-o", "json")
	var got versionOut
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != 0 || got.Daemon == nil || got.Daemon.GoVersion != version.Get().GoVersion {
		t.Errorf("version -o json: exit %d, %q (%v), want client and daemon", r.code, r.stdout, err)
	}
	sock := filepath.Join(t.TempDir(), "missing.sock")
	r = runCtl(t, "--socket", sock, "version")
	if r.code == 0 || r.stdout != "client: "+want+"\n" || !strings.Contains(r.stderr, "cannot reach startgated") {
		t.Errorf("version with no daemon: exit %d, stdout %q, stderr %q; want the client's line and a failure", r.code, r.stdout, r.stderr)
	}
	r = runCtl(t, "--socket", sock, "version", "--client")
	if r.code != 0 || r.stdout != "client: "+want+"\n" {
		t.Errorf("version --client with no daemon: exit %d, stdout %q, want the client's line only", r.code, r.stdout)
	}
}

// node enable refuses to point kubelet at a socket nobody answers on;
// with a CRI server there it switches the config file, status says so,
// and disable puts it back.
func TestNodeEnableDisable(t *testing.T) {
	// A kubeadm node's root (internal/kubelet's fixture): the endpoint is
	// in /var/lib/kubelet/config.yaml.
	root := t.TempDir()
	if out, err := exec.Command("cp", "-a", "../kubelet/testdata/layouts/kubeadm/.", root).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	cfg := filepath.Join(root, "var/lib/kubelet/config.yaml")
	before, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(root, "cri.sock")
	endpoint := "unix://" + sock
	state := filepath.Join(t.TempDir(), "state")
	args := func(a ...string) []string {
		return append([]string{"node"}, append(a, "--root", root, "--state-dir", state)...)
	}
	r := runCtl(t, args("enable", "--endpoint", endpoint)...)
	if r.code == 0 || !strings.Contains(r.stderr, "does not answer") {
		t.Fatalf("enable with nothing on the socket: exit %d, stderr %q; want a refusal", r.code, r.stderr)
	}
	if b, _ := os.ReadFile(cfg); string(b) != string(before) {
		t.Fatalf("a refused enable changed the config:\n%s", b)
	}
	// startgated forwarding to another runtime than kubelet's: refused.
	other := filepath.Join(root, "etc/startgate/config.toml")
	if err := os.MkdirAll(filepath.Dir(other), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(other, []byte("version = 1\n[cri]\ncontainerd_socket = \"/var/run/crio/crio.sock\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = runCtl(t, args("enable", "--endpoint", endpoint, "--dry-run")...)
	if r.code == 0 || !strings.Contains(r.stderr, "startgated forwards to /var/run/crio/crio.sock") || !strings.Contains(r.stderr, "cri.containerd_socket") {
		t.Fatalf("enable with startgated forwarding to another runtime: exit %d, stderr %q; want a refusal naming cri.containerd_socket", r.code, r.stderr)
	}
	if err := os.Remove(other); err != nil {
		t.Fatal(err)
	}
	// --dry-run: a diff of the one line and the unit drop-in, nothing written.
	r = runCtl(t, args("enable", "--endpoint", endpoint, "--dry-run")...)
	if r.code != 0 || !strings.Contains(r.stdout, "+containerRuntimeEndpoint: \""+endpoint+"\"") || !strings.Contains(r.stdout, "-containerRuntimeEndpoint: \"unix:///var/run/containerd/containerd.sock\"") || !strings.Contains(r.stdout, "+++ "+kubelet.UnitDropIn) {
		t.Fatalf("enable --dry-run: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if b, _ := os.ReadFile(cfg); string(b) != string(before) {
		t.Fatalf("--dry-run changed the config:\n%s", b)
	}

	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(srv, versionOnly{})
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	r = runCtl(t, args("enable", "--endpoint", endpoint)...)
	if r.code != 0 || !strings.Contains(r.stdout, "/var/lib/kubelet/config.yaml: runtime endpoint "+endpoint) {
		t.Fatalf("enable: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = runCtl(t, args("status", "-o", "json")...)
	var st struct {
		Layout  struct{ Effective string }
		Enabled bool
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Layout.Effective != endpoint || !st.Enabled {
		t.Fatalf("status -o json after enable: %q (%v)", r.stdout, err)
	}
	r = runCtl(t, args("disable")...)
	if r.code != 0 {
		t.Fatalf("disable: exit %d, stderr %q", r.code, r.stderr)
	}
	if b, _ := os.ReadFile(cfg); string(b) != string(before) {
		t.Fatalf("config after disable:\n%s\nwant as before", b)
	}
	if _, err := os.Stat(filepath.Join(root, kubelet.UnitDropIn)); !os.IsNotExist(err) {
		t.Errorf("the kubelet unit drop-in is still there after disable: %v", err)
	}
	if r := runCtl(t, args("disable")...); r.code == 0 {
		t.Error("disable of a node not switched succeeded")
	}
	if r := runCtl(t, args("disable", "--if-enabled")...); r.code != 0 {
		t.Errorf("disable --if-enabled of a node not switched: exit %d, %q", r.code, r.stderr)
	}
	// A node without kubelet at all (package removal on a plain host):
	// nothing to undo, quietly; without --if-enabled, an error that is
	// not a usage error.
	empty := t.TempDir()
	if r := runCtl(t, "node", "disable", "--if-enabled", "--root", empty, "--state-dir", filepath.Join(empty, "state")); r.code != 0 || r.stderr != "" {
		t.Errorf("disable --if-enabled without kubelet: exit %d, stderr %q; want 0 and quiet", r.code, r.stderr)
	}
	if r := runCtl(t, "node", "disable", "--root", empty, "--state-dir", filepath.Join(empty, "state")); r.code != 1 || !strings.Contains(r.stderr, "no kubelet") || strings.Contains(r.stderr, "for usage") {
		t.Errorf("disable without kubelet: exit %d, stderr %q; want 1 naming the missing kubelet, no usage hint", r.code, r.stderr)
	}
}

type versionOnly struct {
	runtimeapi.UnimplementedRuntimeServiceServer
}

func (versionOnly) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{RuntimeName: "startgate"}, nil
}
