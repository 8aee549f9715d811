package kubebench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	crremote "github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/startgate/startgate/harness/bench"
	"github.com/startgate/startgate/harness/testbed"
	pb "github.com/startgate/startgate/proto/startgate/v1"
)

// remoteCPUEvery is the CPU sampling period on an existing cluster's node:
// its kubelet's resource metrics, whose counter moves at the kubelet's
// housekeeping period (about 10 s), so sampling faster reads the same
// value twice.
const remoteCPUEvery = 5 * time.Second

// remoteModes is --modes' default on an existing cluster: the node as it
// is, with the users' pod-level alternative.
const remoteModes = "node,node+ifnotpresent"

// clusterNode is a node of an existing cluster (--kubeconfig, --node): the
// benchmark changes nothing on it but its own namespace, which it creates
// and deletes, and (with --startgated-socket, run on the node itself)
// startgated's bypass, which it sets back.
type clusterNode struct {
	opts *Options
	cs   kubernetes.Interface
	node string
	ns   string
	repo string // REGISTRY/startgate-bench-app, what pods pull
	tag  string
	app  *bench.App
	// cores is the node's capacity.
	cores int

	apiConn *grpc.ClientConn
	api     pb.StartgateClient
	bypass  bool // set by this run, to be set back
}

var _ node = (*clusterNode)(nil)

// startClusterNode checks the node, creates the benchmark's namespace and
// pushes the app.
func startClusterNode(ctx context.Context, o *Options, pr *progress) (_ *clusterNode, err error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubebench: --kubeconfig %s: %w", o.Kubeconfig, err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubebench: --kubeconfig %s: %w", o.Kubeconfig, err)
	}
	r := &clusterNode{opts: o, cs: cs, node: o.Node}
	nd, err := cs.CoreV1().Nodes().Get(ctx, o.Node, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("kubebench: --node %s: %w", o.Node, err)
	}
	if arch := nd.Status.NodeInfo.Architecture; arch != runtime.GOARCH {
		return nil, fmt.Errorf("kubebench: node %s is %s: the app image carries this machine's busybox (%s)", o.Node, arch, runtime.GOARCH)
	}
	r.cores = int(nd.Status.Capacity.Cpu().Value())
	if busy, err := otherWorkloads(ctx, cs, o.Node); err != nil {
		return nil, err
	} else if len(busy) > 0 && !o.AllowBusyNode {
		return nil, fmt.Errorf("kubebench: node %s runs other workloads (%s): its pods would slow the benchmark's and the benchmark theirs; drain it, or pass --allow-busy-node", o.Node, strings.Join(busy, ", "))
	}
	if o.StartgatedSocket != "" {
		if r.apiConn, err = grpc.NewClient("unix://"+o.StartgatedSocket, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
			return nil, fmt.Errorf("kubebench: --startgated-socket: %w", err)
		}
		r.api = pb.NewStartgateClient(r.apiConn)
		if _, err := r.api.Status(ctx, &pb.StatusRequest{}); err != nil {
			_ = r.apiConn.Close()
			return nil, fmt.Errorf("kubebench: --startgated-socket %s: %w", o.StartgatedSocket, err)
		}
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, r.stop(context.WithoutCancel(ctx)))
		}
	}()
	var b [4]byte
	_, _ = rand.Read(b[:])
	suffix := hex.EncodeToString(b[:])
	r.ns = "startgate-bench-" + suffix
	r.repo, r.tag = strings.TrimSuffix(o.Registry, "/")+"/startgate-bench-app", "run-"+suffix
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: r.ns,
		Labels: map[string]string{"app.kubernetes.io/managed-by": "startgate-bench"}}}, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("kubebench: create namespace %s: %w", r.ns, err)
	}
	pr.line("namespace %s; pushing the app to %s:%s", r.ns, r.repo, r.tag)
	if r.app, err = newApp(o); err != nil {
		return nil, err
	}
	if err := r.push(ctx, r.app.Image); err != nil {
		return nil, err
	}
	return r, nil
}

