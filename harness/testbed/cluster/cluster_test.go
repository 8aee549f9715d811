package cluster_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remote "k8s.io/cri-client/pkg"
	"k8s.io/utils/ptr"

	"github.com/startgate/startgate/harness/testbed"
	"github.com/startgate/startgate/harness/testbed/cluster"
)

// Generous: a 2-core machine running the suite's other packages too
// starts three pods in seconds when idle and in minutes when not.
const (
	availableTimeout = 4 * time.Minute
	callTimeout      = time.Minute
)

// webDeployment is 3 busybox replicas on the pod network that become ready
// a few seconds after they start: the readiness probe fetches a file the
// command serves after a short loop.
func webDeployment(image string) *appsv1.Deployment {
	labels := map[string]string{"app": "web"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: metav1.NamespaceDefault},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](3),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					DNSPolicy:                     corev1.DNSDefault,
					TerminationGracePeriodSeconds: ptr.To[int64](1),
					Containers: []corev1.Container{{
						Name:            "web",
						Image:           image,
						ImagePullPolicy: corev1.PullIfNotPresent,
						Command: []string{"sh", "-c",
							`i=0; while [ $i -lt 3 ]; do sleep 1; i=$((i+1)); done; mkdir -p /tmp/www; echo ok > /tmp/www/ready; echo started $HOSTNAME; exec httpd -f -p 8080 -h /tmp/www`},
						// An HTTP probe, which kubelet makes itself over the pod
						// network: an exec probe would need runc's exec, which
						// lands outside the container when containerd runs
						// chrooted (the new-machine CI root; docs/testbed.md).
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(8080)}},
							PeriodSeconds: 1,
						},
					}},
				},
			},
		},
	}
}

