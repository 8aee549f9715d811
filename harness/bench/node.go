package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remote "k8s.io/cri-client/pkg"

	"github.com/startgate/startgate/harness/testbed"
	"github.com/startgate/startgate/internal/daemon"
	pb "github.com/startgate/startgate/proto/startgate/v1"
)

// AppRepoTag is the benchmark's app image in the testbed registry:
// busybox plus one layer of Options.PatchSize random bytes, the layer a
// patch replaces. Its reference is 127.0.0.1:PORT/startgate/bench-app:1: a
// loopback host, so containerd and startgated's prefetch speak plain HTTP
// to it and never look a name up.
const AppRepoTag = "startgate/bench-app:1"

// childEnv marks a process started by the benchmark to be startgated.
const childEnv = "STARTGATE_BENCH_RUN_STARTGATED"

// DaemonCommand is how a benchmark runs startgated as a child: this
// binary and its environment with the marker RunChild looks for.
func DaemonCommand() (cmd, env []string, err error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, fmt.Errorf("bench: find own binary to run startgated: %w", err)
	}
	return []string{self}, append(daemon.ChildEnviron(childEnv), childEnv+"=1"), nil
}

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

// node is the testbed containerd, its registry, startgated in front of
// the containerd when a mode needs it, and a kubelet-like CRI client for
// each endpoint.
type node struct {
	tb     *testbed.Testbed
	ownTB  bool // started here, so stopped here
	reg    *testbed.Registry
	ownReg bool
	link   *testbed.Link // between the node and reg: Options.RegistryBandwidth and RegistryRTT
	dir    string        // startgated's config, sockets and log
	daemon *exec.Cmd
	exited chan struct{} // closed when daemon has been waited for
	logf   *os.File

	clients [2]internalapi.RuntimeService      // by Via
	images  [2]internalapi.ImageManagerService // by Via
	apiConn *grpc.ClientConn                   // startgated's API, for prefetch
	api     pb.StartgateClient

	app     *App   // as last pushed
	appRef  string // 127.0.0.1:PORT/startgate/bench-app:1
	keepLog string // where to copy startgated's log at the end
}