// otherWorkloads lists the pods on node that are not the cluster's own
// (kube-system) or a DaemonSet's: what would share the node with the
// benchmark.
func otherWorkloads(ctx context.Context, cs kubernetes.Interface, node string) ([]string, error) {
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", node).String()})
	if err != nil {
		return nil, fmt.Errorf("kubebench: list node %s's pods: %w", node, err)
	}
	var out []string
	for _, p := range pods.Items {
		if p.Namespace == "kube-system" || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		if c := metav1.GetControllerOf(&p); c != nil && c.Kind == "DaemonSet" {
			continue
		}
		out = append(out, p.Namespace+"/"+p.Name)
	}
	return out, nil
}

func (r *clusterNode) client() kubernetes.Interface   { return r.cs }
func (r *clusterNode) nodeName() string               { return r.node }
func (r *clusterNode) namespace() string              { return r.ns }
func (r *clusterNode) appRef() string                 { return r.repo + ":" + r.tag }
func (r *clusterNode) digestRef(digest string) string { return r.repo + "@" + digest }
func (r *clusterNode) gate() pb.StartgateClient       { return r.api }

// push writes img under the run's tag with the user's registry
// credentials (docker's config.json, credential helpers).
func (r *clusterNode) push(ctx context.Context, img v1.Image) error {
	ref, err := name.ParseReference(r.appRef())
	if err != nil {
		return fmt.Errorf("kubebench: --registry %s: %w", r.opts.Registry, err)
	}
	if err := crremote.Write(ref, img, crremote.WithContext(ctx), crremote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		return fmt.Errorf("kubebench: push %s: %w", ref, err)
	}
	return nil
}

// Patch is bench.Patcher: the app with its last layer replaced, pushed
// under the run's tag.
func (r *clusterNode) Patch(ctx context.Context, _ string, base v1.Image, changed v1.Layer) (v1.Image, string, error) {
	img, err := testbed.ReplaceLastLayer(base, changed)
	if err != nil {
		return nil, "", err
	}
	if err := r.push(ctx, img); err != nil {
		return nil, "", err
	}
	d, err := img.Digest()
	if err != nil {
		return nil, "", err
	}
	return img, d.String(), nil
}

func (r *clusterNode) patch(ctx context.Context) (string, error) { return r.app.Patch(ctx, r, "") }

// setMode: the node runs as it is; node-bypass turns startgated's bypass
// on, node turns it off again.
func (r *clusterNode) setMode(ctx context.Context, m Mode) error {
	switch m.Path {
	case PathNode:
		if r.api != nil {
			return r.setBypass(ctx, false)
		}
		return nil
	case PathNodeBypass:
		if r.api == nil {
			return fmt.Errorf("kubebench: mode %s needs --startgated-socket (run the benchmark on the node)", m.Name)
		}
		return r.setBypass(ctx, true)
	}
	return fmt.Errorf("kubebench: mode %s: on an existing cluster only node and node-bypass run (its kubelet and startgated are not the benchmark's to reconfigure)", m.Name)
}

func (r *clusterNode) setBypass(ctx context.Context, on bool) error {
	if err := setBypass(ctx, r.api, on); err != nil {
		return err
	}
	r.bypass = on
	return nil
}

// setBypass turns startgated's bypass on or off, as `startgatectl bypass`
// does, and checks that the gate says so.
func setBypass(ctx context.Context, api pb.StartgateClient, on bool) error {
	st, err := api.SetBypass(ctx, &pb.SetBypassRequest{On: on})
	if err != nil {
		return fmt.Errorf("kubebench: startgated bypass %v: %w", on, err)
	}
	if st.GetBypassed() != on {
		return fmt.Errorf("kubebench: startgated bypass is %v after setting it %v", st.GetBypassed(), on)
	}
	return nil
}

// remoteQuietBusy: the node counts as quiet on an existing cluster while
// it uses at most this share of its cores (its DaemonSets and system
// daemons keep some busy).
const remoteQuietBusy = 0.25

