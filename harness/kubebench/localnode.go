package kubebench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/client-go/kubernetes"
	internalapi "k8s.io/cri-api/pkg/apis"
	remote "k8s.io/cri-client/pkg"

	"github.com/startgate/startgate/harness/bench"
	"github.com/startgate/startgate/harness/testbed"
	"github.com/startgate/startgate/harness/testbed/cluster"
	pb "github.com/startgate/startgate/proto/startgate/v1"
)

// localNode is the benchmark's one-node cluster: the testbed containerd, the
// far-away registry, the control plane, and per mode a kubelet and maybe a
// startgated.
type localNode struct {
	opts    *Options
	dir     string
	tb      *testbed.Testbed
	reg     *testbed.Registry
	link    *testbed.Link
	cluster *cluster.Cluster
	cri     internalapi.RuntimeService // containerd's, for the reboot's kill

	daemon  *testbed.Startgated // nil in direct mode
	apiConn *grpc.ClientConn
	api     pb.StartgateClient
	mode    string // the mode kubelet and startgated run for
	pm      pacemaker

	app *bench.App // as last pushed
	ref string     // the registry across the link: what pods pull
}

var _ node = (*localNode)(nil)

func (n *localNode) client() kubernetes.Interface { return n.cluster.Client() }
func (n *localNode) nodeName() string             { return n.cluster.NodeName() }
func (n *localNode) namespace() string            { return "default" }
func (n *localNode) appRef() string               { return n.ref }
func (n *localNode) gate() pb.StartgateClient     { return n.api }

// quiet reads this machine's CPU pressure: the node is this machine.
func (n *localNode) quiet(ctx context.Context, q bench.Quiet) (string, bool, error) {
	cpu, ok, err := bench.WaitQuiet(ctx, q, nil)
	return fmt.Sprintf("CPU pressure %.2f", cpu), ok, err
}

// idle reads this machine's /proc/stat: the node is this machine (or
// the CPUs it is pinned to).
func (n *localNode) local() bool { return true }

func (n *localNode) idle(context.Context) (float64, int, bool) {
	v, cores, err := procIdle(n.opts.CPUs)
	return v, cores, err == nil
}

// startLocalNode starts everything but the kubelet and startgated: those come
// with the first mode.
func startLocalNode(ctx context.Context, o *Options) (_ *localNode, err error) {
	n := &localNode{opts: o}
	defer func() {
		if err != nil {
			stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
			defer cancel()
			err = errors.Join(err, n.stop(stopCtx))
		}
	}()
	if n.dir, err = os.MkdirTemp("", "sgkb-"); err != nil {
		return nil, err
	}
	if n.tb, err = testbed.Start(ctx, testbed.Options{Parent: n.dir, CPUs: o.CPUs}); err != nil {
		return nil, err
	}
	if n.tb.PodSubnet() == "" {
		return nil, errors.New("kubebench: the testbed has no pod network (apt-get install containernetworking-plugins)")
	}
	if n.cri, err = remote.NewRemoteRuntimeServiceBuilder().WithEndpoint("unix://" + n.tb.Endpoint()).
		WithConnectionTimeout(2 * time.Minute).WithTracerProvider(nil).Build(ctx); err != nil {
		return nil, fmt.Errorf("kubebench: CRI client: %w", err)
	}
	if n.reg, err = testbed.StartRegistry(ctx, testbed.RegistryOptions{Parent: n.dir, Token: o.RegistryToken}); err != nil {
		return nil, err
	}
	if n.link, err = testbed.NewLink(testbed.LinkOptions{Bandwidth: o.RegistryBandwidth, RTT: o.RegistryRTT}); err != nil {
		return nil, err
	}
	far, err := n.link.Forward(n.reg.Host())
	if err != nil {
		return nil, err
	}
	n.ref = far + "/" + AppRepoTag
	if n.app, err = newApp(o); err != nil {
		return nil, err
	}
	if _, err := n.reg.Push(ctx, AppRepoTag, n.app.Image); err != nil {
		return nil, err
	}
	if n.cluster, err = cluster.Start(ctx, cluster.Options{
		Parent:          n.dir,
		RuntimeEndpoint: n.tb.Endpoint(),
		CNIConfDir:      n.tb.CNIConfDir(),
		KubeBin:         o.KubeBin,
		NoKubelet:       true,
		KubeletCPUs:     o.CPUs,
	}); err != nil {
		return nil, err
	}
	return n, nil
}