// startNode starts the testbed and the registry, pushes the app image and
// pulls it through the CRI (so the node has the tag, as a node running the
// app does), and with withGate starts startgated (with withPrefetch, its
// prefetch on); on error it leaves nothing behind.
func startNode(ctx context.Context, opts *Options, withGate, withPrefetch bool) (_ *node, err error) {
	n := &node{keepLog: opts.DaemonLog}
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
	if n.reg = opts.Registry; n.reg == nil {
		if n.reg, err = testbed.StartRegistry(ctx, testbed.RegistryOptions{Token: opts.RegistryToken}); err != nil {
			return nil, err
		}
		n.ownReg = true
	}
	if n.clients[Direct], err = newClient(ctx, n.tb.Endpoint(), opts.Kubelet.Timeout); err != nil {
		return nil, err
	}
	if n.images[Direct], err = newImageClient(ctx, n.tb.Endpoint(), opts.Kubelet.Timeout); err != nil {
		return nil, err
	}
	if n.app, err = NewApp(opts.PatchSize); err != nil {
		return nil, err
	}
	// Pushes go to the registry; the node pulls across the link when
	// there is one: the same repository under another host.
	n.appRef = n.reg.Ref(AppRepoTag)
	if opts.RegistryBandwidth > 0 || opts.RegistryRTT > 0 {
		if n.link, err = testbed.NewLink(testbed.LinkOptions{Bandwidth: opts.RegistryBandwidth, RTT: opts.RegistryRTT}); err != nil {
			return nil, err
		}
		far, err := n.link.Forward(n.reg.Host())
		if err != nil {
			return nil, err
		}
		n.appRef = far + "/" + AppRepoTag
	}
	if _, err := n.reg.Push(ctx, AppRepoTag, n.app.Image); err != nil {
		return nil, err
	}
	if _, err := n.images[Direct].PullImage(ctx, &runtimeapi.ImageSpec{Image: n.appRef}, nil, nil); err != nil {
		return nil, fmt.Errorf("bench: pull %s: %w", n.appRef, err)
	}
	if !withGate {
		return n, nil
	}
	if n.dir, err = os.MkdirTemp("", "sgbench-"); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	if err := n.startDaemon(opts, withPrefetch); err != nil {
		return nil, err
	}
	api := filepath.Join(n.dir, "api.sock")
	if n.apiConn, err = grpc.NewClient("unix://"+api, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		return nil, fmt.Errorf("bench: startgated API client: %w", err)
	}
	n.api = pb.NewStartgateClient(n.apiConn)
	// Up once the CRI client's own check (Version through the proxy to
	// containerd) passes; the client refuses to build before that.
	cri := filepath.Join(n.dir, "cri.sock")
	deadline := time.Now().Add(20 * time.Second)
	for {
		var cerr error
		if _, serr := os.Stat(cri); serr != nil {
			cerr = serr
		} else if n.clients[Startgate], cerr = newClient(ctx, cri, opts.Kubelet.Timeout); cerr == nil {
			n.images[Startgate], err = newImageClient(ctx, cri, opts.Kubelet.Timeout)
			return n, err
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

func newImageClient(ctx context.Context, sock string, timeout time.Duration) (internalapi.ImageManagerService, error) {
	is, err := remote.NewRemoteImageServiceBuilder().
		WithEndpoint("unix://" + sock).
		WithConnectionTimeout(timeout).
		WithTracerProvider(nil).
		Build(ctx)
	if err != nil {
		return nil, fmt.Errorf("bench: CRI image client for %s: %w", sock, err)
	}
	return is, nil
}

// startDaemon starts startgated with the CRI proxy in front of the
// testbed's containerd, its config, sockets and log in n.dir; with
// withPrefetch, its prefetch on.
func (n *node) startDaemon(opts *Options, withPrefetch bool) error {
	cfg := filepath.Join(n.dir, "startgated.toml")
	conf := "version = 1\n[daemon]\nlog_format = \"json\"\nlog_level = \"info\"\nshutdown_timeout = \"5s\"\n" +
		"[metrics]\nlisten = \"\"\n"
	if withPrefetch {
		host, _, _ := strings.Cut(n.appRef, "/")
		conf += prefetchTOML(n.tb.Snapshotter(), host)
	}
	conf += opts.DaemonConfig
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	args := []string{"--config", cfg,
		"--socket", filepath.Join(n.dir, "api.sock"),
		"--cri-socket", filepath.Join(n.dir, "cri.sock"),
		"--containerd-socket", n.tb.Endpoint()}
	var cmd *exec.Cmd
	env := daemon.ChildEnviron(childEnv)
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

// prefetchTOML is startgated's [prefetch] for the benchmark: on, into
// the CRI's snapshotter, and resolving on its own only once an hour (the longest max_backoff allows), so the
// startgate-prefetch mode's PrefetchAdd is what fetches a patch and the
// startgate mode (same daemon) never finds one prefetched. The registry is
// allowed explicitly (the node's own images would allow it anyway).
func prefetchTOML(snapshotter, registry string) string {
	return "[prefetch]\nenabled = true\nsnapshotter = " + strconv.Quote(snapshotter) +
		"\ninterval = \"1h\"\nregistries = [" + strconv.Quote(registry) + "]\n"
}

func (n *node) daemonLog() string { return filepath.Join(n.dir, "startgated.log") }

// withDaemonLog appends the end of startgated's log to err.
func (n *node) withDaemonLog(err error) error { return testbed.WithLogTail(err, n.daemonLog()) }

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
	for _, c := range n.images {
		if c != nil {
			errs = append(errs, c.Close(ctx))
		}
	}
	if n.apiConn != nil {
		errs = append(errs, n.apiConn.Close())
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
		if n.keepLog != "" {
			errs = append(errs, copyFile(n.daemonLog(), n.keepLog))
		}
	}
	if n.tb != nil && n.ownTB {
		errs = append(errs, n.tb.Stop(ctx))
	}
	if n.link != nil {
		errs = append(errs, n.link.Close())
	}
	if n.reg != nil && n.ownReg {
		errs = append(errs, n.reg.Stop(ctx))
	}
	if n.dir != "" {
		errs = append(errs, os.RemoveAll(n.dir))
	}
	return errors.Join(errs...)
}

// patch pushes a patch of the app (App.Patch) and returns the new
// manifest digest.
func (n *node) patch(ctx context.Context) (string, error) {
	return n.app.Patch(ctx, n.reg, AppRepoTag)
}

// prefetchPoll is how often PrefetchList is read while a prefetch runs.
const prefetchPoll = 100 * time.Millisecond

// prefetch announces the app's tag to startgated and waits until it has
// fetched digest (PrefetchAndWait).
func (n *node) prefetch(ctx context.Context, digest string, timeout time.Duration) (time.Duration, error) {
	if n.api == nil {
		return 0, errors.New("bench: prefetch: startgated is not running")
	}
	return PrefetchAndWait(ctx, n.api, n.appRef, digest, timeout)
}

// PrefetchAndWait announces ref to startgated (PrefetchAdd, which
// resolves it at once), what a pipeline does before a rollout, and waits
// until PrefetchList shows digest fetched, at most timeout. It returns
// the time from PrefetchAdd to then.
func PrefetchAndWait(ctx context.Context, api pb.StartgateClient, ref, digest string, timeout time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t0 := time.Now()
	if _, err := api.PrefetchAdd(ctx, &pb.PrefetchAddRequest{Reference: ref}); err != nil {
		return 0, fmt.Errorf("bench: PrefetchAdd %s: %w", ref, err)
	}
	tick := time.NewTicker(prefetchPoll)
	defer tick.Stop()
	last := "no entry"
	for {
		resp, err := api.PrefetchList(ctx, &pb.PrefetchListRequest{})
		if err != nil && ctx.Err() == nil {
			return 0, fmt.Errorf("bench: PrefetchList: %w", err)
		}
		for _, e := range resp.GetEntries() {
			if e.GetReference() != ref && e.GetNewDigest() != digest {
				continue
			}
			last = fmt.Sprintf("state %s, new digest %q, %d/%d bytes", e.GetState(), e.GetNewDigest(), e.GetBytesDone(), e.GetBytesTotal())
			switch {
			case e.GetNewDigest() == digest && e.GetState() == "done":
				return time.Since(t0), nil
			case e.GetState() == "failed" && e.GetUpdated().AsTime().After(t0):
				return 0, fmt.Errorf("bench: prefetch of %s@%s failed: %s", ref, digest, e.GetError())
			}
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("bench: prefetch of %s@%s not done within %s (%s)", ref, digest, timeout, last)
		case <-tick.C:
		}
	}
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err == nil {
		err = os.WriteFile(to, b, 0o644)
	}
	if err != nil {
		return fmt.Errorf("bench: keep startgated's log: %w", err)
	}
	return nil
}
