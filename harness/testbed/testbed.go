package testbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ErrUnsupported is returned (wrapped) by Start when this machine lacks
// what a testbed needs: root, or the containerd and runc binaries.
var ErrUnsupported = errors.New("testbed: unsupported here")

const (
	// Namespace is the containerd namespace the CRI plugin uses.
	Namespace = "k8s.io"
	// DefaultSandboxImage is the name the pause image is imported under.
	DefaultSandboxImage = "localhost/startgate/pause:1"

	socketName = "containerd.sock"
	logName    = "containerd.log"
	// maxSocketPath is sizeof(sockaddr_un.sun_path) minus the NUL byte;
	// containerd also creates DIR/containerd.sock.ttrpc.
	maxSocketPath = 107
)

// Options configure Start. The zero value is usable.
type Options struct {
	// Parent is where the testbed's directory is created; "" means /tmp.
	// Its path must leave room for a unix socket path of at most 107
	// bytes, which t.TempDir() often does not.
	Parent string
	// Snapshotter is the CRI's snapshotter; "" probes overlayfs and falls
	// back to native when overlay mounts fail.
	Snapshotter string
	// SandboxImage is the CRI's sandbox_image; "" means DefaultSandboxImage.
	SandboxImage string
	// Containerd is the containerd binary; "" looks it up in PATH.
	Containerd string
	// StartTimeout bounds the wait for the CRI to answer; 0 means 30s.
	StartTimeout time.Duration
	// Debug sets containerd's log level to debug.
	Debug bool
	// RootSize, when positive, puts containerd's root (content store,
	// snapshots) on a tmpfs of this many bytes: a node whose disk fills.
	RootSize int64
	// CPUs pins containerd, and with it every container, to these CPUs
	// (Pinned): a smaller node on this machine.
	CPUs string
}

// Testbed is a private containerd with a CRI endpoint. Its methods are safe
// for concurrent use; Stop may be called more than once.
type Testbed struct {
	dir          string
	sock         string
	logPath      string
	snapshotter  string
	sandboxImage string
	// bridge is the pod network's bridge ("" without CNI plugins); Stop
	// deletes it.
	bridge    string
	podSubnet string

	bin, cfg string // containerd and its config, for Restart
	cpus     string // Options.CPUs

	// procMu guards the running containerd, which Kill and Restart
	// replace.
	procMu sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
	logf   *os.File

	criConn *grpc.ClientConn
	runtime runtimeapi.RuntimeServiceClient
	images  runtimeapi.ImageServiceClient
	client  *containerd.Client

	stopOnce sync.Once
	stopErr  error
}