// patch pushes a patch of the app (bench.App.Patch) and returns the new
// manifest digest.
func (n *localNode) patch(ctx context.Context) (string, error) {
	return n.app.Patch(ctx, n.reg, AppRepoTag)
}

// digestRef is the app's image pinned to digest, as IfNotPresent users
// roll a patch out: the repository across the link, @digest.
func (n *localNode) digestRef(digest string) string { return digestRef(n.ref, digest) }

// digestRef is ref's repository @digest.
func digestRef(ref, digest string) string {
	repo := ref
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i] // the tag's colon, not the host's port
	}
	return repo + "@" + digest
}

// gateDir is where startgated's config, sockets and log live.
func (n *localNode) gateDir() string { return filepath.Join(n.dir, "startgated") }

// daemonConfig is startgated's config for mode m: JSON logs, no metrics
// port, the pod watch on with the node's kubeconfig; fixed-K pins the
// in-flight limit; the gate-alone mode turns the pull path off; the
// prefetch mode turns [prefetch] on for the far registry (resolving on
// its own once an hour: PrefetchAdd is what fetches a patch).
func (n *localNode) daemonConfig(m Mode) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version = 1\n[daemon]\nlog_format = \"json\"\nlog_level = \"info\"\nshutdown_timeout = \"5s\"\n"+
		"[metrics]\nlisten = \"\"\n[kubernetes]\nenabled = true\nkubeconfig = %q\nnode_name = %q\n",
		n.cluster.NodeKubeconfig(), n.cluster.NodeName())
	if m.Limit > 0 {
		fmt.Fprintf(&b, "[admission.limits]\ninflight = %d\nrate = 1000.0\n", m.Limit)
	}
	if m.Path == PathGate {
		b.WriteString("[cri.pulls]\nenabled = false\n")
	}
	if m.Prefetch {
		host, _, _ := strings.Cut(n.ref, "/")
		fmt.Fprintf(&b, "[prefetch]\nenabled = true\nsnapshotter = %q\ninterval = \"1h\"\nmax_backoff = \"1h\"\nregistries = [%q]\n",
			n.tb.Snapshotter(), host)
	}
	b.WriteString(n.opts.DaemonConfig)
	b.WriteString(m.Config)
	return b.String()
}

// setMode stops the kubelet and startgated and starts them again for m
// (on an empty node), then waits for the node to be Ready.
func (n *localNode) setMode(ctx context.Context, m Mode) error {
	if err := n.cluster.StopKubelet(ctx); err != nil {
		return err
	}
	if err := errors.Join(n.stopGate(), n.stopPacemaker(ctx)); err != nil {
		return err
	}
	endpoint := n.tb.Endpoint()
	if m.viaGate() {
		if err := n.startGate(ctx, m); err != nil {
			return err
		}
		endpoint = n.daemon.CRISocket()
	}
	pulls := m.ParallelPulls
	if pulls == UnlimitedPulls {
		pulls = cluster.AllImagePulls
	}
	if err := n.cluster.SetKubelet(cluster.KubeletSettings{RuntimeEndpoint: endpoint, ParallelImagePulls: pulls, RegistryPullQPS: m.PullQPS}); err != nil {
		return err
	}
	if err := n.cluster.StartKubelet(ctx); err != nil {
		return err
	}
	n.mode = m.Name
	if err := n.cluster.WaitNodeReady(ctx); err != nil {
		return err
	}
	if m.Path == PathPacemaker {
		return n.startPacemaker(ctx, m)
	}
	return nil
}

