package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remote "k8s.io/cri-client/pkg"

	"github.com/startgate/startgate/harness/testbed"
	"github.com/startgate/startgate/harness/testbed/cluster"
)

// kubeNode is a real one-node cluster (etcd, kube-apiserver,
// controller-manager, scheduler, kubelet) on the testbed's containerd,
// with startgated in kubelet's path, or not (direct), and a registry the
// pods pull their app image from.
type kubeNode struct {
	t   testing.TB
	n   *node // startgated; nil when direct
	tb  *testbed.Testbed
	c   *cluster.Cluster
	api kubernetes.Interface
	reg *testbed.Registry
	// app is the app image's reference in the registry; base is its
	// image, the one a patch changes.
	app  string
	base v1.Image
}

type kubeOptions struct {
	direct bool
	// config is more startgated TOML.
	config string
	// onContainerd starts kubelet on containerd with startgated running
	// beside it, its endpoint kept from its config file across restarts
	// (cluster.Options.EndpointFromFile): a node before startgatectl node
	// enable.
	onContainerd bool
}

const appRepoTag = "startgate/app:1"

func startKubeNode(t testing.TB, o kubeOptions) *kubeNode {
	t.Helper()
	ctx := context.Background()
	kn := &kubeNode{t: t}
	kn.reg = testbed.StartRegistryT(t, testbed.RegistryOptions{})
	kn.app = kn.reg.Ref(appRepoTag)
	kn.base, _ = appImage(t, 1<<20, 1)
	if _, err := kn.reg.Push(ctx, appRepoTag, kn.base); err != nil {
		t.Fatal(err)
	}
	if o.direct {
		kn.tb = testbed.StartT(t, testbed.Options{})
		kn.c = cluster.StartT(t, cluster.Options{RuntimeEndpoint: kn.tb.Endpoint(), CNIConfDir: kn.tb.CNIConfDir()})
	} else {
		// The control plane first (startgated's pod watch needs the
		// node's kubeconfig), then startgated, then the kubelet on
		// startgated's CRI socket.
		kn.n = startNode(t, nodeOptions{configFor: func(n *node) string {
			endpoint := n.cri
			if o.onContainerd {
				endpoint = n.tb.Endpoint()
			}
			kn.c = cluster.StartT(t, cluster.Options{RuntimeEndpoint: endpoint, CNIConfDir: n.tb.CNIConfDir(), NoKubelet: true,
				EndpointFromFile: o.onContainerd})
			return fmt.Sprintf("[cri.warmup]\ncap = \"2m\"\n[kubernetes]\nenabled = true\nkubeconfig = %q\nnode_name = %q\n%s",
				kn.c.NodeKubeconfig(), kn.c.NodeName(), o.config)
		}})
		kn.tb = kn.n.tb
		sctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		defer cancel()
		if err := kn.c.StartKubelet(sctx); err != nil {
			t.Fatal(err)
		}
		if err := kn.c.WaitNodeReady(sctx); err != nil {
			t.Fatal(err)
		}
	}
	kn.api = kn.c.Client()
	return kn
}

// kubectl runs kubectl with the admin kubeconfig and fails the test on
// error.
func (kn *kubeNode) kubectl(args ...string) string {
	kn.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	out, err := kn.c.Kubectl(ctx, args...)
	if err != nil {
		kn.t.Fatalf("kubectl %s: %v\n%s%s", strings.Join(args, " "), err, out, kn.diagnose())
	}
	return out
}

// diagnose is what a failure shows besides its own message: the pods,
// recent events, the gate and the tail of each log.
func (kn *kubeNode) diagnose() string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var b strings.Builder
	if out, err := kn.c.Kubectl(ctx, "get", "pods", "-A", "-o", "wide"); err == nil {
		b.WriteString("\n--- pods ---\n" + out)
	}
	if out, err := kn.c.Kubectl(ctx, "get", "events", "-A", "--sort-by=.lastTimestamp"); err == nil {
		if len(out) > 6000 {
			out = out[len(out)-6000:]
		}
		b.WriteString("\n--- events ---\n" + out)
	}
	for _, comp := range []string{cluster.Kubelet} {
		if raw, err := os.ReadFile(kn.c.LogPath(comp)); err == nil {
			if len(raw) > 6000 {
				raw = raw[len(raw)-6000:]
			}
			b.WriteString("\n--- " + comp + " log tail ---\n" + string(raw))
		}
	}
	if kn.n != nil {
		b.WriteString("\n--- startgated log tail ---\n" + kn.n.logTail())
	}
	return b.String()
}

// eventually polls cond until it holds or d passes.
func (kn *kubeNode) eventually(d time.Duration, what string, cond func() (bool, string)) {
	kn.t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, got := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			kn.t.Fatalf("%s: not true after %v; last seen: %s%s", what, d, got, kn.diagnose())
		}
		time.Sleep(200 * time.Millisecond) // polling the API, not timing
	}
}

