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
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/startgate/startgate/internal/config"
	startgatev1 "github.com/startgate/startgate/proto/startgate/v1"
)

// criVersion calls CRI Version through the socket at path, bounded by a
// deadline long enough that running into it means the proxy hung.
func criVersion(t *testing.T, path string) (*runtimeapi.VersionResponse, error) {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient(%s): %v", path, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return runtimeapi.NewRuntimeServiceClient(conn).Version(ctx, &runtimeapi.VersionRequest{})
}

// fakeContainerd is a CRI runtime answering Version and RunPodSandbox, on
// a real socket.
type fakeContainerd struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	sandboxes atomic.Int32
}

func (f *fakeContainerd) RunPodSandbox(context.Context, *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	n := f.sandboxes.Add(1)
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: fmt.Sprintf("sandbox-%d", n)}, nil
}

func (*fakeContainerd) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{Version: "0.1.0", RuntimeName: "fake-containerd", RuntimeApiVersion: "v1"}, nil
}

func serveFakeContainerd(t *testing.T, path string) *fakeContainerd {
	t.Helper()
	fake := &fakeContainerd{}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatalf("listen %s: %v", path, err)
	}
	srv := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(srv, fake)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	return fake
}

// TestRunServesCRIBeforeContainerd is startgated started on a node whose
// containerd is not up yet: the CRI socket is there for kubelet, calls
// get Unavailable at once rather than hanging, the admin API works, and
// when containerd comes the same socket reaches it, without a restart.
func TestRunServesCRIBeforeContainerd(t *testing.T) {
	cfg := testConfig(t)
	dir := t.TempDir()
	cfg.CRI.Enabled = true
	cfg.CRI.Socket = filepath.Join(dir, "run", "cri.sock")
	// Not even the directory exists yet.
	cfg.CRI.ContainerdSocket = filepath.Join(dir, "containerd", "containerd.sock")
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	r := startRun(t, cfg)
	sock := cfg.CRI.Socket
	waitFor(t, "the CRI socket", func() bool { _, err := os.Lstat(sock); return err == nil })

	// Unavailable, not DeadlineExceeded: the call did not wait for
	// containerd.
	_, err := criVersion(t, sock)
	if got := grpcstatus.Code(err); got != codes.Unavailable {
		t.Errorf("CRI Version with containerd down = %v (code %v), want Unavailable", err, got)
	}
	// Checked once served: between listen and chmod the file briefly has
	// the umask's mode.
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("CRI socket %s: type %v mode %04o, want a socket with mode 0600", sock, fi.Mode().Type(), fi.Mode().Perm())
	}
	if _, err := status(context.Background(), cfg.Daemon.Socket); err != nil {
		t.Errorf("admin Status with the CRI proxy on: %v", err)
	}

	starts := r.logs.FilterMessage("startgated starting").All()
	if len(starts) != 1 {
		t.Fatalf("got %d \"startgated starting\" lines, want 1", len(starts))
	}
	fields := starts[0].ContextMap()
	if fields["cri_socket"] != sock || fields["containerd_socket"] != cfg.CRI.ContainerdSocket {
		t.Errorf("start line: cri_socket %v containerd_socket %v, want %s and %s", fields["cri_socket"], fields["containerd_socket"], sock, cfg.CRI.ContainerdSocket)
	}

	// containerd comes up: the proxy reconnects by itself.
	serveFakeContainerd(t, cfg.CRI.ContainerdSocket)
	var resp *runtimeapi.VersionResponse
	waitFor(t, "CRI Version to reach the late containerd", func() bool {
		resp, err = criVersion(t, sock)
		return err == nil
	})
	if resp.GetRuntimeName() != "fake-containerd" {
		t.Errorf("CRI Version through the proxy = %v, want the fake containerd's answer", resp)
	}

	if err := r.stop(t); err != nil {
		t.Errorf("Run after cancel = %v, want nil", err)
	}
	for _, p := range []string{sock, cfg.Daemon.Socket} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket %s after shutdown: Lstat error %v, want not-exist", p, err)
		}
	}
}

