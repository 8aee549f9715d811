package devcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/startgate/startgate/internal/daemon"
	"github.com/startgate/startgate/internal/testbed"
)

// childEnv marks a process started by startgate-cluster to be startgated:
// the command re-executes its own binary, so `make cluster` needs no
// separate startgated build and runs the daemon of the same tree.
const childEnv = "STARTGATE_CLUSTER_RUN_STARTGATED"

// gateGrace is how long startgated gets between SIGTERM and SIGKILL; its
// own shutdown_timeout is 5 s.
const gateGrace = 10 * time.Second

// gate is startgated running as a child, its config, sockets and log in
// dir.
type gate struct {
	dir    string
	cmd    *exec.Cmd
	logf   *os.File
	exited chan struct{}
}

func (g *gate) apiSocket() string { return filepath.Join(g.dir, "api.sock") }
func (g *gate) logPath() string   { return filepath.Join(g.dir, "startgated.log") }

// criSocket is the CRI proxy's socket of a startgated in dir; the kubelet
// is configured with it before startgated starts.
func criSocket(dir string) string { return filepath.Join(dir, "cri.sock") }

// gateConfig is startgated's config here: console logs for a person
// reading them, metrics off (no port to collide on), the pod watch on with
// the node's own kubeconfig (the Node authorizer lets it watch the node's
// pods), the rest default. The sockets come from flags.
func gateConfig(kubeconfig, node string) string {
	return `version = 1

[daemon]
log_format = "console"
log_level = "info"
shutdown_timeout = "5s"

[metrics]
listen = ""

[kubernetes]
enabled = true
kubeconfig = ` + strconv.Quote(kubeconfig) + `
node_name = ` + strconv.Quote(node) + `
`
}

// startGate starts startgated with its CRI proxy in front of containerd,
// with config (or the file configFile, when set), and waits until a CRI
// Version call through the proxy answers.
func startGate(ctx context.Context, dir, containerd, config, configFile string) (*gate, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if configFile == "" {
		configFile = filepath.Join(dir, "startgated.toml")
		if err := os.WriteFile(configFile, []byte(config), 0o600); err != nil {
			return nil, err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own binary to run startgated: %w", err)
	}
	g := &gate{dir: dir, exited: make(chan struct{})}
	if g.logf, err = os.Create(g.logPath()); err != nil {
		return nil, err
	}
	g.cmd = exec.Command(self,
		"--config", configFile,
		"--socket", g.apiSocket(),
		"--cri-socket", criSocket(dir),
		"--containerd-socket", containerd)
	g.cmd.Env = append(daemon.ChildEnviron(childEnv), childEnv+"=1")
	g.cmd.Stdout, g.cmd.Stderr = g.logf, g.logf
	// Its own process group: Ctrl-C reaches this command only, which
	// stops kubelet before startgated. Pdeathsig: killed outright, this
	// command takes startgated along.
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := g.cmd.Start(); err != nil {
		g.logf.Close()
		return nil, fmt.Errorf("start startgated: %w", err)
	}
	go func() {
		_ = g.cmd.Wait() // the status is read from ProcessState
		close(g.exited)
	}()
	if err := g.waitCRI(ctx); err != nil {
		return nil, errors.Join(err, g.stop())
	}
	return g, nil
}

// waitCRI polls Version through the proxy (which forwards it to
// containerd) until it answers, startgated exits or 30 s pass.
func (g *gate) waitCRI(ctx context.Context) error {
	conn, err := grpc.NewClient("unix://"+criSocket(g.dir), grpc.WithTransportCredentials(insecure.NewCredentials()))
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
			return g.withLog(fmt.Errorf("startgated exited (%s): %w", g.cmd.ProcessState, err))
		case <-ctx.Done():
			return g.withLog(fmt.Errorf("startgated's CRI socket does not answer: %w", err))
		case <-tick.C:
		}
	}
}

// stop sends SIGTERM, SIGKILL after gateGrace, and waits.
func (g *gate) stop() error {
	defer g.logf.Close()
	select {
	case <-g.exited:
		return nil
	default:
	}
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.exited:
		return nil
	case <-time.After(gateGrace):
	}
	_ = g.cmd.Process.Kill()
	<-g.exited
	return g.withLog(fmt.Errorf("startgated did not stop within %v of SIGTERM", gateGrace))
}

// withLog appends the end of startgated's log to err.
func (g *gate) withLog(err error) error { return testbed.WithLogTail(err, g.logPath()) }
