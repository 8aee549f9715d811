package devcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/startgate/startgate/harness/testbed"
	"github.com/startgate/startgate/harness/testbed/cluster"
	"github.com/startgate/startgate/internal/daemon"
)

// ImageRepoTag is the busybox image pushed to the session's registry.
const ImageRepoTag = "startgate/busybox:1"

// stopTimeout bounds the teardown; each part has its own shorter limits.
const stopTimeout = 3 * time.Minute

// Options are the command line's.
type Options struct {
	Direct           bool   // kubelet straight on containerd, no startgated
	Parent           string // where the session's directory is made
	NodeName         string
	KubeBin          string // "" = cluster.Binaries (builds once)
	StartgatedConfig string // a startgated TOML file to use instead of the generated one
	Startgatectl     string // the startgatectl to print in the hints
}

// Main is the startgate-cluster command line; it returns the exit code.
// When this process is the startgated child it re-executed, it runs
// startgated instead.
func Main(args []string) int {
	if os.Getenv(childEnv) == "1" {
		return daemon.Main(args)
	}
	fs := pflag.NewFlagSet("startgate-cluster", pflag.ContinueOnError)
	var o Options
	fs.BoolVar(&o.Direct, "direct", false, "put kubelet straight on containerd, without startgated, for comparison")
	fs.StringVar(&o.Parent, "parent", "/tmp", "where the session's directory (sockets, logs, certificates, etcd, containerd's root) is made; keep it short: unix socket paths live under it")
	fs.StringVar(&o.NodeName, "node-name", cluster.DefaultNodeName, "the node's name")
	fs.StringVar(&o.KubeBin, "kube-bin", "", "directory of kubelet, kube-apiserver, kube-controller-manager, kube-scheduler and kubectl (default: $"+cluster.BinEnv+", else hack/kubernetes/build.sh, which builds them once, about 15 minutes)")
	fs.StringVar(&o.StartgatedConfig, "startgated-config", "", "startgated config file to use instead of the generated one; the sockets still come from flags")
	fs.StringVar(&o.Startgatectl, "startgatectl", "", "the startgatectl to show in the hints (default: from PATH)")
	fs.Usage = func() {
		fmt.Fprint(os.Stderr, "Usage: startgate-cluster [flags]\n\n"+
			"Runs a one-node Kubernetes cluster on this machine with startgated in kubelet's\n"+
			"path: a private containerd, a loopback registry holding a busybox image,\n"+
			"startgated's CRI proxy in front of the containerd, and etcd, kube-apiserver,\n"+
			"kube-controller-manager, kube-scheduler and a kubelet on the proxy. Prints how\n"+
			"to reach it, then runs until SIGINT or SIGTERM, and stops everything, leaving\n"+
			"nothing behind. Needs root.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "startgate-cluster: unexpected arguments %v\n", fs.Args())
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "startgate-cluster:", err)
		return 1
	}
	return 0
}

// session is everything Run started, in start order; stop goes
// backwards.
type session struct {
	dir     string
	tb      *testbed.Testbed
	reg     *testbed.Registry
	gate    *testbed.Startgated
	cluster *cluster.Cluster
}

// Run starts the session, prints how to use it to out, waits for ctx to
// end (or startgated to die) and stops everything.
func Run(ctx context.Context, o Options, out io.Writer) (err error) {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (containerd, runc and kubelet do), euid %d", os.Geteuid())
	}
	t0 := time.Now()
	bin := o.KubeBin
	if bin == "" {
		fmt.Fprintln(out, "Kubernetes binaries: hack/kubernetes/build.sh (the first time it builds them, about 15 minutes)...")
		if bin, err = cluster.Binaries(ctx); err != nil {
			return err
		}
		t0 = time.Now() // the cluster's time, not the build's
	}
	s := &session{}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
		defer cancel()
		fmt.Fprintln(out, "\nstopping: kubelet and control plane, startgated, registry, containerd and its pods...")
		if serr := s.stop(stopCtx); serr != nil {
			err = errors.Join(err, serr)
		} else {
			fmt.Fprintf(out, "stopped; %s removed\n", s.dir)
		}
	}()
	if s.dir, err = os.MkdirTemp(o.Parent, "sgc-"); err != nil {
		return err
	}
	if s.dir, err = filepath.Abs(s.dir); err != nil {
		return err
	}
	if s.tb, err = testbed.Start(ctx, testbed.Options{Parent: s.dir}); err != nil {
		return err
	}
	if s.reg, err = testbed.StartRegistry(ctx, testbed.RegistryOptions{Parent: s.dir}); err != nil {
		return err
	}
	img, err := testbed.BusyboxImage()
	if err != nil {
		return err
	}
	if _, err := s.reg.Push(ctx, ImageRepoTag, img); err != nil {
		return err
	}
	// The control plane first, the kubelet last: startgated's pod watch
	// needs the node's kubeconfig, and the kubelet needs startgated's CRI
	// socket.
	gateDir := filepath.Join(s.dir, "startgated")
	endpoint := s.tb.Endpoint()
	if !o.Direct {
		endpoint = testbed.StartgatedCRISocket(gateDir)
	}
	s.cluster, err = cluster.Start(ctx, cluster.Options{
		Parent:          s.dir,
		NodeName:        o.NodeName,
		RuntimeEndpoint: endpoint,
		CNIConfDir:      s.tb.CNIConfDir(),
		KubeBin:         bin,
		NoKubelet:       true,
	})
	if err != nil {
		return err
	}
	if !o.Direct {
		cfg := gateConfig(s.cluster.NodeKubeconfig(), s.cluster.NodeName())
		if s.gate, err = startGate(ctx, gateDir, s.tb.Endpoint(), cfg, o.StartgatedConfig); err != nil {
			return err
		}
	}
	if err := s.cluster.StartKubelet(ctx); err != nil {
		return err
	}
	if err := s.cluster.WaitNodeReady(ctx); err != nil {
		return err
	}
	example := filepath.Join(s.dir, "web.yaml")
	if err := os.WriteFile(example, []byte(webYAML(s.reg.Ref(ImageRepoTag))), 0o644); err != nil {
		return err
	}
	printHints(out, s, o, example, time.Since(t0))

	var gateExited <-chan struct{}
	if s.gate != nil {
		gateExited = s.gate.Exited()
	}
	select {
	case <-ctx.Done():
		return nil
	case <-gateExited:
		return s.gate.WithLog(errors.New("startgated exited"))
	}
}

