package kubebench

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/startgate/startgate/harness/bench"
	"github.com/startgate/startgate/harness/testbed"
	"github.com/startgate/startgate/harness/testbed/cluster"
)

type logWriter struct{ t *testing.T }

func (w logWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// startgate-bench kube --kubeconfig --node on an existing cluster (the
// testbed's, as a platform team's): the app pushed to the given
// registry, both default modes' rollouts measured on that node, the
// namespace gone afterwards; and a node running another workload is
// refused before anything is created.
func TestOnAnExistingCluster(t *testing.T) {
	ctx := context.Background()
	tb := testbed.StartT(t, testbed.Options{})
	if tb.PodSubnet() == "" {
		t.Fatal("the testbed has no pod network (apt-get install containernetworking-plugins)")
	}
	reg := testbed.StartRegistryT(t, testbed.RegistryOptions{})
	c := cluster.StartT(t, cluster.Options{RuntimeEndpoint: tb.Endpoint(), CNIConfDir: tb.CNIConfDir()})
	opts := Options{
		Kubeconfig: c.Kubeconfig(), Node: c.NodeName(), Registry: reg.Host() + "/team",
		Scenarios: []string{Recreate}, Pods: 3, Rounds: 1, PatchSize: 64 << 10,
		InitCPU: 50 * time.Millisecond, Deadline: 3 * time.Minute, Progress: logWriter{t},
		// A test's node is shared with the other tests: wait for quiet
		// briefly, then go on (a warning, not a failure).
		Quiet: bench.Quiet{CPU: 0.1, Interval: 500 * time.Millisecond, Samples: 2, Max: 10 * time.Second},
	}
	res, err := Run(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(res.Modes, ","); got != remoteModes {
		t.Errorf("modes %s, want %s", got, remoteModes)
	}
	if res.Env.Kubelet == "" || res.Cores < 1 {
		t.Errorf("env %+v, %d cores: want the node's kubelet and its capacity", res.Env, res.Cores)
	}
	recreates := 0
	for _, r := range res.Runs {
		if r.Scenario != Recreate {
			continue
		}
		recreates++
		if r.Failed != 0 || len(r.Pods) != 3 || !r.Complete || r.Patch == "" {
			t.Errorf("%s recreate: %d failed of %d pods, complete %v, patch %q: want 3 Ready on a patch", r.Mode, r.Failed, len(r.Pods), r.Complete, r.Patch)
		}
		// The ideal bound's parts: every pod's CPU from the kubelet's
		// stats (at least its 50 ms of init), the patch's pull.
		if r.Ideal.Pods != 3 || r.Ideal.CPU < 3*opts.InitCPU || r.Ideal.PatchPull <= 0 {
			t.Errorf("%s recreate: ideal's parts %+v: want 3 pods' CPU, at least %v, and a pull", r.Mode, r.Ideal, 3*opts.InitCPU)
		}
	}
	if recreates != 2 {
		t.Errorf("%d recreate runs, want one per mode", recreates)
	}
	nss, err := c.Client().CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=startgate-bench"})
	if err != nil || len(nss.Items) != 0 {
		t.Errorf("namespaces left: %v, %v", nss, err)
	}

	// Another workload on the node: refused, and nothing created.
	other := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "someone-else", Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: c.NodeName(), Containers: []corev1.Container{{Name: "c", Image: "example.invalid/app:1"}}}}
	if _, err := c.Client().CoreV1().Pods("default").Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.Client().CoreV1().Pods("default").Delete(ctx, other.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Error(err)
		}
	}()
	_, err = Run(ctx, opts)
	if err == nil || !strings.Contains(err.Error(), "default/someone-else") || !strings.Contains(err.Error(), "--allow-busy-node") {
		t.Errorf("Run on a busy node: %v, want a refusal naming default/someone-else and --allow-busy-node", err)
	}
	if nss, err := c.Client().CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=startgate-bench"}); err != nil || len(nss.Items) != 0 {
		t.Errorf("a refused run left namespaces: %v, %v", nss, err)
	}
}