// Start starts a private containerd in a new directory under opts.Parent,
// waits until its CRI answers Version and imports the pause image. On error
// nothing is left behind.
func Start(ctx context.Context, opts Options) (_ *Testbed, err error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: containerd needs root (euid %d)", ErrUnsupported, os.Geteuid())
	}
	bin := opts.Containerd
	if bin == "" {
		bin = "containerd"
	}
	if bin, err = exec.LookPath(bin); err != nil {
		return nil, fmt.Errorf("%w: %w (apt-get install containerd runc)", ErrUnsupported, err)
	}
	if _, err := exec.LookPath("runc"); err != nil {
		return nil, fmt.Errorf("%w: %w (apt-get install runc)", ErrUnsupported, err)
	}
	if opts.Parent == "" {
		opts.Parent = "/tmp"
	}
	if opts.SandboxImage == "" {
		opts.SandboxImage = DefaultSandboxImage
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 30 * time.Second
	}
	if opts.CPUs != "" {
		if _, err := ParseCPUs(opts.CPUs); err != nil {
			return nil, err
		}
		if _, err := exec.LookPath("taskset"); err != nil {
			return nil, fmt.Errorf("%w: %w (apt-get install util-linux)", ErrUnsupported, err)
		}
	}

	dir, err := os.MkdirTemp(opts.Parent, "sgtb-")
	if err != nil {
		return nil, fmt.Errorf("testbed: %w", err)
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, fmt.Errorf("testbed: %w", err)
	}
	tb := &Testbed{
		dir:          dir,
		sock:         filepath.Join(dir, socketName),
		logPath:      filepath.Join(dir, logName),
		snapshotter:  opts.Snapshotter,
		sandboxImage: opts.SandboxImage,
		exited:       make(chan struct{}),
		bin:          bin,
		cpus:         opts.CPUs,
	}
	defer func() {
		if err != nil {
			stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if serr := tb.Stop(stopCtx); serr != nil {
				err = errors.Join(err, serr)
			}
		}
	}()
	if n := len(tb.sock) + len(".ttrpc"); n > maxSocketPath {
		return nil, fmt.Errorf("testbed: socket path %s.ttrpc is %d bytes, the limit is %d: use a shorter Options.Parent", tb.sock, n, maxSocketPath)
	}
	if tb.snapshotter == "" {
		tb.snapshotter = "overlayfs"
		if err := probeOverlay(dir); err != nil {
			tb.snapshotter = "native"
		}
	}
	for _, d := range []string{"cni/bin", "cni/net.d", "pods"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("testbed: %w", err)
		}
	}
	if err := tb.setupPodNetwork(); err != nil {
		return nil, err
	}
	if opts.RootSize > 0 {
		root := filepath.Join(dir, "root")
		if err := os.MkdirAll(root, 0o700); err != nil {
			return nil, fmt.Errorf("testbed: %w", err)
		}
		// Stop's unmountUnder takes it down with the snapshots' mounts.
		if err := unix.Mount("tmpfs", root, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", opts.RootSize)); err != nil {
			return nil, fmt.Errorf("testbed: a %d-byte root: %w", opts.RootSize, err)
		}
	}
	cfg := filepath.Join(dir, "config.toml")
	tb.cfg = cfg
	if err := os.WriteFile(cfg, []byte(configTOML(dir, tb.snapshotter, tb.sandboxImage, opts.Debug)), 0o600); err != nil {
		return nil, fmt.Errorf("testbed: %w", err)
	}
	if err := tb.startContainerd(bin, cfg); err != nil {
		return nil, err
	}

	waitCtx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	if err := tb.waitCRI(waitCtx); err != nil {
		return nil, tb.withLogTail(err)
	}
	// The containerd client is only used for images; its own dial is lazy
	// enough that a daemon that died in between shows up on first use.
	if tb.client, err = containerd.New(tb.sock, containerd.WithDefaultNamespace(Namespace)); err != nil {
		return nil, tb.withLogTail(fmt.Errorf("testbed: containerd client: %w", err))
	}
	pause, err := BusyboxImage()
	if err == nil {
		pause, err = WithEntrypoint(pause, "sleep", "2147483647")
	}
	if err != nil {
		return nil, err
	}
	if err := tb.ImportImage(ctx, tb.sandboxImage, pause); err != nil {
		return nil, tb.withLogTail(fmt.Errorf("testbed: import pause image: %w", err))
	}
	return tb, nil
}

func (tb *Testbed) startContainerd(bin, cfg string) error {
	tb.procMu.Lock()
	defer tb.procMu.Unlock()
	if tb.logf != nil {
		tb.logf.Close()
	}
	exited := make(chan struct{})
	tb.exited = exited
	f, err := os.OpenFile(tb.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		close(exited)
		return fmt.Errorf("testbed: %w", err)
	}
	tb.logf = f
	name, args, err := Pinned(tb.cpus, bin, []string{"--config", cfg,
		"--root", filepath.Join(tb.dir, "root"),
		"--state", filepath.Join(tb.dir, "state"),
		"--address", tb.sock})
	if err != nil {
		close(exited)
		return err
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = tb.dir
	// Pdeathsig: a test binary killed by its timeout takes containerd with
	// it. Shims are reparented and survive; Stop (or the next run's
	// operator) deals with them.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		close(exited)
		return fmt.Errorf("testbed: start containerd: %w", err)
	}
	tb.cmd = cmd
	go func() {
		_ = cmd.Wait() // the exit status is in the log; Stop only needs the reaping
		close(exited)
	}()
	return nil
}

// proc returns the running containerd and its exit channel.
func (tb *Testbed) proc() (*exec.Cmd, chan struct{}) {
	tb.procMu.Lock()
	defer tb.procMu.Unlock()
	return tb.cmd, tb.exited
}

