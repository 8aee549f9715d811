package cluster

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/startgate/startgate/harness/testbed"
)

// ErrUnsupported is returned (wrapped) when this machine cannot run a
// cluster: not root, no etcd, no Kubernetes binaries. It wraps the
// testbed's, so one errors.Is serves both.
var ErrUnsupported = fmt.Errorf("cluster: %w", testbed.ErrUnsupported)

// Component names, for LogPath.
const (
	Etcd              = "etcd"
	APIServer         = "kube-apiserver"
	ControllerManager = "kube-controller-manager"
	Scheduler         = "kube-scheduler"
	Kubelet           = "kubelet"
)

// DefaultNodeName is the node's name when Options.NodeName is empty.
const DefaultNodeName = "sg-node"

// maxSocketPath is sizeof(sockaddr_un.sun_path) minus the NUL byte; the
// longest socket kubelet makes under its root dir is
// pod-resources/kubelet.sock.
const (
	maxSocketPath   = 107
	longestKubeSock = "/kubelet/pod-resources/kubelet.sock"
)

// Options configure Start. RuntimeEndpoint is required unless NoKubelet
// (then StartKubelet needs it).
type Options struct {
	// Parent is where the cluster's directory is made; "" means /tmp.
	// Keep it short: kubelet makes unix sockets under DIR/kubelet.
	Parent string
	// NodeName is the node's name; "" means DefaultNodeName.
	NodeName string
	// RuntimeEndpoint is the unix socket path kubelet's CRI client dials:
	// startgated's CRI proxy, or containerd's socket for comparison.
	RuntimeEndpoint string
	// CNIConfDir is containerd's CNI conf dir: Start writes a loopback
	// conflist there (Stop removes it) so containerd reports NetworkReady
	// and the node becomes Ready. "" writes nothing: the runtime's network
	// is then the caller's business.
	CNIConfDir string
	// KubeBin is the directory of the Kubernetes binaries; "" means
	// Binaries (which may build them).
	KubeBin string
	// NodeIP is the node's InternalIP, where the apiserver reaches the
	// kubelet; "" picks the host's (see doc.go: it cannot be loopback).
	NodeIP string
	// FeatureGates are kubelet feature gates.
	FeatureGates map[string]bool
	// RuntimeRequestTimeout is kubelet's runtimeRequestTimeout; 0 leaves
	// kubelet's default (2m).
	RuntimeRequestTimeout time.Duration
	// ParallelImagePulls, when positive, turns kubelet's serialized image
	// pulls off (serializeImagePulls: false) and lets this many run at
	// once (maxParallelImagePulls); AllImagePulls turns them off with no
	// maximum; 0 keeps kubelet's default, one pull at a time on the node.
	ParallelImagePulls int
	// KubeletCPUs pins the kubelet to these CPUs (testbed.Pinned), as
	// on a node of that size; the control plane runs elsewhere.
	KubeletCPUs string
	// RegistryPullQPS, when set, is kubelet's registryPullQPS (0 is no
	// limit; its burst stays at the default); nil keeps the default, 5.
	RegistryPullQPS *int32
	// StartTimeout bounds Start from the first process to a Ready node;
	// 0 means 3 minutes (a busy 2-core machine needs most of one).
	StartTimeout time.Duration
	// NoKubelet makes Start return once the control plane is up, before
	// the kubelet: the caller starts what needs the kubeconfigs first (a
	// node agent watching the node's pods with NodeKubeconfig), then
	// calls StartKubelet and WaitNodeReady.
	NoKubelet bool
	// NoNodeRestriction runs kube-apiserver without the NodeRestriction
	// admission plugin that kubeadm enables (and Start enables unless
	// this is set): only for what is known not to work under it yet, said
	// where it is set.
	NoNodeRestriction bool
	// EndpointFromFile makes a restart of the kubelet keep the
	// containerRuntimeEndpoint its config file (KubeletConfigPath) has,
	// as an operator's edit or startgatectl node enable left it, instead
	// of RuntimeEndpoint.
	EndpointFromFile bool
}

// Cluster is a running one-node cluster. Its methods are safe for
// concurrent use; Stop may be called more than once.
type Cluster struct {
	dir      string
	bin      string
	nodeName string
	nodeIP   net.IP
	opts     Options

	etcdURL   string // http://127.0.0.1:PORT
	apiURL    string // https://127.0.0.1:PORT
	cniFile   string // the conflist Start wrote, "" if none
	transport *http.Transport
	client    *kubernetes.Clientset

	// controlPlane is etcd, apiserver, controller-manager, scheduler, in
	// start order; Stop goes backwards.
	controlPlane []*component

	// kubeletMu guards the kubelet, which StopKubelet and StartKubelet
	// replace, and when it was last started.
	kubeletMu      sync.Mutex
	kubelet        *component
	kubeletStarted time.Time
	kubeletPort    int

	stopOnce sync.Once
	stopErr  error
}

