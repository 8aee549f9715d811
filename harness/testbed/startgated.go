package testbed

// Startgated: startgated as a child process with its CRI proxy in front of
// a containerd, for the tools that run a node on this machine (make
// cluster, the real-node benchmark). They re-execute their own binary as
// startgated (an environment marker tells it to be the daemon), so no
// separate build is needed and the daemon is the one of the same tree.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// startgatedGrace is how long startgated gets between SIGTERM and SIGKILL;
// its own shutdown_timeout is 5 s in the configs these tools write.
const startgatedGrace = 10 * time.Second

// StartgatedOptions configure StartStartgated.
type StartgatedOptions struct {
	// Dir holds the config, the sockets and the log; it is made if
	// missing and left in place.
	Dir string
	// Command runs startgated; the config and socket flags are appended.
	Command []string
	// Env is its environment (daemon.ChildEnviron and a marker).
	Env []string
	// Containerd is the CRI proxy's upstream socket.
	Containerd string
	// Config is the TOML written to Dir/startgated.toml, unless
	// ConfigFile names a file to use instead.
	Config, ConfigFile string
	// CPUs pins startgated to these CPUs (Pinned).
	CPUs string
}

// Startgated is a running startgated child.
type Startgated struct {
	dir    string
	cmd    *exec.Cmd
	logf   *os.File
	exited chan struct{}
}

// StartgatedCRISocket is the CRI socket a startgated in dir serves: a
// kubelet can be configured with it before startgated starts.
func StartgatedCRISocket(dir string) string { return filepath.Join(dir, "cri.sock") }

// APISocket is startgated's own API socket.
func (g *Startgated) APISocket() string { return filepath.Join(g.dir, "api.sock") }

// CRISocket is its CRI proxy's socket.
func (g *Startgated) CRISocket() string { return StartgatedCRISocket(g.dir) }

// LogPath is its log (stdout and stderr).
func (g *Startgated) LogPath() string { return filepath.Join(g.dir, "startgated.log") }

// Exited is closed once the process has exited.
func (g *Startgated) Exited() <-chan struct{} { return g.exited }

// WithLog appends the end of startgated's log to err.
func (g *Startgated) WithLog(err error) error { return WithLogTail(err, g.LogPath()) }

// StartStartgated starts startgated and waits until a CRI Version call
// through its proxy answers (containerd must be up).
func StartStartgated(ctx context.Context, o StartgatedOptions) (*Startgated, error) {
	if len(o.Command) == 0 {
		return nil, errors.New("testbed: startgated: no command")
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("testbed: startgated: %w", err)
	}
	cfg := o.ConfigFile
	if cfg == "" {
		cfg = filepath.Join(o.Dir, "startgated.toml")
		if err := os.WriteFile(cfg, []byte(o.Config), 0o600); err != nil {
			return nil, fmt.Errorf("testbed: startgated: %w", err)
		}
	}
	g := &Startgated{dir: o.Dir, exited: make(chan struct{})}
	var err error
	if g.logf, err = os.OpenFile(g.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err != nil {
		return nil, fmt.Errorf("testbed: startgated: %w", err)
	}
	args := append(append([]string(nil), o.Command[1:]...),
		"--config", cfg,
		"--socket", g.APISocket(),
		"--cri-socket", g.CRISocket(),
		"--containerd-socket", o.Containerd)
	name, args, err := Pinned(o.CPUs, o.Command[0], args)
	if err != nil {
		g.logf.Close()
		return nil, err
	}
	g.cmd = exec.Command(name, args...)
	g.cmd.Env = o.Env
	g.cmd.Stdout, g.cmd.Stderr = g.logf, g.logf
	// Its own process group: Ctrl-C reaches the tool only, which stops
	// the kubelet before startgated. Pdeathsig: a tool killed outright
	// takes startgated along.
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := g.cmd.Start(); err != nil {
		g.logf.Close()
		return nil, fmt.Errorf("testbed: start startgated: %w", err)
	}
	go func() {
		_ = g.cmd.Wait() // the status is read from ProcessState
		close(g.exited)
	}()
	if err := g.waitCRI(ctx); err != nil {
		return nil, errors.Join(err, g.Stop())
	}
	return g, nil
}

// waitCRI polls Version through the proxy (which forwards it to
// containerd) until it answers, startgated exits or 30 s pass.
func (g *Startgated) waitCRI(ctx context.Context) error {
	conn, err := grpc.NewClient("unix://"+g.CRISocket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	rs := runtimeapi.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		callCtx, callCancel := context.WithTimeout(ctx, time.Second)
		_, err := rs.Version(callCtx, &runtimeapi.VersionRequest{})
		callCancel()
		if err == nil {
			return nil
		}
		select {
		case <-g.exited:
			return g.WithLog(fmt.Errorf("testbed: startgated exited (%s): %w", g.cmd.ProcessState, err))
		case <-ctx.Done():
			return g.WithLog(fmt.Errorf("testbed: startgated's CRI socket does not answer: %w", err))
		case <-tick.C:
		}
	}
}

// Kill sends SIGKILL and waits: a crash, as the restart tests want it.
func (g *Startgated) Kill() {
	_ = g.cmd.Process.Kill()
	<-g.exited
	g.logf.Close()
}

// Stop sends SIGTERM, SIGKILL after 10 s, and waits. An exit with an
// error status is returned as an error, with the log's tail.
func (g *Startgated) Stop() error {
	defer g.logf.Close()
	select {
	case <-g.exited:
	default:
		_ = g.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-g.exited:
		case <-time.After(startgatedGrace):
			_ = g.cmd.Process.Kill()
			<-g.exited
			return g.WithLog(fmt.Errorf("testbed: startgated did not stop within %v of SIGTERM", startgatedGrace))
		}
	}
	if st := g.cmd.ProcessState; st != nil && !st.Success() {
		return g.WithLog(fmt.Errorf("testbed: startgated: %s", st))
	}
	return nil
}