// Kill SIGKILLs containerd, as a crash would, and waits until it is gone.
// Shims and containers live on; Restart brings containerd back to them.
func (tb *Testbed) Kill() error {
	cmd, exited := tb.proc()
	if cmd == nil {
		return errors.New("testbed: containerd not started")
	}
	_ = cmd.Process.Kill()
	select {
	case <-exited:
		return nil
	case <-time.After(5 * time.Second):
		return errors.New("testbed: containerd survived SIGKILL")
	}
}

// Signal sends sig to containerd: SIGSTOP stalls it (every call to it
// hangs, as on a node where containerd is wedged), SIGCONT resumes it.
func (tb *Testbed) Signal(sig os.Signal) error {
	cmd, _ := tb.proc()
	if cmd == nil {
		return errors.New("testbed: containerd not started")
	}
	return cmd.Process.Signal(sig)
}

// Restart starts containerd again on the same root, state and socket, and
// waits until its CRI answers.
func (tb *Testbed) Restart(ctx context.Context) error {
	if _, exited := tb.proc(); !isClosed(exited) {
		return errors.New("testbed: containerd is still running: Kill it first")
	}
	if err := tb.startContainerd(tb.bin, tb.cfg); err != nil {
		return err
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	_, exited := tb.proc()
	for {
		callCtx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := tb.runtime.Version(callCtx, &runtimeapi.VersionRequest{})
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return tb.withLogTail(fmt.Errorf("testbed: containerd exited after restart: %w", err))
		case <-ctx.Done():
			return tb.withLogTail(fmt.Errorf("testbed: containerd restarted but its CRI does not answer: %w", err))
		case <-tick.C:
		}
	}
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// waitCRI polls the CRI Version until it answers, containerd exits or ctx
// ends.
func (tb *Testbed) waitCRI(ctx context.Context) error {
	// gRPC's default reconnect backoff starts at 1 s, which the first
	// dial, made before containerd has created its socket, would cost
	// every Start.
	conn, err := grpc.NewClient("unix://"+tb.sock,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 250 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}))
	if err != nil {
		return fmt.Errorf("testbed: cri client: %w", err)
	}
	tb.criConn = conn
	tb.runtime = runtimeapi.NewRuntimeServiceClient(conn)
	tb.images = runtimeapi.NewImageServiceClient(conn)
	_, exited := tb.proc()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		callCtx, cancel := context.WithTimeout(ctx, time.Second)
		_, last = tb.runtime.Version(callCtx, &runtimeapi.VersionRequest{})
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("testbed: containerd exited before its CRI answered: %w", last)
		case <-ctx.Done():
			return fmt.Errorf("testbed: CRI did not answer Version: %w (last error: %w)", ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// withLogTail appends the end of containerd's log to err.
func (tb *Testbed) withLogTail(err error) error { return WithLogTail(err, tb.logPath) }

func (tb *Testbed) logTail(n int64) ([]byte, error) { return tailOf(tb.logPath, n) }

// Endpoint is the path of the CRI (and containerd) unix socket.
func (tb *Testbed) Endpoint() string { return tb.sock }

// Dir is the testbed's directory; Stop removes it.
func (tb *Testbed) Dir() string { return tb.dir }

// LogPath is containerd's log file.
func (tb *Testbed) LogPath() string { return tb.logPath }

// Snapshotter is the snapshotter the CRI uses.
func (tb *Testbed) Snapshotter() string { return tb.snapshotter }

// SandboxImage is the CRI's sandbox_image, imported by Start.
func (tb *Testbed) SandboxImage() string { return tb.sandboxImage }

// CNIConfDir is the CRI's CNI conf dir (empty at Start): a conflist
// written there makes containerd report NetworkReady, which kubelet needs
// before it calls a node Ready. Host-network pods still need no CNI
// binaries; the bin dir stays empty.
func (tb *Testbed) CNIConfDir() string { return filepath.Join(tb.dir, "cni", "net.d") }

// CNIBinDir is the CRI's CNI bin dir: the host's plugins, linked.
func (tb *Testbed) CNIBinDir() string { return filepath.Join(tb.dir, "cni", "bin") }

// PodNetworkConf is the pod network's conflist, "" without one (see
// PodSubnet). A conflist that sorts before it in CNIConfDir replaces it
// (containerd loads the first), as a chained plugin's installer does.
func (tb *Testbed) PodNetworkConf() string {
	if tb.podSubnet == "" {
		return ""
	}
	return filepath.Join(tb.CNIConfDir(), podNetworkConf)
}