// TestCluster: a real control plane and kubelet on the testbed's
// containerd run a Deployment to 3/3 available, serve kubectl logs and
// exec, survive a kubelet restart with the same containers, and Stop
// leaves nothing behind.
func TestCluster(t *testing.T) {
	ctx := context.Background()
	tb := testbed.StartT(t, testbed.Options{})
	reg := testbed.StartRegistryT(t, testbed.RegistryOptions{})
	img, err := testbed.BusyboxImage()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Push(ctx, "startgate/busybox:1", img); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	c := cluster.StartT(t, cluster.Options{RuntimeEndpoint: tb.Endpoint(), CNIConfDir: tb.CNIConfDir()})
	dir := c.Dir()
	t.Logf("cluster up (node Ready, untainted) in %v", time.Since(t0).Round(100*time.Millisecond))

	// Start returned: the node is Ready and untainted.
	node, err := c.Client().CoreV1().Nodes().Get(ctx, c.NodeName(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(node.Spec.Taints) != 0 {
		t.Errorf("node %s: got taints %v, want none", c.NodeName(), node.Spec.Taints)
	}
	if out, err := c.Kubectl(ctx, "get", "nodes", "-o", "name"); err != nil || strings.TrimSpace(out) != "node/"+c.NodeName() {
		t.Errorf("kubectl get nodes: got %q, %v, want node/%s", out, err, c.NodeName())
	}

	cs := c.Client()
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, webDeployment(reg.Ref("startgate/busybox:1")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	waitAvailable(ctx, t, cs, 3)
	t.Logf("deployment 3/3 available in %v", time.Since(t0).Round(100*time.Millisecond))
	pods := webPods(ctx, t, cs)
	if len(pods) != 3 {
		t.Fatalf("got %d web pods, want 3", len(pods))
	}

	// The node's own identity, as a node agent would use it: the Node
	// authorizer lets it list this node's pods, and only with the field
	// selector.
	cfg, err := clientcmd.BuildConfigFromFlags("", c.NodeKubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.CloseIdleConnections()
	nodeCS, err := kubernetes.NewForConfigAndClient(cfg, hc)
	if err != nil {
		t.Fatal(err)
	}
	mine, err := nodeCS.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + c.NodeName()})
	if err != nil || len(mine.Items) != 3 {
		t.Errorf("node identity, pods on spec.nodeName=%s: got %v, %v, want the 3 web pods", c.NodeName(), mine, err)
	}
	if _, err := nodeCS.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("node identity, all pods: got %v, want Forbidden", err)
	}

	pod := pods[0].Name
	kctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if out, err := c.Kubectl(kctx, "logs", pod); err != nil || !strings.Contains(out, "started") {
		t.Errorf("kubectl logs %s: got %q, %v, want a line with 'started'", pod, out, err)
	}
	// What the exec'd command reads must not depend on the container's
	// files: with containerd chrooted (the new-machine CI root), runc's
	// exec lands at the mount namespace's root (docs/testbed.md).
	if out, err := c.Kubectl(kctx, "exec", pod, "--", "echo", "exec-ok"); err != nil || strings.TrimSpace(out) != "exec-ok" {
		t.Errorf("kubectl exec %s -- echo exec-ok: got %q, %v, want exec-ok", pod, out, err)
	}

	// A kubelet restart: the containers run on under containerd, and the
	// new kubelet adopts them instead of starting new ones.
	before := runningContainers(ctx, t, tb)
	if len(before) != 3 {
		t.Fatalf("before the restart: got running web containers %v, want 3", before)
	}
	if err := c.StopKubelet(ctx); err != nil {
		t.Fatalf("StopKubelet: %v", err)
	}
	if got := runningContainers(ctx, t, tb); !slices.Equal(got, before) {
		t.Errorf("kubelet stopped: got running web containers %v, want %v", got, before)
	}
	if err := c.StartKubelet(ctx); err != nil {
		t.Fatalf("StartKubelet: %v", err)
	}
	rctx, cancel := context.WithTimeout(ctx, availableTimeout)
	defer cancel()
	if err := c.WaitNodeReady(rctx); err != nil {
		t.Fatalf("WaitNodeReady after the restart: %v", err)
	}
	waitAvailable(ctx, t, cs, 3)
	if got := runningContainers(ctx, t, tb); !slices.Equal(got, before) {
		t.Errorf("kubelet restarted: got running web containers %v, want the same %v", got, before)
	}
	for _, p := range webPods(ctx, t, cs) {
		for _, st := range p.Status.ContainerStatuses {
			if st.RestartCount != 0 {
				t.Errorf("pod %s container %s: got restart count %d, want 0", p.Name, st.Name, st.RestartCount)
			}
		}
	}

	mounts, err := testbed.MountsUnder(dir)
	if err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	if err := c.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("Stop with %d mounts under %s: %v", len(mounts), dir, time.Since(t0).Round(100*time.Millisecond))
	assertNothingLeft(t, dir)
}

func waitAvailable(ctx context.Context, t *testing.T, cs kubernetes.Interface, want int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, availableTimeout)
	defer cancel()
	var last string
	for {
		d, err := cs.AppsV1().Deployments("default").Get(ctx, "web", metav1.GetOptions{})
		if err == nil && d.Status.AvailableReplicas == want && d.Status.UpdatedReplicas == want {
			return
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("available %d, updated %d, conditions %v", d.Status.AvailableReplicas, d.Status.UpdatedReplicas, d.Status.Conditions)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("deployment web: got %s, want %d available", last, want)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func webPods(ctx context.Context, t *testing.T, cs kubernetes.Interface) []corev1.Pod {
	t.Helper()
	pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	return pods.Items
}

// runningContainers lists the running "web" containers straight from
// containerd's CRI, sorted by id.
func runningContainers(ctx context.Context, t *testing.T, tb *testbed.Testbed) []string {
	t.Helper()
	rs, err := remote.NewRemoteRuntimeServiceBuilder().
		WithEndpoint("unix://" + tb.Endpoint()).
		WithConnectionTimeout(callTimeout).
		WithTracerProvider(nil).
		Build(ctx)
	if err != nil {
		t.Fatalf("cri client: %v", err)
	}
	defer rs.Close(ctx)
	cs, err := rs.ListContainers(ctx, &runtimeapi.ContainerFilter{
		State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING},
	})
	if err != nil {
		t.Fatalf("ListContainers: %v", err)
	}
	var ids []string
	for _, ctr := range cs {
		if ctr.GetMetadata().GetName() == "web" {
			ids = append(ids, ctr.Id)
		}
	}
	slices.Sort(ids)
	return ids
}

// assertNothingLeft: no process names dir, nothing is mounted under it, it
// is gone, and no container log link points into it.
func assertNothingLeft(t *testing.T, dir string) {
	t.Helper()
	pids, err := testbed.ProcessesUsing(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		t.Errorf("after Stop: process %d still refers to %s: %s", pid, dir, strings.ReplaceAll(string(cmd), "\x00", " "))
	}
	mounts, err := testbed.MountsUnder(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) != 0 {
		t.Errorf("after Stop: got mounts %v under %s, want none", mounts, dir)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("after Stop: stat %s: got %v, want not exist", dir, err)
	}
	links, _ := filepath.Glob("/var/log/containers/*")
	for _, l := range links {
		if target, err := os.Readlink(l); err == nil && strings.HasPrefix(target, dir+"/") {
			t.Errorf("after Stop: log link %s -> %s left", l, target)
		}
	}
}

// TestStartFailure: a kubelet that cannot reach its runtime makes Start
// fail with the tail of the kubelet's log, and leaves nothing under
// Options.Parent, and no process naming it.
func TestStartFailure(t *testing.T) {
	parent, err := os.MkdirTemp("/tmp", "sgkf-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(parent)
	bin, err := cluster.CachedBinaries()
	if err == nil && os.Geteuid() != 0 {
		err = fmt.Errorf("not root")
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true: %v", err)
		}
		t.Skipf("cannot run a cluster here: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := cluster.Start(ctx, cluster.Options{
		Parent:                parent,
		RuntimeEndpoint:       filepath.Join(parent, "no-runtime.sock"),
		KubeBin:               bin,
		RuntimeRequestTimeout: 5 * time.Second,
		StartTimeout:          2 * time.Minute,
	})
	if err == nil {
		c.Stop(ctx)
		t.Fatal("Start with no runtime: got no error")
	}
	msg := err.Error()
	t.Logf("Start with no runtime: ...%s", msg[max(0, len(msg)-600):])
	if !strings.Contains(err.Error(), "tail of "+parent) || !strings.Contains(err.Error(), "kubelet") {
		t.Errorf("Start with no runtime: got %v, want the kubelet's log tail", err)
	}
	ents, _ := os.ReadDir(parent)
	if len(ents) != 0 {
		t.Errorf("after a failed Start: got %v in %s, want nothing", ents, parent)
	}
	if pids, _ := testbed.ProcessesUsing(parent); len(pids) != 0 {
		t.Errorf("after a failed Start: got processes %v naming %s, want none", pids, parent)
	}
}
