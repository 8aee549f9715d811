package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A patch rolled out the way an operator does it: the tag pushed again
// with a changed layer, then kubectl rollout restart. Through startgated
// every pod ends Ready on the new digest, no grant ever took the gate over
// its in-flight limit, and probed pods' warm-ups ended at Ready (from the
// API watch).
func TestKubeRolloutThroughGate(t *testing.T) {
	kn := startKubeNode(t, kubeOptions{})
	kn.n.ctl("set", "--inflight", "2")
	stopWatch := kn.n.watch()
	digest := kn.rollout("web", 6)

	kn.n.eventually(2*time.Minute, "every slot to be given back", func() (bool, string) {
		s := kn.n.status()
		return s.InFlight == 0 && s.QueueLength == 0, fmt.Sprintf("in flight %d, queued %d", s.InFlight, s.QueueLength)
	})
	grants := 0
	for _, e := range stopWatch() {
		if e.Type != "granted" {
			continue
		}
		grants++
		if e.Reason == "granted" && e.InFlight > e.InFlightLimit {
			t.Errorf("grant of %q brought in-flight to %d, over the limit %d", e.Description, e.InFlight, e.InFlightLimit)
		}
	}
	// Six pods, then six more on the patch: one slot per pod start.
	if grants < 12 {
		t.Errorf("saw %d grants, want at least 12 (one per pod start)", grants)
	}
	if kn.n.logLines("pod ready: warm-up over", 1) == "" {
		t.Errorf("no warm-up ended at Ready: the API watch did not reach the proxy (digest %s)", digest)
	}
}

// The same rollout with kubelet straight on containerd: the comparison
// the benchmark makes, and proof the scenario itself works without the
// gate.
func TestKubeRolloutDirect(t *testing.T) {
	kn := startKubeNode(t, kubeOptions{direct: true})
	kn.rollout("web", 6)
}

// rollout creates a deployment of replicas pods, waits until all are
// Ready, pushes a patch of its tag, restarts the rollout and waits until
// every pod is Ready on the new digest, which it returns.
func (kn *kubeNode) rollout(name string, replicas int) string {
	kn.t.Helper()
	ctx := context.Background()
	kn.createDeployment(deployment(name, kn.app, int32(replicas), 20000))
	kn.waitAvailable(name, replicas, 4*time.Minute)

	patched, _ := patchOf(kn.t, kn.base, 1<<20, 2)
	digest, err := kn.reg.Push(ctx, appRepoTag, patched)
	if err != nil {
		kn.t.Fatal(err)
	}
	kn.kubectl("rollout", "restart", "deployment/"+name)
	kn.kubectl("rollout", "status", "deployment/"+name, "--timeout=5m")
	ps := kn.waitAvailable(name, replicas, 4*time.Minute)
	for _, p := range ps {
		if len(p.Status.ContainerStatuses) != 1 || !strings.HasSuffix(p.Status.ContainerStatuses[0].ImageID, digest) {
			kn.t.Errorf("pod %s runs %v, want the patched digest %s", p.Name, p.Status.ContainerStatuses, digest)
		}
	}
	kn.checkOneSandboxEach(ps)
	return digest
}

// Deleting a pod while its start waits in the gate takes the start out of
// the queue within seconds, and it never reaches containerd: kubelet
// itself never cancels it (it syncs under context.WithoutCancel).
func TestKubeDeletedPodLeavesTheQueue(t *testing.T) {
	kn := startKubeNode(t, kubeOptions{})
	kn.n.ctl("pause")
	kn.createDeployment(deployment("doomed", kn.app, 4, 1000))
	kn.n.eventually(2*time.Minute, "the pods' starts to queue in the paused gate", func() (bool, string) {
		q := kn.n.queue()
		return len(q) == 4, fmt.Sprintf("%d queued: %v", len(q), q)
	})
	uids := map[string]string{}
	for _, p := range kn.pods("default", "doomed") {
		uids[string(p.UID)] = p.Name
	}
	if err := kn.api.AppsV1().Deployments("default").Delete(context.Background(), "doomed", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	kn.n.eventually(30*time.Second, "the deleted pods' starts to leave the queue", func() (bool, string) {
		q := kn.n.queue()
		return len(q) == 0, fmt.Sprintf("%d queued: %v", len(q), q)
	})
	kn.n.ctl("resume")
	kn.eventually(2*time.Minute, "the deleted pods to be gone from the API", func() (bool, string) {
		ps := kn.pods("default", "doomed")
		return len(ps) == 0, fmt.Sprintf("%d pods left", len(ps))
	})
	for _, sb := range kn.sandboxes() {
		if name, ok := uids[sb.GetMetadata().GetUid()]; ok {
			t.Errorf("deleted pod %s reached containerd (sandbox %s)", name, sb.Id)
		}
	}
	if !strings.Contains(kn.n.logLines("queued start cancelled", 10), "queued start cancelled") {
		t.Errorf("startgated logged no cancelled start")
	}
	// The gate is not clogged by what was deleted: a new deployment runs.
	kn.createDeployment(deployment("after", kn.app, 2, 1000))
	kn.waitAvailable("after", 2, 3*time.Minute)
}