func TestRunCRIOffByDefault(t *testing.T) {
	cfg := testConfig(t)
	cfg.CRI.Socket = filepath.Join(t.TempDir(), "cri.sock")
	r := startRun(t, cfg)
	waitFor(t, "the API socket", func() bool { _, err := os.Lstat(cfg.Daemon.Socket); return err == nil })
	if _, err := status(context.Background(), cfg.Daemon.Socket); err != nil {
		t.Fatalf("Status: %v", err)
	}
	starts := r.logs.FilterMessage("startgated starting").All()
	if len(starts) != 1 || starts[0].ContextMap()["cri"] != "off" {
		t.Errorf("start line without cri.enabled: %v, want cri=off", starts)
	}
	if _, err := os.Lstat(cfg.CRI.Socket); err == nil {
		t.Errorf("CRI socket %s exists with cri.enabled = false", cfg.CRI.Socket)
	}
	if err := r.stop(t); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

func TestRunRefusesLiveCRISocket(t *testing.T) {
	cfg := testConfig(t)
	cfg.CRI.Enabled = true
	cfg.CRI.Socket = filepath.Join(t.TempDir(), "cri.sock")
	cfg.CRI.ContainerdSocket = filepath.Join(t.TempDir(), "containerd.sock")
	l, err := net.Listen("unix", cfg.CRI.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	err = Run(context.Background(), cfg, zap.NewNop(), nil)
	if err == nil || !strings.Contains(err.Error(), "another process is serving on "+cfg.CRI.Socket) {
		t.Errorf("Run with a live CRI socket = %v, want an error naming it", err)
	}
	// The API socket made before the failure is gone again.
	if _, err := os.Lstat(cfg.Daemon.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("API socket after a failed start: Lstat error %v, want not-exist", err)
	}
}

// TestSocketActivationWithCRI passes two sockets the way a unit pair with
// FileDescriptorName=cri on the second does: the daemon serves the API on
// the first and the CRI on the one named cri, even with cri.enabled off.
func TestSocketActivationWithCRI(t *testing.T) {
	tool, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("systemd-socket-activate not found (install the systemd package): %v", err)
		}
		t.Skipf("systemd-socket-activate not found: %v", err)
	}
	dir := t.TempDir()
	apiSock := filepath.Join(dir, "api.sock")
	criSock := filepath.Join(dir, "cri.sock")
	unusedCRI := filepath.Join(dir, "unused-cri.sock")
	cfgFile := filepath.Join(dir, "config.toml")
	text := fmt.Sprintf("version = 1\n[daemon]\nsocket = %q\nlog_format = \"json\"\n[cri]\nsocket = %q\ncontainerd_socket = %q\n",
		filepath.Join(dir, "unused.sock"), unusedCRI, filepath.Join(dir, "no-containerd.sock"))
	if err := os.WriteFile(cfgFile, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(tool, "-l", apiSock, "-l", criSock, "--fdname=startgated.socket:cri",
		"-E", childEnv+"=1", os.Args[0], "--config", cfgFile)
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
	waitFor(t, "the activation sockets", func() bool {
		_, err1 := os.Lstat(apiSock)
		_, err2 := os.Lstat(criSock)
		return err1 == nil && err2 == nil
	})
	if _, err := status(context.Background(), apiSock); err != nil {
		t.Fatalf("Status over the activated API socket: %v\n%s", err, stderr.String())
	}
	if _, err := criVersion(t, criSock); grpcstatus.Code(err) != codes.Unavailable {
		t.Errorf("CRI Version over the activated CRI socket, no containerd = %v, want Unavailable from the proxy\n%s", err, stderr.String())
	}
	if _, err := os.Lstat(unusedCRI); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("daemon created its own CRI socket %s despite activation (Lstat: %v)", unusedCRI, err)
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
	for _, want := range []string{`"cri_socket_activated":true`, `"socket_activated":true`, "serving the CRI proxy although cri.enabled is false"} {
		if !strings.Contains(logs, want) {
			t.Errorf("daemon log lacks %s:\n%s", want, logs)
		}
	}
}

func TestCRIFlagsTurnProxyOn(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.toml")
	if err := os.WriteFile(p, []byte("version = 1\n[cri]\nsocket = \"/from/file/cri.sock\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args                 []string
		enabled              bool
		criSock, containerdS string
	}{
		{nil, false, "/from/file/cri.sock", "/run/containerd/containerd.sock"},
		{[]string{"--cri-socket", "/flag/cri.sock"}, true, "/flag/cri.sock", "/run/containerd/containerd.sock"},
		{[]string{"--containerd-socket", "/flag/containerd.sock"}, true, "/from/file/cri.sock", "/flag/containerd.sock"},
		{[]string{"--socket", "/flag/api.sock", "--cri-socket", "/flag/cri.sock", "--containerd-socket", "/flag/containerd.sock"},
			true, "/flag/cri.sock", "/flag/containerd.sock"},
	}
	for _, tt := range tests {
		cmd := NewCommand()
		if err := cmd.ParseFlags(append([]string{"--config", p}, tt.args...)); err != nil {
			t.Fatal(err)
		}
		f := flags{config: p}
		f.socket, _ = cmd.Flags().GetString("socket")
		f.criSocket, _ = cmd.Flags().GetString("cri-socket")
		f.containerdSocket, _ = cmd.Flags().GetString("containerd-socket")
		cfg, _, err := loadConfig(cmd, f)
		if err != nil {
			t.Fatalf("%q: %v", tt.args, err)
		}
		if cfg.CRI.Enabled != tt.enabled || cfg.CRI.Socket != tt.criSock || cfg.CRI.ContainerdSocket != tt.containerdS {
			t.Errorf("%q: cri enabled %v socket %q containerd %q; want %v, %q, %q", tt.args,
				cfg.CRI.Enabled, cfg.CRI.Socket, cfg.CRI.ContainerdSocket, tt.enabled, tt.criSock, tt.containerdS)
		}
	}
	// The flags are validated like the file: a proxy in front of itself
	// is refused.
	cmd := NewCommand()
	args := []string{"--config", p, "--cri-socket", "/x/c.sock", "--containerd-socket", "/x/c.sock"}
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	_, _, err := loadConfig(cmd, flags{config: p, criSocket: "/x/c.sock", containerdSocket: "/x/c.sock"})
	if err == nil || !strings.Contains(err.Error(), "cri.containerd_socket") {
		t.Errorf("%q: %v, want an error naming cri.containerd_socket", args, err)
	}
}

// TestShutdownPassesQueuedStartsThrough checks the shutdown order: the
// gate closes before the proxy stops, so a start queued behind a paused
// gate goes to containerd (fail open) and the daemon stops. Stopped the
// other way round, the proxy's graceful stop would wait on a start that
// waits on the gate, until the shutdown timeout (here longer than the
// test waits for Run to return).
func TestShutdownPassesQueuedStartsThrough(t *testing.T) {
	cfg := testConfig(t)
	dir := t.TempDir()
	cfg.CRI.Enabled = true
	cfg.CRI.Socket = filepath.Join(dir, "cri.sock")
	cfg.CRI.ContainerdSocket = filepath.Join(dir, "containerd.sock")
	cfg.Daemon.ShutdownTimeout = config.Duration(time.Minute)
	fake := serveFakeContainerd(t, cfg.CRI.ContainerdSocket)
	r := startRun(t, cfg)
	waitFor(t, "the CRI socket", func() bool { _, err := os.Lstat(cfg.CRI.Socket); return err == nil })

	api, err := grpc.NewClient("unix://"+cfg.Daemon.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	admin := startgatev1.NewStartgateClient(api)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.Pause(ctx, &startgatev1.PauseRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("Pause: %v", err)
	}

	conn, err := grpc.NewClient("unix://"+cfg.CRI.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	type result struct {
		resp *runtimeapi.RunPodSandboxResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := runtimeapi.NewRuntimeServiceClient(conn).RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{
			Config: &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "shop", Uid: "u1"}},
		})
		done <- result{resp, err}
	}()
	waitFor(t, "the start to queue behind the paused gate", func() bool {
		st, err := admin.Status(ctx, &startgatev1.StatusRequest{})
		return err == nil && st.QueueLength == 1
	})
	if n := fake.sandboxes.Load(); n != 0 {
		t.Fatalf("containerd saw %d RunPodSandbox calls while the gate was paused, want 0", n)
	}

	if err := r.stop(t); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	res := <-done
	if res.err != nil || res.resp.GetPodSandboxId() != "sandbox-1" {
		t.Errorf("queued RunPodSandbox across shutdown = %v, %v; want containerd's sandbox-1", res.resp, res.err)
	}
	if got := r.logs.FilterMessage("admission failed: passing the start without a slot").Len(); got != 1 {
		t.Errorf("fail-open log lines at shutdown = %d, want 1", got)
	}
}