// quiet polls the kubelet's CPU counter until two of its samples in a row
// show the node at most remoteQuietBusy busy, or q.Max passes.
func (r *clusterNode) quiet(ctx context.Context, q bench.Quiet) (string, bool, error) {
	t0 := time.Now()
	prevUsed, prevAt, ok := r.resourceCounter(ctx)
	busy, quiet := -1.0, 0
	for time.Since(t0) < q.Max {
		select {
		case <-ctx.Done():
			return "", false, ctx.Err()
		case <-time.After(remoteCPUEvery):
		}
		used, at, ok2 := r.resourceCounter(ctx)
		if ok && ok2 && at.After(prevAt) {
			busy = (used - prevUsed) / (float64(r.cores) * at.Sub(prevAt).Seconds())
			if busy <= remoteQuietBusy {
				quiet++
			} else {
				quiet = 0
			}
			if quiet >= 2 {
				return fmt.Sprintf("%.0f%% of the node's CPU busy", 100*busy), true, nil
			}
		}
		if ok2 && (!ok || at.After(prevAt)) {
			prevUsed, prevAt = used, at
		}
		ok = ok || ok2
	}
	if busy < 0 {
		return "no CPU reading from the kubelet", false, nil
	}
	return fmt.Sprintf("%.0f%% of the node's CPU busy", 100*busy), false, nil
}

// resourceCounter reads the kubelet's node_cpu_usage_seconds_total (its
// resource metrics, through the API server's node proxy) with the time
// the kubelet took it.
func (r *clusterNode) resourceCounter(ctx context.Context) (used float64, at time.Time, ok bool) {
	b, err := r.cs.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes", r.node, "proxy/metrics/resource").Do(ctx).Raw()
	if err != nil {
		return 0, time.Time{}, false
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(b)))
	if err != nil {
		return 0, time.Time{}, false
	}
	f, ok := fams["node_cpu_usage_seconds_total"]
	if !ok || len(f.GetMetric()) == 0 {
		return 0, time.Time{}, false
	}
	m := f.GetMetric()[0]
	at = time.Now()
	if ms := m.GetTimestampMs(); ms > 0 {
		at = time.UnixMilli(ms)
	}
	return m.GetCounter().GetValue(), at, true
}

// idle is the node's idle core-seconds as a counter: cores × the time the
// kubelet took its sample, minus the CPU it had used by then. It moves
// when the kubelet's counter does (its housekeeping period), never
// between: a run's idle CPU is right over its length, not within a few
// seconds.
// local is false: the node's processes are on another machine.
func (r *clusterNode) local() bool { return false }

func (r *clusterNode) idle(ctx context.Context) (float64, int, bool) {
	used, at, ok := r.resourceCounter(ctx)
	if !ok {
		return 0, r.cores, false
	}
	return float64(r.cores)*float64(at.UnixNano())/1e9 - used, r.cores, true
}

// reboot is refused: the node is not the benchmark's to reboot.
func (r *clusterNode) reboot(context.Context, Mode) (time.Time, error) {
	return time.Time{}, errors.New("kubebench: the reboot scenario runs only on this machine's node, not on an existing cluster's")
}

// stop deletes the namespace (and waits until it is gone) and sets
// startgated's bypass back off.
func (r *clusterNode) stop(ctx context.Context) error {
	var errs []error
	if r.bypass {
		errs = append(errs, r.setBypass(ctx, false))
	}
	if r.apiConn != nil {
		errs = append(errs, r.apiConn.Close())
	}
	if r.ns != "" {
		err := r.cs.CoreV1().Namespaces().Delete(ctx, r.ns, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("kubebench: delete namespace %s: %w", r.ns, err))
		} else {
			errs = append(errs, wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
				_, err := r.cs.CoreV1().Namespaces().Get(ctx, r.ns, metav1.GetOptions{})
				return apierrors.IsNotFound(err), nil
			}))
		}
	}
	return errors.Join(errs...)
}
