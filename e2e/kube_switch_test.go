package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// startgatectl node enable and disable on a real node: kubelet on
// containerd, startgated beside it. enable points kubelet's config file
// at startgated (the running kubelet says which file); after a kubelet
// restart the running pods go on (same pods, no container restarted) and
// new ones start through the gate. disable puts the file back as it was;
// after another restart new pods start on containerd straight, the gate
// sees none of them, and nothing was lost either way.
func TestKubeNodeEnableDisable(t *testing.T) {
	kn := startKubeNode(t, kubeOptions{onContainerd: true})
	cfg := kn.c.KubeletConfigPath()
	state := t.TempDir()
	ctl := func(args ...string) string {
		t.Helper()
		full := append([]string{"node"}, args...)
		// startgated's API socket: enable asks it where it forwards,
		// and checks that is the containerd kubelet uses now.
		full = append(full, "--state-dir", state, "--socket", kn.n.api)
		out, err := exec.Command(bins.ctl, full...).CombinedOutput()
		if err != nil {
			t.Fatalf("startgatectl %s: %v\n%s", strings.Join(full, " "), err, out)
		}
		return string(out)
	}
	before := readFile(t, cfg)
	restart := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if err := kn.c.StopKubelet(ctx); err != nil {
			t.Fatal(err)
		}
		if err := kn.c.StartKubelet(ctx); err != nil {
			t.Fatal(err)
		}
		if err := kn.c.WaitNodeReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	admitted := func() uint64 { return kn.n.status().Counters.Admitted }

	kn.createDeployment(deployment("web", kn.app, 2, 1000))
	first := kn.waitAvailable("web", 2, 3*time.Minute)
	if got := admitted(); got != 0 {
		t.Fatalf("the gate admitted %d starts while kubelet ran on containerd", got)
	}
	st := ctl("status")
	if !strings.Contains(st, "not enabled") || !strings.Contains(st, filepath.Base(cfg)) {
		t.Fatalf("node status before enable:\n%s", st)
	}

	out := ctl("enable", "--endpoint", "unix://"+kn.n.cri)
	if !strings.Contains(out, cfg) {
		t.Fatalf("node enable did not change the running kubelet's config file %s:\n%s", cfg, out)
	}
	restart()
	if st := ctl("status"); !strings.Contains(st, "startgate:        enabled") {
		t.Fatalf("node status after enable:\n%s", st)
	}
	kn.scale("web", 4)
	kn.waitAvailable("web", 4, 3*time.Minute)
	through := admitted()
	if through == 0 {
		t.Fatalf("no start went through the gate after enable%s", kn.diagnose())
	}
	kn.checkUnchanged(first)

	ctl("disable")
	if got := readFile(t, cfg); got != before {
		t.Fatalf("kubelet's config after disable:\n%s\nwant as before:\n%s", got, before)
	}
	restart()
	kn.scale("web", 6)
	ps := kn.waitAvailable("web", 6, 3*time.Minute)
	if got := admitted(); got != through {
		t.Errorf("the gate admitted %d more starts after disable, want none", got-through)
	}
	kn.checkUnchanged(first)
	kn.checkOneSandboxEach(ps)
	t.Logf("enable: %d starts through the gate; disable: none", through)
}

func (kn *kubeNode) scale(name string, n int32) {
	kn.t.Helper()
	ctx := context.Background()
	s, err := kn.api.AppsV1().Deployments("default").GetScale(ctx, name, metav1.GetOptions{})
	if err != nil {
		kn.t.Fatal(err)
	}
	s.Spec.Replicas = n
	if _, err := kn.api.AppsV1().Deployments("default").UpdateScale(ctx, name, s, metav1.UpdateOptions{}); err != nil {
		kn.t.Fatal(err)
	}
}

// checkUnchanged fails unless every pod of before still runs, Ready, with
// no container restarted: a kubelet switch must not touch running pods.
func (kn *kubeNode) checkUnchanged(before []corev1.Pod) {
	kn.t.Helper()
	for _, p := range before {
		now, err := kn.api.CoreV1().Pods(p.Namespace).Get(context.Background(), p.Name, metav1.GetOptions{})
		if err != nil {
			kn.t.Errorf("pod %s: %v", p.Name, err)
			continue
		}
		restarts := int32(0)
		for _, c := range now.Status.ContainerStatuses {
			restarts += c.RestartCount
		}
		if now.UID != p.UID || !podIsReady(now) || restarts != 0 {
			kn.t.Errorf("pod %s after a kubelet switch: uid %s (was %s), ready %v, %d restarts; want the same pod, ready, none%s",
				p.Name, now.UID, p.UID, podIsReady(now), restarts, kn.diagnose())
		}
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
