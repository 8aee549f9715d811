package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/startgate/startgate/harness/testbed"
)

// component is one running process of the cluster (etcd, an apiserver, a
// kubelet, ...), its output appended to its log file.
type component struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	logf    *os.File
	exited  chan struct{} // closed once cmd has been waited for
}

// startComponent runs bin with args, output appended to logPath, in its
// own process group (so a terminal's Ctrl-C reaches only the owner, which
// stops the cluster in order) and with Pdeathsig SIGKILL (so a test binary
// killed by its timeout takes the process along).
func startComponent(name, dir, logPath, bin string, args []string) (*component, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cluster: %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = dir
	cmd.Env = componentEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	fmt.Fprintf(f, "--- %s: %s %s\n", time.Now().Format(time.RFC3339), bin, strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("cluster: start %s: %w", name, err)
	}
	c := &component{name: name, logPath: logPath, cmd: cmd, logf: f, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait() // the exit status is in ProcessState and the log
		close(c.exited)
	}()
	return c, nil
}

// componentEnv is this process's environment without the variables that
// would reconfigure a component behind its command line: etcd reads every
// ETCD_* as a flag, and a proxy setting would send the apiserver's calls
// to the kubelet (and the tests' to the apiserver) elsewhere.
func componentEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "ETCD_"), strings.HasPrefix(k, "KUBE"),
			strings.EqualFold(k, "http_proxy"), strings.EqualFold(k, "https_proxy"), strings.EqualFold(k, "no_proxy"):
			continue
		}
		env = append(env, kv)
	}
	return env
}

func (c *component) hasExited() bool {
	select {
	case <-c.exited:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the component's process group, then SIGKILL after
// grace or when ctx ends, and waits until it is reaped. Stopping a
// component that has exited is not an error; its exit status is not
// either (a SIGTERM-ed apiserver exits non-zero).
func (c *component) stop(ctx context.Context, grace time.Duration) error {
	defer c.logf.Close()
	if c.hasExited() {
		return nil
	}
	pgid := c.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.exited:
		killGroup(pgid) // a child it left behind
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	killGroup(pgid)
	select {
	case <-c.exited:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("cluster: %s (pid %d) survived SIGKILL", c.name, pgid)
	}
}

func killGroup(pgid int) {
	_ = syscall.Kill(-pgid, syscall.SIGKILL) // ESRCH: nothing left
}

// withLog appends the tail of the component's log to err.
func (c *component) withLog(err error) error {
	return testbed.WithLogTail(err, c.logPath)
}

// errPortTaken is what a component that lost its picked port to another
// process exits with: the caller picks again.
var errPortTaken = errors.New("cluster: port taken")

// waitUp polls ready until it succeeds, the component exits or ctx ends.
// A component that exits saying "address already in use" gives
// errPortTaken.
func (c *component) waitUp(ctx context.Context, ready func(context.Context) error) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		callCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		last = ready(callCtx)
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-c.exited:
			if b, _ := os.ReadFile(c.logPath); bytes.Contains(lastRun(b), []byte("address already in use")) {
				return errPortTaken
			}
			return c.withLog(fmt.Errorf("cluster: %s exited (%s) before it was up: %w", c.name, c.cmd.ProcessState, last))
		case <-ctx.Done():
			return c.withLog(fmt.Errorf("cluster: %s not up: %w (last error: %w)", c.name, ctx.Err(), last))
		case <-tick.C:
		}
	}
}

// lastRun is the part of a log written by the latest start: the log is
// appended to across kubelet restarts and port retries.
func lastRun(log []byte) []byte {
	if i := bytes.LastIndex(log, []byte("\n--- ")); i >= 0 {
		return log[i:]
	}
	return log
}
