package kube

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type recSink struct {
	mu    sync.Mutex
	gone  map[string]string
	ready map[string]int
}

func (r *recSink) PodGone(uid, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gone[uid] = reason
}

func (r *recSink) PodReady(uid string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ready[uid]++
}

func (r *recSink) get(uid string) (gone string, ready int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gone[uid], r.ready[uid]
}

func pod(name, uid string, probed bool) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID(uid)},
		Spec:       corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodPending},
	}
	if probed {
		p.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}}
	}
	return p
}

func setReady(p *corev1.Pod) *corev1.Pod {
	p = p.DeepCopy()
	p.Status.Phase = corev1.PodRunning
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	return p
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling the informer, not timing
	}
}

func startPods(t *testing.T, objs ...*corev1.Pod) (*Pods, *fake.Clientset, *recSink) {
	t.Helper()
	client := fake.NewClientset()
	for _, o := range objs {
		if _, err := client.CoreV1().Pods(o.Namespace).Create(context.Background(), o, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	p, err := New(Config{Client: client, NodeName: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	sink := &recSink{gone: map[string]string{}, ready: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, sink) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	eventually(t, "the watch to sync", p.Healthy)
	return p, client, sink
}

func TestPodsReadyAndGone(t *testing.T) {
	probed, plain := pod("web-0", "uid-0", true), pod("job-0", "uid-1", false)
	p, client, sink := startPods(t, probed, plain)
	pods := client.CoreV1().Pods("default")
	ctx := context.Background()

	if !p.WaitsForReady("uid-0") {
		t.Fatal("WaitsForReady(probed, not ready) = false, want true")
	}
	if p.WaitsForReady("uid-1") {
		t.Fatal("WaitsForReady(no probe) = true, want false: its Ready says nothing of warm-up")
	}
	if p.WaitsForReady("uid-unknown") {
		t.Fatal("WaitsForReady(unknown pod) = true, want false")
	}

	// Ready: told for the probed pod only.
	if _, err := pods.UpdateStatus(ctx, setReady(probed), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.UpdateStatus(ctx, setReady(plain), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "PodReady(uid-0)", func() bool { _, n := sink.get("uid-0"); return n > 0 })
	eventually(t, "the cache to see uid-0 Ready", func() bool { return !p.WaitsForReady("uid-0") })
	if _, n := sink.get("uid-1"); n != 0 {
		t.Fatalf("PodReady(pod without a probe) told %d times, want 0", n)
	}

	// Terminating, then deleted.
	term := plain.DeepCopy()
	now := metav1.Now()
	term.DeletionTimestamp = &now
	if _, err := pods.Update(ctx, term, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "PodGone(uid-1, terminating)", func() bool { r, _ := sink.get("uid-1"); return r == "terminating" })
	if r, gone := p.Gone("uid-1"); !gone || r != "terminating" {
		t.Fatalf("Gone(uid-1) = %q, %v; want terminating, true", r, gone)
	}
	if err := pods.Delete(ctx, "web-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "PodGone(uid-0, deleted)", func() bool { r, _ := sink.get("uid-0"); return r == "deleted" })
	if r, gone := p.Gone("uid-0"); !gone || r != "deleted" {
		t.Fatalf("Gone(uid-0) = %q, %v; want deleted, true (a late start must be refused)", r, gone)
	}
	if _, gone := p.Gone("uid-unknown"); gone {
		t.Fatal("Gone(unknown) = true, want false: the watch may not have seen it yet")
	}

	// Replaced: a pod of the same name with a new UID (a StatefulSet's).
	if err := pods.Delete(ctx, "job-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Create(ctx, pod("job-0", "uid-2", false), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "PodGone(uid-1, deleted)", func() bool { r, _ := sink.get("uid-1"); return r == "terminating" || r == "deleted" })
	if _, gone := p.Gone("uid-2"); gone {
		t.Fatal("Gone(the replacement) = true, want false")
	}

	// Finished.
	fin := pod("once", "uid-3", false)
	fin.Status.Phase = corev1.PodSucceeded
	if _, err := pods.Create(ctx, fin, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "PodGone(uid-3, finished)", func() bool { r, _ := sink.get("uid-3"); return r == "finished" })
}

func TestTombstonesAreBounded(t *testing.T) {
	now := time.Unix(1000, 0)
	p, err := New(Config{Client: fake.NewClientset(), NodeName: "n", MaxTombstones: 3, TombstoneTTL: time.Minute,
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	sink := &recSink{gone: map[string]string{}, ready: map[string]int{}}
	for _, uid := range []string{"a", "b", "c", "d"} {
		p.gone(sink, podKey{key: "ns/" + uid, uid: types.UID(uid)}, "deleted")
	}
	if _, gone := p.Gone("a"); gone {
		t.Fatal("the oldest tombstone survived past MaxTombstones")
	}
	for _, uid := range []string{"b", "c", "d"} {
		if _, gone := p.Gone(uid); !gone {
			t.Fatalf("Gone(%s) = false, want true", uid)
		}
	}
	now = now.Add(2 * time.Minute)
	if _, gone := p.Gone("d"); gone {
		t.Fatal("a tombstone outlived its TTL")
	}
	p.gone(sink, podKey{key: "ns/e", uid: "e"}, "deleted")
	p.mu.Lock()
	n := len(p.mu.tombstones)
	p.mu.Unlock()
	if n != 1 {
		t.Fatalf("tombstones after expiry = %d, want 1", n)
	}
}

func TestClientLater(t *testing.T) {
	// No kubeconfig yet (a node joining its cluster): Run retries, and
	// the queries answer as a node without API access until it syncs.
	client := fake.NewClientset(pod("web-0", "uid-0", true))
	var mu sync.Mutex
	calls := 0
	p, err := New(Config{NodeName: "node-a", RetryInterval: time.Millisecond, NewClient: func() (kubernetes.Interface, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls < 3 {
			return nil, errors.New("open /etc/kubernetes/kubelet.conf: no such file or directory")
		}
		return client, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if p.Healthy() || p.WaitsForReady("uid-0") {
		t.Fatal("a watch without a client claims to be healthy")
	}
	if _, gone := p.Gone("uid-0"); gone {
		t.Fatal("Gone without a client = true")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	sink := &recSink{gone: map[string]string{}, ready: map[string]int{}}
	go func() { done <- p.Run(ctx, sink) }()
	eventually(t, "the watch to sync once a client comes", p.Healthy)
	if !p.WaitsForReady("uid-0") {
		t.Fatal("WaitsForReady(probed pod) = false after sync")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestRunEndsWithoutAClient(t *testing.T) {
	p, err := New(Config{NodeName: "node-a", RetryInterval: time.Millisecond,
		NewClient: func() (kubernetes.Interface, error) { return nil, errors.New("no credentials") }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, &recSink{}) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// PodEvent posts an Event on the pod through the API client while Run
// runs, with this node as its source.
func TestPodEvent(t *testing.T) {
	p, client, _ := startPods(t, pod("web-0", "uid-0", true))
	p.PodEvent("default", "web-0", "uid-0", "StartgateWaiting", "the start has waited 30s in startgate")
	var got []corev1.Event
	eventually(t, "the event in the API", func() bool {
		l, err := client.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return false
		}
		got = l.Items
		return len(got) > 0
	})
	e := got[0]
	if e.InvolvedObject.Name != "web-0" || e.InvolvedObject.UID != "uid-0" || e.InvolvedObject.Kind != "Pod" ||
		e.Reason != "StartgateWaiting" || e.Type != corev1.EventTypeNormal ||
		e.Source.Component != "startgated" || e.Source.Host != "node-a" || e.Message != "the start has waited 30s in startgate" {
		t.Errorf("event %+v", e)
	}
}

// Without a client (before Run has one) an Event is dropped, not queued
// or blocked on.
func TestPodEventWithoutClientIsDropped(t *testing.T) {
	p, err := New(Config{NewClient: func() (kubernetes.Interface, error) { return nil, errors.New("no kubeconfig yet") }, NodeName: "n"})
	if err != nil {
		t.Fatal(err)
	}
	p.PodEvent("default", "web-0", "uid-0", "StartgateWaiting", "x") // must return
}