// stop goes in reverse start order: the kubelet (startgated's only CRI
// client), startgated (its pod watch still has an apiserver to end its
// watch against), the control plane, the registry, containerd with every
// pod, the directory.
func (s *session) stop(ctx context.Context) error {
	var errs []error
	if s.cluster != nil {
		errs = append(errs, s.cluster.StopKubelet(ctx))
	}
	if s.gate != nil {
		errs = append(errs, s.gate.Stop())
	}
	if s.cluster != nil {
		errs = append(errs, s.cluster.Stop(ctx))
	}
	if s.reg != nil {
		errs = append(errs, s.reg.Stop(ctx))
	}
	if s.tb != nil {
		errs = append(errs, s.tb.Stop(ctx))
	}
	if s.dir != "" {
		errs = append(errs, os.RemoveAll(s.dir))
	}
	return errors.Join(errs...)
}

// printHints tells the user how to reach everything.
func printHints(out io.Writer, s *session, o Options, example string, took time.Duration) {
	c := s.cluster
	path := "kubelet -> startgated -> containerd"
	if s.gate == nil {
		path = "kubelet -> containerd (--direct: no startgated)"
	}
	image := s.reg.Ref(ImageRepoTag)
	fmt.Fprintf(out, "\nA one-node Kubernetes cluster is up in %s: node %s, %s.\n\n", took.Round(100*time.Millisecond), c.NodeName(), path)
	fmt.Fprintf(out, "  kubeconfig: %s\n\n", c.Kubeconfig())
	fmt.Fprintf(out, "  export KUBECONFIG=%s\n", c.Kubeconfig())
	fmt.Fprintf(out, "  export PATH=%s:$PATH   # kubectl %s\n", c.KubeBin(), "v1.34")
	fmt.Fprintf(out, "  kubectl get nodes\n\n")
	fmt.Fprintf(out, "Image in the session's registry: %s\n", image)
	if s.tb.PodSubnet() != "" {
		fmt.Fprintf(out, "Pods get IPs in %s (a bridge on this host); there is no cluster DNS or Service proxy.\n", s.tb.PodSubnet())
		fmt.Fprintf(out, "  kubectl apply -f %s   # Deployment web: 3 replicas of it, HTTP readiness probe\n", example)
		fmt.Fprintf(out, "  kubectl run sh --image=%s -- sleep 3600\n\n", image)
	} else {
		fmt.Fprintf(out, "No CNI plugins here (apt-get install containernetworking-plugins): pods need hostNetwork: true.\n")
		fmt.Fprintf(out, "  kubectl run sh --image=%s --overrides='{\"spec\":{\"hostNetwork\":true}}' -- sleep 3600\n\n", image)
	}
	if s.gate != nil {
		ctl := o.Startgatectl
		if ctl == "" {
			ctl = "startgatectl"
			if p, err := exec.LookPath("startgatectl"); err == nil {
				ctl = p
			}
		}
		api := s.gate.APISocket()
		fmt.Fprintf(out, "Watch the gate:\n")
		fmt.Fprintf(out, "  %s --socket %s status\n", ctl, api)
		fmt.Fprintf(out, "  %s --socket %s watch\n", ctl, api)
		fmt.Fprintf(out, "  %s --socket %s queue --watch\n\n", ctl, api)
	}
	fmt.Fprintf(out, "Logs: %s/*.log", c.Dir())
	if s.gate != nil {
		fmt.Fprintf(out, ", %s", s.gate.LogPath())
	}
	fmt.Fprintf(out, ", %s\n\n", s.tb.LogPath())
	fmt.Fprintf(out, "Ctrl-C to stop: stops everything and removes %s.\n", s.dir)
}

// webYAML is a Deployment that runs here: the session's image on the pod
// network, no cluster DNS, an HTTP readiness probe (kubelet makes it over
// the bridge).
func webYAML(image string) string {
	return `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      dnsPolicy: Default         # no cluster DNS
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: ` + image + `
        command: ["sh", "-c", "sleep 2; mkdir -p /tmp/www; echo ok > /tmp/www/ready; exec httpd -f -p 8080 -h /tmp/www"]
        readinessProbe:
          httpGet: {path: /ready, port: 8080}
          periodSeconds: 1
`
}