// appPort is where an app pod serves once its init is done: its
// readiness probe is an HTTP GET there, which kubelet makes itself (an exec
// probe would need runc's exec, which lands outside the container when
// containerd itself runs chrooted, as in the new-machine CI root).
const appPort = 8080

// initCommand is a container's command: a CPU-bound init of loops
// iterations, then it serves on appPort (which the readiness probe asks),
// idle like a service.
func initCommand(loops int) []string {
	return []string{"sh", "-c", fmt.Sprintf("i=0; while [ $i -lt %d ]; do i=$((i+1)); done; "+
		"mkdir -p /tmp/www && echo ready > /tmp/www/index.html && echo ready && exec httpd -f -p %d -h /tmp/www", loops, appPort)}
}

// podSpec is a pod on the cluster's pod network running image with a
// readiness probe on the init's end; pulls are Always, as in a rollout
// where kubelet re-resolves the tag for every pod.
func podSpec(image string, loops int) corev1.PodSpec {
	grace := int64(1)
	return corev1.PodSpec{
		DNSPolicy:                     corev1.DNSDefault,
		TerminationGracePeriodSeconds: &grace,
		Containers: []corev1.Container{{
			Name:            "app",
			Image:           image,
			ImagePullPolicy: corev1.PullAlways,
			Command:         initCommand(loops),
			ReadinessProbe: &corev1.Probe{
				ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/index.html", Port: intstr.FromInt32(appPort)}},
				PeriodSeconds: 1,
			},
		}},
	}
}

func deployment(name, image string, replicas int32, loops int) *appsv1.Deployment {
	sel := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: sel},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: sel},
				Spec:       podSpec(image, loops),
			},
		},
	}
}

func (kn *kubeNode) createDeployment(d *appsv1.Deployment) {
	kn.t.Helper()
	if _, err := kn.api.AppsV1().Deployments(d.Namespace).Create(context.Background(), d, metav1.CreateOptions{}); err != nil {
		kn.t.Fatalf("create deployment %s: %v", d.Name, err)
	}
}

// pods lists the pods of an app label.
func (kn *kubeNode) pods(ns, app string) []corev1.Pod {
	kn.t.Helper()
	l, err := kn.api.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{
		LabelSelector: labels.SelectorFromSet(labels.Set{"app": app}).String()})
	if err != nil {
		kn.t.Fatalf("list pods: %v", err)
	}
	return l.Items
}

func podIsReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitAvailable waits until the deployment has want pods, all Ready, none
// terminating, and returns them.
func (kn *kubeNode) waitAvailable(name string, want int, d time.Duration) []corev1.Pod {
	kn.t.Helper()
	var out []corev1.Pod
	kn.eventually(d, fmt.Sprintf("deployment %s to have %d ready pods", name, want), func() (bool, string) {
		ps := kn.pods("default", name)
		ready := 0
		for i := range ps {
			if ps[i].DeletionTimestamp == nil && podIsReady(&ps[i]) {
				ready++
			}
		}
		out = ps
		return ready == want && len(ps) == want, fmt.Sprintf("%d pods, %d ready", len(ps), ready)
	})
	return out
}

// sandboxes lists the node's pod sandboxes straight from containerd.
func (kn *kubeNode) sandboxes() []*runtimeapi.PodSandbox {
	kn.t.Helper()
	ctx := context.Background()
	rs, err := remote.NewRemoteRuntimeServiceBuilder().WithEndpoint("unix://" + kn.tb.Endpoint()).
		WithConnectionTimeout(time.Minute).Build(ctx)
	if err != nil {
		kn.t.Fatal(err)
	}
	defer rs.Close(ctx)
	sbs, err := rs.ListPodSandbox(ctx, nil)
	if err != nil {
		kn.t.Fatalf("ListPodSandbox: %v", err)
	}
	return sbs
}

// checkOneSandboxEach fails when a pod has more than one ready sandbox in
// containerd: a start run twice.
func (kn *kubeNode) checkOneSandboxEach(ps []corev1.Pod) {
	kn.t.Helper()
	ready := map[string]int{}
	for _, sb := range kn.sandboxes() {
		if sb.State == runtimeapi.PodSandboxState_SANDBOX_READY {
			ready[sb.GetMetadata().GetUid()]++
		}
	}
	for _, p := range ps {
		if n := ready[string(p.UID)]; n != 1 {
			kn.t.Errorf("pod %s has %d ready sandboxes in containerd, want 1", p.Name, n)
		}
	}
}

// writeStaticPod writes a static pod manifest the way kubelet wants it:
// whole, through a rename.
func (kn *kubeNode) writeStaticPod(name, yaml string) {
	kn.t.Helper()
	dir := kn.c.StaticPodDir()
	tmp := filepath.Join(dir, "."+name+".yaml")
	if err := os.WriteFile(tmp, []byte(yaml), 0o644); err != nil {
		kn.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name+".yaml")); err != nil {
		kn.t.Fatal(err)
	}
}

// freeLoopbackPort is a TCP port free on 127.0.0.1 just now.
func freeLoopbackPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// syncBuffer is a bytes.Buffer a process writes while a test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
