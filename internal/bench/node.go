package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	internalapi "k8s.io/cri-api/pkg/apis"
	remote "k8s.io/cri-client/pkg"

	"github.com/startgate/startgate/internal/daemon"
	"github.com/startgate/startgate/internal/testbed"
)

// AppImage is the benchmark's container image: busybox, imported into the
// testbed before the first burst (no pull in this version).
const AppImage = "localhost/startgate/bench-app:1"

// childEnv marks a process started by the benchmark to be startgated.
const childEnv = "STARTGATE_BENCH_RUN_STARTGATED"

// RunChild runs startgated (daemon.Main) when this process is the
// benchmark's startgated child, and reports that it did; main and TestMain
// call it first. The benchmark re-executes its own binary rather than
// serving the gate in-process, so the daemon's goroutines, GC and
// scheduler do not share a process with the client being timed, and no
// build step is needed.
func RunChild() (code int, ok bool) {
	if os.Getenv(childEnv) != "1" {
		return 0, false
	}
	return daemon.Main(os.Args[1:]), true
}

// node is the testbed containerd, startgated in front of it when a mode
// needs it, and a kubelet-like CRI client for each endpoint.
type node struct {
	tb     *testbed.Testbed
	ownTB  bool   // started here, so stopped here
	dir    string // startgated's config, sockets and log
	daemon *exec.Cmd
	exited chan struct{} // closed when daemon has been waited for
	logf   *os.File

	clients [2]internalapi.RuntimeService // by Via
}

// startNode starts the testbed, imports the app image and, with
// withGate, starts startgated; on error it leaves nothing behind.
func startNode(ctx context.Context, opts *Options, withGate bool) (_ *node, err error) {
	n := &node{}
	defer func() {
		if err != nil {
			stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			err = errors.Join(err, n.stop(stopCtx))
		}
	}()
	if n.tb = opts.Testbed; n.tb == nil {
		if n.tb, err = testbed.Start(ctx, testbed.Options{}); err != nil {
			return nil, err
		}
		n.ownTB = true
	}
	img, err := testbed.BusyboxImage()
	if err != nil {
		return nil, err
	}
	if err := n.tb.ImportImage(ctx, AppImage, img); err != nil {
		return nil, err
	}
	if n.clients[Direct], err = newClient(ctx, n.tb.Endpoint(), opts.Kubelet.Timeout); err != nil {
		return nil, err
	}
	if !withGate {
		return n, nil
	}
	if n.dir, err = os.MkdirTemp("", "sgbench-"); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	if err := n.startDaemon(opts); err != nil {
		return nil, err
	}
	// Up once the CRI client's own check (Version through the proxy to
	// containerd) passes; the client refuses to build before that.
	cri := filepath.Join(n.dir, "cri.sock")
	deadline := time.Now().Add(20 * time.Second)
	for {
		var cerr error
		if _, serr := os.Stat(cri); serr != nil {
			cerr = serr
		} else if n.clients[Startgate], cerr = newClient(ctx, cri, opts.Kubelet.Timeout); cerr == nil {
			return n, nil
		}
		select {
		case <-n.exited:
			return nil, n.withDaemonLog(fmt.Errorf("bench: startgated exited: %w", cerr))
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, n.withDaemonLog(fmt.Errorf("bench: startgated's CRI socket does not answer: %w", cerr))
		}
	}
}

func newClient(ctx context.Context, sock string, timeout time.Duration) (internalapi.RuntimeService, error) {
	rs, err := remote.NewRemoteRuntimeServiceBuilder().
		WithEndpoint("unix://" + sock).
		WithConnectionTimeout(timeout).
		WithTracerProvider(nil).
		Build(ctx)
	if err != nil {
		return nil, fmt.Errorf("bench: CRI client for %s: %w", sock, err)
	}
	return rs, nil
}

// startDaemon starts startgated with the CRI proxy in front of the
// testbed's containerd, its config, sockets and log in n.dir.
func (n *node) startDaemon(opts *Options) error {
	cfg := filepath.Join(n.dir, "startgated.toml")
	conf := "version = 1\n[daemon]\nlog_format = \"json\"\nlog_level = \"info\"\nshutdown_timeout = \"5s\"\n" +
		"[metrics]\nlisten = \"\"\n" + opts.DaemonConfig
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	args := []string{"--config", cfg,
		"--socket", filepath.Join(n.dir, "api.sock"),
		"--cri-socket", filepath.Join(n.dir, "cri.sock"),
		"--containerd-socket", n.tb.Endpoint()}
	var cmd *exec.Cmd
	env := childEnviron()
	if len(opts.Daemon) > 0 {
		cmd = exec.Command(opts.Daemon[0], append(opts.Daemon[1:], args...)...)
	} else {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("bench: find own binary to run startgated: %w", err)
		}
		cmd = exec.Command(self, args...)
		env = append(env, childEnv+"=1")
	}
	cmd.Env = env
	f, err := os.Create(n.daemonLog())
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	n.logf = f
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group: Ctrl-C reaches the benchmark only, which
	// stops startgated in order. Pdeathsig: a benchmark killed outright
	// takes it along.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("bench: start startgated: %w", err)
	}
	n.daemon = cmd
	n.exited = make(chan struct{})
	go func() {
		_ = cmd.Wait() // its exit status is read in stop, from ProcessState
		close(n.exited)
	}()
	return nil
}

// childEnviron is this process's environment without what would make
// startgated act as a systemd service of ours.
func childEnviron() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID", childEnv:
			continue
		}
		env = append(env, kv)
	}
	return env
}

func (n *node) daemonLog() string { return filepath.Join(n.dir, "startgated.log") }

// withDaemonLog appends the end of startgated's log to err.
func (n *node) withDaemonLog(err error) error {
	b, rerr := os.ReadFile(n.daemonLog())
	if rerr != nil || len(b) == 0 {
		return err
	}
	if len(b) > 4<<10 {
		b = b[len(b)-4<<10:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return fmt.Errorf("%w\n--- tail of startgated's log ---\n%s", err, b)
}

// stop closes the clients, stops startgated (SIGTERM, SIGKILL after 10 s)
// and the testbed, and removes startgated's directory. It goes on after
// errors and returns them all.
func (n *node) stop(ctx context.Context) error {
	var errs []error
	if !n.ownTB && n.clients[Direct] != nil {
		// A borrowed testbed outlives Run: leave it without pods (a burst
		// cut short by ctx was not torn down).
		errs = append(errs, teardown(ctx, n.clients[Direct]))
	}
	for _, c := range n.clients {
		if c != nil {
			errs = append(errs, c.Close(ctx))
		}
	}
	if n.daemon != nil {
		_ = n.daemon.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.exited:
			if st := n.daemon.ProcessState; st != nil && !st.Success() {
				errs = append(errs, n.withDaemonLog(fmt.Errorf("bench: startgated: %s", st)))
			}
		case <-time.After(10 * time.Second):
			_ = n.daemon.Process.Kill()
			<-n.exited
			errs = append(errs, n.withDaemonLog(errors.New("bench: startgated did not stop within 10 s of SIGTERM")))
		}
	}
	if n.logf != nil {
		errs = append(errs, n.logf.Close())
	}
	if n.tb != nil && n.ownTB {
		errs = append(errs, n.tb.Stop(ctx))
	}
	if n.dir != "" {
		errs = append(errs, os.RemoveAll(n.dir))
	}
	return errors.Join(errs...)
}