// Start starts etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler and a kubelet on opts.RuntimeEndpoint, in a new directory
// under opts.Parent, and returns once the node is Ready and untainted and
// the default namespace has its service account (before that, pods are
// refused); with opts.NoKubelet, once the control plane is up. On error nothing is left behind, and the error carries the
// tail of the failing component's log.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: kubelet needs root (euid %d)", ErrUnsupported, os.Geteuid())
	}
	etcd, err := exec.LookPath("etcd")
	if err != nil {
		return nil, fmt.Errorf("%w: %w (apt-get install etcd-server)", ErrUnsupported, err)
	}
	if opts.RuntimeEndpoint == "" && !opts.NoKubelet {
		return nil, errors.New("cluster: Options.RuntimeEndpoint is required")
	}
	bin := opts.KubeBin
	if bin == "" {
		if bin, err = Binaries(ctx); err != nil {
			return nil, err
		}
	} else if err := checkBinaries(bin); err != nil {
		return nil, err
	}
	if opts.Parent == "" {
		opts.Parent = "/tmp"
	}
	if opts.NodeName == "" {
		opts.NodeName = DefaultNodeName
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 3 * time.Minute
	}
	nodeIP, err := pickNodeIP(opts.NodeIP)
	if err != nil {
		return nil, err
	}

	dir, err := os.MkdirTemp(opts.Parent, "sgk-")
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if dir, err = filepath.Abs(dir); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("cluster: %w", err)
	}
	c := &Cluster{dir: dir, bin: bin, nodeName: opts.NodeName, nodeIP: nodeIP, opts: opts}
	defer func() {
		if err != nil {
			stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if serr := c.Stop(stopCtx); serr != nil {
				err = errors.Join(err, serr)
			}
		}
	}()
	if n := len(dir) + len(longestKubeSock); n > maxSocketPath {
		return nil, fmt.Errorf("cluster: kubelet's socket %s%s would be %d bytes, the limit is %d: use a shorter Options.Parent", dir, longestKubeSock, n, maxSocketPath)
	}
	for _, d := range []string{"pki", "etcd", "manifests", "kubelet", "pod-logs", "volume-plugins"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
	}
	p, err := newPKI(c.nodeName, nodeIP)
	if err != nil {
		return nil, err
	}
	if err := p.write(c.pkiDir()); err != nil {
		return nil, err
	}

	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	if err := c.startEtcd(ctx, etcd); err != nil {
		return nil, err
	}
	if err := c.startAPIServer(ctx, p); err != nil {
		return nil, err
	}
	if err := c.startControllers(); err != nil {
		return nil, err
	}
	if opts.CNIConfDir != "" {
		if err := c.writeCNIConf(opts.CNIConfDir); err != nil {
			return nil, err
		}
	}
	if !opts.NoKubelet {
		if err := c.StartKubelet(ctx); err != nil {
			return nil, c.withExited(err)
		}
		if err := c.WaitNodeReady(ctx); err != nil {
			return nil, c.withExited(err)
		}
	}
	if err := c.waitServiceAccount(ctx); err != nil {
		return nil, c.withExited(err)
	}
	return c, nil
}

// withExited adds to err the log tail of every control-plane process that
// has exited: a crashed controller-manager shows up as a node that never
// loses its taint.
func (c *Cluster) withExited(err error) error {
	for _, p := range c.controlPlane {
		if p.hasExited() {
			err = p.withLog(fmt.Errorf("%w\ncluster: %s exited: %s", err, p.name, p.cmd.ProcessState))
		}
	}
	return err
}

// StartT starts a cluster for a test and stops it in t.Cleanup; a failed
// test gets the tail of every component's log. When this machine cannot
// run a cluster (not root, no etcd, Kubernetes not built) it skips the
// test, except under CI=true, where it fails: CI must not turn these tests
// into silent skips. It never builds Kubernetes (a cold build outlasts go
// test's timeout): opts.KubeBin, $STARTGATE_KUBE_BIN or build.sh's cache
// must have the binaries, as `make test` sees to.
func StartT(t testing.TB, opts Options) *Cluster {
	t.Helper()
	skip := func(err error) {
		t.Helper()
		if errors.Is(err, ErrUnsupported) && os.Getenv("CI") != "true" {
			t.Skipf("cluster: cannot run a cluster here (set CI=true to make this a failure): %v", err)
		}
		t.Fatalf("cluster: start: %v", err)
	}
	if opts.KubeBin == "" {
		bin, err := CachedBinaries()
		if err != nil {
			skip(err)
		}
		opts.KubeBin = bin
	}
	c, err := Start(context.Background(), opts)
	if err != nil {
		skip(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, name := range []string{Kubelet, APIServer, ControllerManager, Scheduler, Etcd} {
				t.Logf("%v", testbed.WithLogTail(fmt.Errorf("cluster: %s's log", name), c.LogPath(name)))
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Errorf("cluster: stop: %v", err)
		}
	})
	return c
}

