package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/startgate/startgate/internal/admission"
	"github.com/startgate/startgate/internal/config"
	"github.com/startgate/startgate/internal/pressure"
	startgatev1 "github.com/startgate/startgate/proto/startgate/v1"
)

// waitFor polls cond until it holds or the test's patience runs out.
// Integration tests wait on a real process; there is no clock to advance.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func testConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg := config.DefaultConfig()
	cfg.Daemon.Socket = filepath.Join(t.TempDir(), "run", "startgate.sock")
	cfg.Daemon.ShutdownTimeout = config.Duration(5 * time.Second)
	// Off unless a test asks: the default's fixed port would be shared
	// by every daemon the tests start at once.
	cfg.Metrics.Listen = ""
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// status calls the Status RPC on the socket at path.
func status(ctx context.Context, path string) (*startgatev1.StatusResponse, error) {
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return startgatev1.NewStartgateClient(conn).Status(ctx, &startgatev1.StatusRequest{}, grpc.WaitForReady(true))
}

type running struct {
	cancel context.CancelFunc
	done   chan error
	logs   *observer.ObservedLogs
}

func startRun(t *testing.T, cfg *config.Config) *running {
	t.Helper()
	return startRunReload(t, cfg, nil)
}

func startRunReload(t *testing.T, cfg *config.Config, reload *Reload) *running {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1), logs: logs}
	go func() { r.done <- Run(ctx, cfg, zap.New(core), reload) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(20 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return r
}

func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return within 20s of cancel")
		return nil
	}
}

