package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
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
	grants := grantsWithinLimit(t, stopWatch())
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
	deleted := time.Now()
	if err := kn.api.AppsV1().Deployments("default").Delete(context.Background(), "doomed", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	kn.n.eventually(30*time.Second, "the deleted pods' starts to leave the queue", func() (bool, string) {
		q := kn.n.queue()
		return len(q) == 0, fmt.Sprintf("%d queued: %v", len(q), q)
	})
	// A figure for docs/benchmarks.md, not an assertion: the bound above
	// is what the test holds to.
	t.Logf("queue empty %.2f s after the Deployment was deleted (garbage collector, API watch, cancel)", time.Since(deleted).Seconds())
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

// Classes come from real pod metadata: static pods, kube-system and the
// critical annotation pass a paused gate; a DaemonSet's pod queues as
// high, an annotated one as its annotation says, the rest as normal.
//
// A start held in the gate longer than kubernetes.event_after gets an
// Event on its pod saying why, which kubectl describe pod shows.
func TestKubeClassesFromPodMetadata(t *testing.T) {
	kn := startKubeNode(t, kubeOptions{config: "event_after = \"2s\"\n"})
	ctx := context.Background()
	kn.n.ctl("pause")

	kn.writeStaticPod("static-web", fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: static-web
  namespace: default
spec:
  hostNetwork: true
  dnsPolicy: Default
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: %s
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
`, kn.app))
	sys := podNamed("kube-system", "sys", kn.app, nil)
	vip := podNamed("default", "vip", kn.app, map[string]string{"startgate.io/class": "critical"})
	low := podNamed("default", "batch", kn.app, map[string]string{"startgate.io/class": "low"})
	plain := podNamed("default", "plain", kn.app, nil)
	for _, p := range []*corev1.Pod{sys, vip, low, plain} {
		if _, err := kn.api.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "agent", Namespace: "default"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "agent"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "agent"}},
				Spec: podSpec(kn.app, 1000)},
		},
	}
	if _, err := kn.api.AppsV1().DaemonSets("default").Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Through the paused gate: the critical ones run.
	kn.waitRunning("default", "static-web-"+kn.c.NodeName())
	kn.waitRunning("kube-system", "sys")
	// The others queue, each in its class; critical by annotation is
	// honoured in kube-system only (cri.critical_annotation_namespaces),
	// so default/vip queues as the rules say.
	want := map[string]string{"agent-": "high", "default/batch": "low", "default/plain": "normal", "default/vip": "normal"}
	kn.n.eventually(2*time.Minute, "the DaemonSet's, the low and the plain pod to queue", func() (bool, string) {
		q := kn.n.queue()
		found := 0
		for _, w := range q {
			for sub, cls := range want {
				if strings.Contains(w.Description, sub) {
					if w.Class != cls {
						t.Fatalf("%s queued as %s, want %s", w.Description, w.Class, cls)
					}
					found++
				}
			}
		}
		return found == len(want) && len(q) == len(want), fmt.Sprintf("%+v", q)
	})
	// Why plain waits, where its owner looks.
	var why string
	kn.n.eventually(time.Minute, "an Event on default/plain saying why its start waits", func() (bool, string) {
		l, err := kn.api.CoreV1().Events("default").List(ctx, metav1.ListOptions{
			FieldSelector: "involvedObject.name=plain,reason=StartgateWaiting"})
		if err != nil {
			return false, err.Error()
		}
		if len(l.Items) == 0 {
			return false, "no event yet"
		}
		e := l.Items[0]
		why = e.Message
		return strings.Contains(e.Message, "class normal") && strings.Contains(e.Message, "an operator paused the gate") &&
			e.Source.Component == "startgated", e.Message
	})
	t.Logf("kubectl describe pod plain shows: %s", why)
	kn.n.ctl("resume")
	kn.waitRunning("default", "batch")
	kn.waitRunning("default", "plain")
	kn.waitRunning("default", "vip")
}

// exec, attach, logs and port-forward go through the proxy: kubelet's
// streaming calls return containerd's URLs, and kubelet proxies them.
func TestKubeStreamsThroughProxy(t *testing.T) {
	kn := startKubeNode(t, kubeOptions{})
	ctx := context.Background()
	port := appPort
	web := podNamed("default", "web", kn.app, nil)
	web.Spec.Containers[0].Command = []string{"sh", "-c", fmt.Sprintf(
		"mkdir -p /tmp/www && echo served-by-busybox > /tmp/www/index.html && echo web-started && exec httpd -f -p 127.0.0.1:%d -h /tmp/www", port)}
	talk := podNamed("default", "talk", kn.app, nil)
	talk.Spec.RestartPolicy = corev1.RestartPolicyNever
	talk.Spec.Containers[0].Stdin, talk.Spec.Containers[0].StdinOnce = true, true
	talk.Spec.Containers[0].Command = []string{"sh", "-c", "read line; echo got:$line"}
	for _, p := range []*corev1.Pod{web, talk} {
		if _, err := kn.api.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	kn.waitRunning("default", "web")
	kn.waitRunning("default", "talk")

	if out := kn.kubectl("exec", "web", "--", "echo", "exec-through-proxy"); !strings.Contains(out, "exec-through-proxy") {
		t.Errorf("kubectl exec printed %q, want exec-through-proxy", out)
	}
	kn.eventually(time.Minute, "kubectl logs to show the container's output", func() (bool, string) {
		out, err := kn.c.Kubectl(ctx, "logs", "web")
		return err == nil && strings.Contains(out, "web-started"), out
	})

	actx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	attach := exec.CommandContext(actx, filepath.Join(kn.c.KubeBin(), "kubectl"), "--kubeconfig", kn.c.Kubeconfig(),
		"attach", "-i", "talk", "-c", "app")
	attach.Stdin = strings.NewReader("hello-attach\n")
	out, err := attach.CombinedOutput()
	if !strings.Contains(string(out), "got:hello-attach") {
		t.Errorf("kubectl attach: %v, printed %q, want got:hello-attach", err, out)
	}

	local := freeLoopbackPort(t)
	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	pf := exec.CommandContext(pctx, filepath.Join(kn.c.KubeBin(), "kubectl"), "--kubeconfig", kn.c.Kubeconfig(),
		"port-forward", "pod/web", fmt.Sprintf("%d:%d", local, port))
	var pfOut syncBuffer
	pf.Stdout, pf.Stderr = &pfOut, &pfOut
	if err := pf.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { pcancel(); _ = pf.Wait() }()
	kn.eventually(time.Minute, "a page through kubectl port-forward", func() (bool, string) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/index.html", local))
		if err != nil {
			return false, err.Error() + "; port-forward: " + pfOut.String()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), "served-by-busybox"), string(b)
	})
}

// kubelet restarted while pods start, and startgated killed and
// restarted while pods start: every pod ends Ready, each with one
// sandbox (no start run twice, none lost).
func TestKubeRestartsWhileStarting(t *testing.T) {
	for _, what := range []string{"kubelet", "startgated"} {
		t.Run(what, func(t *testing.T) {
			kn := startKubeNode(t, kubeOptions{})
			kn.n.ctl("set", "--inflight", "1")
			kn.createDeployment(deployment("busy", kn.app, 6, 200000))
			kn.n.eventually(2*time.Minute, "starts to queue behind the one in flight", func() (bool, string) {
				s := kn.n.status()
				return s.InFlight >= 1 && s.QueueLength >= 1, fmt.Sprintf("in flight %d, queued %d", s.InFlight, s.QueueLength)
			})
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			switch what {
			case "kubelet":
				if err := kn.c.StopKubelet(ctx); err != nil {
					t.Fatal(err)
				}
				if err := kn.c.StartKubelet(ctx); err != nil {
					t.Fatal(err)
				}
			case "startgated":
				kn.n.killDaemon()
				kn.n.ctl("set", "--inflight", "1")
			}
			ps := kn.waitAvailable("busy", 6, 5*time.Minute)
			kn.checkOneSandboxEach(ps)
		})
	}
}

// startgated killed (-9) while two pods warm up at an in-flight limit of
// 2 and others queue, then started again: it takes the warming pods'
// slots back from containerd before serving kubelet's retries, so never
// more than 2 pods are past their start and not yet Ready at once, and
// every pod ends Ready with one sandbox. Without the restore the
// restarted gate admitted the retries on top of the two still warming.
func TestKubeRestartKeepsWarmingSlots(t *testing.T) {
	const limit = 2
	kn := startKubeNode(t, kubeOptions{config: fmt.Sprintf("[admission.limits]\ninflight = %d\n", limit)})
	// About 5 to 15 s of CPU each: long enough that the restart lands
	// while the admitted ones still warm up.
	kn.createDeployment(deployment("busy", kn.app, 6, 5_000_000))
	// Killed once two pods' containers run (their inits under way) and
	// more starts queue: a kill during RunPodSandbox would leave nothing
	// to restore (containerd drops a sandbox whose call was cut).
	warmingNow := func() []string {
		l, err := kn.api.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{LabelSelector: "app=busy"})
		if err != nil {
			return nil
		}
		var names []string
		for i := range l.Items {
			p := &l.Items[i]
			if len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].State.Running != nil && !podIsReady(p) {
				names = append(names, p.Name)
			}
		}
		return names
	}
	kn.n.eventually(3*time.Minute, "two pods warming and starts queued behind them", func() (bool, string) {
		s := kn.n.status()
		w := warmingNow()
		return len(w) == limit && s.InFlight == limit && s.QueueLength >= 1, fmt.Sprintf("warming %v, in flight %d, queued %d", w, s.InFlight, s.QueueLength)
	})

	// Watch, from the API, how many pods are started (a container
	// running) and not yet Ready, until every one is Ready.
	var (
		mu      sync.Mutex
		peak    int
		peakAt  string
		stopped = make(chan struct{})
		done    = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			select {
			case <-stopped:
				return
			case <-time.After(100 * time.Millisecond):
			}
			warming := warmingNow()
			mu.Lock()
			if len(warming) > peak {
				peak, peakAt = len(warming), strings.Join(warming, ", ")
			}
			mu.Unlock()
		}
	}()

	killed := time.Now()
	kn.n.killDaemon()
	// The API answers before the CRI socket is served, and the slots are
	// restored in between.
	var restored string
	kn.n.eventually(20*time.Second, fmt.Sprintf("startgated to restore %d slots", limit), func() (bool, string) {
		restored = kn.n.logLines("restored the slots", 1)
		return strings.Contains(restored, fmt.Sprintf(`"pods":%d`, limit)), restored
	})
	t.Logf("kill -9, restart and restore seen within %v: %s", time.Since(killed).Round(10*time.Millisecond), restored)
	ps := kn.waitAvailable("busy", 6, 5*time.Minute)
	close(stopped)
	<-done
	kn.checkOneSandboxEach(ps)
	mu.Lock()
	defer mu.Unlock()
	if peak > limit {
		t.Errorf("%d pods started and not Ready at once (%s), want at most the limit %d%s", peak, peakAt, limit, kn.diagnose())
	}
}

func podNamed(ns, name, image string, ann map[string]string) *corev1.Pod {
	spec := podSpec(image, 1000)
	spec.Containers[0].ReadinessProbe = nil
	spec.Containers[0].ImagePullPolicy = corev1.PullIfNotPresent
	spec.Containers[0].Command = []string{"sleep", "3600"}
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: ann}, Spec: spec}
}

func (kn *kubeNode) waitRunning(ns, name string) {
	kn.t.Helper()
	kn.eventually(3*time.Minute, fmt.Sprintf("pod %s/%s to run", ns, name), func() (bool, string) {
		p, err := kn.api.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return p.Status.Phase == corev1.PodRunning || p.Status.Phase == corev1.PodSucceeded, string(p.Status.Phase)
	})
}

// With [kubernetes] on and no API to reach (a kubeconfig not written
// yet), startgated starts and gates as it does without it: the watch is
// an addition, never a new way to fail.
func TestKubeWatchWithoutAPIStillGates(t *testing.T) {
	n := startNode(t, nodeOptions{config: "[kubernetes]\nenabled = true\nkubeconfig = \"/nonexistent/kubelet.conf\"\nnode_name = \"nowhere\"\n"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, _, err := n.runPod(ctx, "default", "lonely", nil, "sh", "-c", "echo up; sleep 300"); err != nil {
		t.Fatalf("a pod through a gate without API access: %v", err)
	}
	n.eventually(time.Minute, "the pod's slot to end on CPU settling", func() (bool, string) {
		s := n.status()
		return s.InFlight == 0, fmt.Sprintf("in flight %d", s.InFlight)
	})
	if !strings.Contains(n.logLines("no API access yet", 1), "/nonexistent/kubelet.conf") {
		t.Errorf("startgated did not say why it has no API access")
	}
}

// A real kubelet pulls for every pod of an imagePullPolicy Always
// Deployment, each pull with the pod's own annotations in its ImageSpec
// (kubelet copies them, its per-pod kubernetes.io/config.seen among
// them): the pulls after the first still share its resolution, and every
// pod runs the one image.
func TestKubePullsShareAResolution(t *testing.T) {
	kn := startKubeNode(t, kubeOptions{config: "[cri.pulls]\nshare_window = \"1m\"\n"})
	const replicas = 4
	kn.createDeployment(deployment("shared", kn.app, replicas, 1000))
	ps := kn.waitAvailable("shared", replicas, 4*time.Minute)
	shared := kn.n.logLines("pull answered from a recent resolution", 20)
	n := 0
	if shared != "" {
		n = strings.Count(shared, "\n") + 1
	}
	if n < replicas-1 {
		t.Errorf("%d of %d pods' pulls shared a resolution, want at least %d; startgated's pull log:\n%s",
			n, replicas, replicas-1, kn.n.logLines("pull", 40))
	}
	image := ""
	for _, p := range ps {
		if len(p.Status.ContainerStatuses) != 1 {
			t.Fatalf("pod %s: container statuses %v", p.Name, p.Status.ContainerStatuses)
		}
		id := p.Status.ContainerStatuses[0].ImageID
		if image == "" {
			image = id
		}
		if id != image {
			t.Errorf("pod %s runs %s, another %s", p.Name, id, image)
		}
	}
}