// startGate starts startgated for m (this binary re-executed, or
// Options.Daemon) and its API client; in the proxy mode it turns the
// gate's bypass on, as `startgatectl bypass on` does.
func (n *localNode) startGate(ctx context.Context, m Mode) error {
	cmd, env, err := bench.DaemonCommand()
	if err != nil {
		return err
	}
	if len(n.opts.Daemon) > 0 {
		cmd = n.opts.Daemon
	}
	if n.daemon, err = testbed.StartStartgated(ctx, testbed.StartgatedOptions{
		Dir: n.gateDir(), Command: cmd, Env: env, Containerd: n.tb.Endpoint(), Config: n.daemonConfig(m), CPUs: n.opts.CPUs,
	}); err != nil {
		return err
	}
	if n.apiConn, err = grpc.NewClient("unix://"+n.daemon.APISocket(), grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		return fmt.Errorf("kubebench: startgated API client: %w", err)
	}
	n.api = pb.NewStartgateClient(n.apiConn)
	if m.Path == PathProxy {
		return setBypass(ctx, n.api, true)
	}
	return nil
}

// stopGate stops startgated, if it runs, keeping its log.
func (n *localNode) stopGate() error {
	var errs []error
	if n.apiConn != nil {
		errs = append(errs, n.apiConn.Close())
		n.apiConn, n.api = nil, nil
	}
	if n.daemon != nil {
		errs = append(errs, n.daemon.Stop())
		n.daemon = nil
	}
	return errors.Join(errs...)
}

// reboot does to the node what a reboot does to its pods: the kubelet
// stops, every pod sandbox dies (stopped and removed, containers with
// them), containerd and startgated start again, and it returns the
// moment before the kubelet starts again.
func (n *localNode) reboot(ctx context.Context, m Mode) (time.Time, error) {
	if err := n.cluster.StopKubelet(ctx); err != nil {
		return time.Time{}, err
	}
	if err := errors.Join(n.stopGate(), n.stopPacemaker(ctx)); err != nil {
		return time.Time{}, err
	}
	sbs, err := n.cri.ListPodSandbox(ctx, nil)
	if err != nil {
		return time.Time{}, fmt.Errorf("kubebench: reboot: list sandboxes: %w", err)
	}
	for _, sb := range sbs {
		if err := n.cri.StopPodSandbox(ctx, sb.GetId()); err != nil {
			return time.Time{}, fmt.Errorf("kubebench: reboot: stop sandbox: %w", err)
		}
		if err := n.cri.RemovePodSandbox(ctx, sb.GetId()); err != nil {
			return time.Time{}, fmt.Errorf("kubebench: reboot: remove sandbox: %w", err)
		}
	}
	if err := n.tb.Kill(); err != nil {
		return time.Time{}, err
	}
	if err := n.tb.Restart(ctx); err != nil {
		return time.Time{}, err
	}
	if m.viaGate() {
		if err := n.startGate(ctx, m); err != nil {
			return time.Time{}, err
		}
	}
	if m.Path == PathPacemaker {
		// Its DaemonSet's pod comes back with the node, before kubelet
		// starts the others.
		if err := n.startPacemaker(ctx, m); err != nil {
			return time.Time{}, err
		}
	}
	t0 := time.Now()
	return t0, n.cluster.StartKubelet(ctx)
}

// stop stops everything: kubelet, startgated, the control plane,
// containerd and its pods, the registry, the link, the directory. It goes
// on after errors and returns them all.
func (n *localNode) stop(ctx context.Context) error {
	var errs []error
	if n.cluster != nil {
		errs = append(errs, n.cluster.StopKubelet(ctx))
		errs = append(errs, n.stopPacemaker(ctx))
	}
	errs = append(errs, n.stopGate())
	if n.cluster != nil {
		errs = append(errs, n.cluster.Stop(ctx))
	}
	if n.cri != nil {
		errs = append(errs, n.cri.Close(ctx))
	}
	if n.tb != nil {
		errs = append(errs, n.tb.Stop(ctx))
	}
	if n.link != nil {
		errs = append(errs, n.link.Close())
	}
	if n.reg != nil {
		errs = append(errs, n.reg.Stop(ctx))
	}
	if n.dir != "" {
		if n.opts.DaemonLog != "" {
			if b, err := os.ReadFile(filepath.Join(n.gateDir(), "startgated.log")); err == nil {
				errs = append(errs, os.WriteFile(n.opts.DaemonLog, b, 0o644))
			}
		}
		errs = append(errs, os.RemoveAll(n.dir))
	}
	return errors.Join(errs...)
}