func TestRunServesAndShutsDown(t *testing.T) {
	cfg := testConfig(t)
	cfg.Metrics.Listen = "127.0.0.1:0"
	r := startRun(t, cfg)
	sock := cfg.Daemon.Socket
	// Dialling before the socket exists would cost a gRPC reconnect
	// backoff.
	waitFor(t, "the API socket", func() bool { _, err := os.Lstat(sock); return err == nil })

	resp, err := status(context.Background(), sock)
	if err != nil {
		t.Fatalf("Status on %s: %v", sock, err)
	}
	if resp.GetInFlightLimit() < 1 {
		t.Errorf("Status in_flight_limit = %d, want >= 1", resp.GetInFlightLimit())
	}
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o660 {
		t.Errorf("socket mode = %04o, want 0660", got)
	}
	if fi.Mode().Type() != os.ModeSocket {
		t.Errorf("socket type = %v, want a socket", fi.Mode().Type())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Gid) != os.Getgid() {
		t.Errorf("socket gid = %d, want the daemon's group %d", st.Gid, os.Getgid())
	}

	// The endpoint says where it listens once it does; it must serve.
	addr := endpointAddr(t, r)
	body := httpGet(t, "http://"+addr+"/metrics")
	if !strings.Contains(body, "# TYPE") {
		t.Errorf("GET /metrics on %s returned no metrics:\n%.500s", addr, body)
	}

	if err := r.stop(t); err != nil {
		t.Errorf("Run after cancel = %v, want nil", err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket %s after shutdown: Lstat error %v, want not-exist", sock, err)
	}
}

// endpointAddr waits for the metrics endpoint's "listening" line and
// returns its address.
func endpointAddr(t *testing.T, r *running) string {
	t.Helper()
	const msg = "metrics and health endpoint listening"
	waitFor(t, "the metrics endpoint", func() bool { return r.logs.FilterMessage(msg).Len() > 0 })
	addr, _ := r.logs.FilterMessage(msg).All()[0].ContextMap()["address"].(string)
	return addr
}

// httpGet is get's body.
func httpGet(t *testing.T, url string) string {
	t.Helper()
	_, body := get(t, url)
	return body
}

func TestRunRemovesStaleSocket(t *testing.T) {
	cfg := testConfig(t)
	if err := os.MkdirAll(filepath.Dir(cfg.Daemon.Socket), 0o755); err != nil {
		t.Fatal(err)
	}
	// A socket file nobody listens on, as a crashed daemon leaves it.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.Daemon.Socket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()

	r := startRun(t, cfg)
	if _, err := status(context.Background(), cfg.Daemon.Socket); err != nil {
		t.Fatalf("Status over a replaced stale socket: %v", err)
	}
	if err := r.stop(t); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

func TestRunRefusesLiveSocket(t *testing.T) {
	cfg := testConfig(t)
	if err := os.MkdirAll(filepath.Dir(cfg.Daemon.Socket), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", cfg.Daemon.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	err = Run(context.Background(), cfg, zap.NewNop(), nil)
	if err == nil || !strings.Contains(err.Error(), "another process is serving on "+cfg.Daemon.Socket) {
		t.Errorf("Run with a live socket = %v, want an error naming the socket", err)
	}
	if _, err := os.Lstat(cfg.Daemon.Socket); err != nil {
		t.Errorf("the live daemon's socket was touched: %v", err)
	}
}

func TestRunRefusesNonSocket(t *testing.T) {
	cfg := testConfig(t)
	if err := os.MkdirAll(filepath.Dir(cfg.Daemon.Socket), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.Daemon.Socket, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := Run(context.Background(), cfg, zap.NewNop(), nil)
	if err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Run with a regular file at the socket path = %v, want a not-a-socket error", err)
	}
}

func TestRunWithoutPSIStillServes(t *testing.T) {
	cfg := testConfig(t)
	// A proc root without pressure files: the gate falls back to static
	// limits, the daemon does not fail.
	cfg.Pressure.ProcRoot = t.TempDir()
	r := startRun(t, cfg)
	resp, err := status(context.Background(), cfg.Daemon.Socket)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	waitFor(t, "the static fallback", func() bool {
		resp, err = status(context.Background(), cfg.Daemon.Socket)
		return err == nil && resp.GetPressureError() != ""
	})
	if got := resp.GetControllerState(); got != string(admission.StateStatic) {
		t.Errorf("controller_state without PSI = %q, want %q", got, admission.StateStatic)
	}
	if err := r.stop(t); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

func TestSystemdNotify(t *testing.T) {
	dir := t.TempDir()
	nsock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: nsock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", nsock)
	t.Setenv("WATCHDOG_USEC", "200000")

	msgs := make(chan string, 100)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	defer func() { conn.Close(); <-readDone }()

	expect := func(want string) []string {
		t.Helper()
		var seen []string
		timeout := time.After(15 * time.Second)
		for {
			select {
			case m := <-msgs:
				seen = append(seen, m)
				if strings.HasPrefix(m, want) {
					return seen
				}
			case <-timeout:
				t.Fatalf("no %q from the daemon; got %q", want, seen)
			}
		}
	}

	cfg := testConfig(t)
	r := startRun(t, cfg)
	before := expect("READY=1")
	for _, m := range before {
		if strings.HasPrefix(m, "WATCHDOG=1") {
			t.Errorf("watchdog pinged before READY=1: %q", before)
		}
	}
	if _, err := os.Lstat(cfg.Daemon.Socket); err != nil {
		t.Errorf("READY=1 sent before the socket existed: %v", err)
	}
	// The first STATUS= goes out right after READY=1, the watchdog ping
	// half WATCHDOG_USEC later.
	seen := expect("STATUS=in-flight ")
	t.Logf("status: %q", seen[len(seen)-1])
	expect("WATCHDOG=1")
	if err := r.stop(t); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	expect("STOPPING=1")
}

func TestSocketActivation(t *testing.T) {
	tool, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("systemd-socket-activate not found (install the systemd package): %v", err)
		}
		t.Skipf("systemd-socket-activate not found: %v", err)
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "activated.sock")
	unused := filepath.Join(dir, "unused.sock")
	cfgFile := filepath.Join(dir, "config.toml")
	err = os.WriteFile(cfgFile, []byte(fmt.Sprintf("version = 1\n[daemon]\nsocket = %q\nlog_format = \"json\"\n", unused)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	// systemd-socket-activate listens on sock, then on the first
	// connection execs the daemon with the socket as fd 3 and LISTEN_PID
	// set to its own pid, which exec keeps: the real protocol.
	cmd := exec.Command(tool, "-l", sock, "-E", childEnv+"=1", os.Args[0], "--config", cfgFile)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	})
	waitFor(t, "the activation socket", func() bool { _, err := os.Lstat(sock); return err == nil })

	if _, err := status(context.Background(), sock); err != nil {
		t.Fatalf("Status over the activated socket: %v\n%s", err, stderr.String())
	}
	if _, err := os.Lstat(unused); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("daemon created its own socket %s despite activation (Lstat: %v)", unused, err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Errorf("daemon exit after SIGTERM = %v, want exit 0\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("daemon did not exit within 20s of SIGTERM\n%s", stderr.String())
	}
	logs := stderr.String()
	if !strings.Contains(logs, `"socket_activated":true`) {
		t.Errorf("start line does not report socket activation:\n%s", logs)
	}
	if !strings.Contains(logs, `"msg":"startgated stopped"`) {
		t.Errorf("no clean-stop line:\n%s", logs)
	}
}

func TestStatusLine(t *testing.T) {
	tests := []struct {
		name string
		st   admission.Status
		cri  bool
		note string
		want string
	}{
		{"psi", admission.Status{
			Limits: admission.Limits{InFlight: 8, Rate: 12.5}, InFlight: 3, Queued: 4,
			Pressure: pressure.Sample{Some: pressure.Values{0.5, 0.125, 0}},
		}, false, "", "in-flight 3/8, queued 4, rate 12.5/s, cpu 50% io 12% mem 0%"},
		{"no psi paused", admission.Status{
			Limits: admission.Limits{InFlight: 4, Rate: 10}, PressureErr: "x", Paused: true,
		}, false, "", "in-flight 0/4, queued 0, rate 10.0/s, PSI unavailable (static limits), paused"},
		{"bypassed with cri", admission.Status{
			Limits: admission.Limits{InFlight: 4, Rate: 10}, PressureErr: "x", Paused: true, Bypassed: true,
		}, true, "", "in-flight 0/4, queued 0, rate 10.0/s, PSI unavailable (static limits), bypassed, cri: on"},
		{"metrics retrying", admission.Status{
			Limits: admission.Limits{InFlight: 4, Rate: 10}, PressureErr: "x",
		}, true, "metrics: not listening on 127.0.0.1:10366 (bind: address already in use), retrying",
			"in-flight 0/4, queued 0, rate 10.0/s, PSI unavailable (static limits), cri: on, metrics: not listening on 127.0.0.1:10366 (bind: address already in use), retrying"},
	}
	for _, tt := range tests {
		if got := statusLine(tt.st, tt.cri, tt.note); got != tt.want {
			t.Errorf("statusLine(%s) = %q, want %q", tt.name, got, tt.want)
		}
	}
}