// Dir is the cluster's directory; Stop removes it.
func (c *Cluster) Dir() string { return c.dir }

// LogPath is the log file of a component (Etcd, APIServer, ...).
func (c *Cluster) LogPath(component string) string {
	return filepath.Join(c.dir, component+".log")
}

// NodeName is the node's name, also its kubelet's hostname.
func (c *Cluster) NodeName() string { return c.nodeName }

// NodeIP is the node's InternalIP, where the kubelet listens.
func (c *Cluster) NodeIP() string { return c.nodeIP.String() }

// Server is the apiserver's URL, https://127.0.0.1:PORT.
func (c *Cluster) Server() string { return c.apiURL }

// Kubeconfig is the admin kubeconfig (system:masters), for kubectl and
// tests.
func (c *Cluster) Kubeconfig() string { return filepath.Join(c.dir, "admin.kubeconfig") }

// NodeKubeconfig is the kubelet's own kubeconfig (system:node:NAME in
// system:nodes): what a node agent such as startgated uses to watch its
// node's pods, which the Node authorizer lets it get, list and watch.
func (c *Cluster) NodeKubeconfig() string { return filepath.Join(c.dir, "kubelet.kubeconfig") }

// CAFile is the cluster CA's certificate.
func (c *Cluster) CAFile() string { return filepath.Join(c.pkiDir(), caCrt) }

// Client is a clientset with the admin credentials.
func (c *Cluster) Client() kubernetes.Interface { return c.client }

// StaticPodDir is kubelet's staticPodPath. Write a manifest to a dotfile
// there and rename it into place: kubelet reads files as they appear and
// would see a half-written one.
func (c *Cluster) StaticPodDir() string { return filepath.Join(c.dir, "manifests") }

// KubeBin is the directory of the Kubernetes binaries the cluster runs.
func (c *Cluster) KubeBin() string { return c.bin }

// Kubectl runs kubectl with the admin kubeconfig and returns its standard
// output; on error, the output has the standard error appended, and so
// has the error.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "kubectl"), append([]string{"--kubeconfig", c.Kubeconfig()}, args...)...)
	cmd.Env = componentEnv()
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String() + stderr.String(), fmt.Errorf("cluster: kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func (c *Cluster) pkiDir() string { return filepath.Join(c.dir, "pki") }

// pickNodeIP returns want parsed, or the host's address: kubelet refuses
// a loopback, link-local or multicast node IP and one no interface has.
// The first global unicast IPv4 of an interface that is up wins, which on
// a machine with one NIC is the one kubelet would pick itself.
func pickNodeIP(want string) (net.IP, error) {
	if want != "" {
		ip := net.ParseIP(want)
		if ip == nil {
			return nil, fmt.Errorf("cluster: Options.NodeIP %q is not an IP address", want)
		}
		return ip, nil
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	for _, iface := range ifaces {
		if iface.Flags&net.FlagUp == 0 || iface.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := iface.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
				return n.IP.To4(), nil
			}
		}
	}
	return nil, fmt.Errorf("%w: no non-loopback IPv4 address for the node (kubelet refuses 127.0.0.1): set Options.NodeIP", ErrUnsupported)
}

// freePort asks the kernel for a free TCP port on host and gives it back:
// the components take a port number, not a listener. Another process may
// take it before they bind it; startComponent's caller then retries.
func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}

// portAttempts bounds the retries of a component whose picked port was
// taken before it bound it.
const portAttempts = 5

// Apply applies the manifests (*.yaml) in directory dir of fsys with
// kubectl apply, as an operator applies a directory of the repository,
// and waits for the CustomResourceDefinitions among them to be served.
func (c *Cluster) Apply(ctx context.Context, fsys fs.FS, dir string) error {
	tmp, err := os.MkdirTemp(c.dir, "apply-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	names, err := fs.Glob(fsys, path.Join(dir, "*.yaml"))
	if err != nil {
		return err
	}
	crds := false
	for _, n := range names {
		b, err := fs.ReadFile(fsys, n)
		if err != nil {
			return err
		}
		crds = crds || strings.Contains(string(b), "kind: CustomResourceDefinition")
		if err := os.WriteFile(filepath.Join(tmp, path.Base(n)), b, 0o644); err != nil {
			return err
		}
	}
	if out, err := c.Kubectl(ctx, "apply", "-f", tmp); err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	if crds {
		if out, err := c.Kubectl(ctx, "wait", "--for", "condition=established", "--timeout", "60s", "crd", "--all"); err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
	}
	return nil
}
