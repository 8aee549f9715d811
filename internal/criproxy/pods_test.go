package criproxy

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fakePods is a PodView the tests steer.
type fakePods struct {
	mu        sync.Mutex
	gone      map[string]string
	waitReady map[string]bool
}

func (f *fakePods) Gone(uid string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.gone[uid]
	return r, ok
}

func (f *fakePods) WaitsForReady(uid string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.waitReady[uid]
}

func (f *fakePods) set(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

func newPodsEnv(t *testing.T, pods *fakePods) *env {
	return newEnv(t, nil, openPolicy(4), func(c *Config) { c.Pods = pods })
}

func TestGonePodLeavesTheQueue(t *testing.T) {
	for _, reason := range []string{"deleted", "terminating", "finished"} {
		t.Run(reason, func(t *testing.T) {
			e := newPodsEnv(t, &fakePods{})
			e.gate.Pause()
			errc := make(chan error, 1)
			go func() {
				// kubelet syncs under context.WithoutCancel: the caller
				// never gives up on its own.
				_, err := e.rt.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{Config: sandbox("default", "web-0", nil)})
				errc <- err
			}()
			waitUntil(t, "the sandbox to queue", func() bool { return e.gate.Status().Queued == 1 })
			e.proxy.PodGone("other-uid", reason) // another pod's news changes nothing
			if q := e.gate.Status().Queued; q != 1 {
				t.Fatalf("queued after another pod went = %d, want 1", q)
			}
			e.proxy.PodGone("default-web-0", reason)
			err := <-errc
			st := status.Convert(err)
			if st.Code() != codes.Aborted || !strings.Contains(st.Message(), "start pod default/web-0") || !strings.Contains(st.Message(), "default-web-0") {
				t.Fatalf("RunPodSandbox of a %s pod = %v, want Aborted naming the pod and its uid", reason, err)
			}
			if q := e.gate.Status().Queued; q != 0 {
				t.Fatalf("queued after the pod went = %d, want 0", q)
			}
			e.gate.Resume()
			if n := e.fake.count("RunPodSandbox"); n != 0 {
				t.Fatalf("RunPodSandbox of a %s pod reached containerd %d times", reason, n)
			}
			if st := e.gate.Status(); st.InFlight != 0 {
				t.Fatalf("in flight = %d, want 0: a cancelled start holds no slot", st.InFlight)
			}
			if n := e.observe.get("pod-gone:" + reason); n != 1 {
				t.Fatalf("PodGone(%s) observed %d times, want 1", reason, n)
			}
		})
	}
}

func TestGonePodNeverQueues(t *testing.T) {
	pods := &fakePods{gone: map[string]string{"default-web-1": "deleted"}}
	e := newPodsEnv(t, pods)
	e.gate.Pause()
	ctx := context.Background()
	_, err := e.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sandbox("default", "web-1", nil)})
	if st := status.Convert(err); st.Code() != codes.Aborted || !strings.Contains(st.Message(), "was deleted") {
		t.Fatalf("RunPodSandbox of a deleted pod = %v, want Aborted saying it was deleted", err)
	}
	// A container of a gone pod that holds no slot is refused the same way.
	_, err = e.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: "sb-web-1",
		Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "app"}}, SandboxConfig: sandbox("default", "web-1", nil)})
	if status.Code(err) != codes.Aborted {
		t.Fatalf("CreateContainer of a deleted pod = %v, want Aborted", err)
	}
	if n := e.fake.count("RunPodSandbox") + e.fake.count("CreateContainer"); n != 0 {
		t.Fatalf("%d calls of a deleted pod reached containerd", n)
	}
	if n := e.observe.get("pod-gone:deleted"); n != 2 {
		t.Fatalf("PodGone(deleted) observed %d times, want 2", n)
	}
	// Any other pod passes as before.
	e.gate.Resume()
	if _, err := e.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sandbox("default", "web-2", nil)}); err != nil {
		t.Fatalf("RunPodSandbox of a live pod: %v", err)
	}
}

func TestProbedPodHoldsItsSlotUntilReady(t *testing.T) {
	pods := &fakePods{waitReady: map[string]bool{"default-web-0": true}}
	e := newPodsEnv(t, pods)
	ctx := context.Background()
	if _, err := e.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sandbox("default", "web-0", nil)}); err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	c, err := e.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: "sb-web-0",
		Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "app"}}, SandboxConfig: sandbox("default", "web-0", nil)})
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	if _, err := e.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId}); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
	// The container burns no CPU: it has settled many polls over, but
	// the pod is not Ready yet (a starved container looks settled too).
	for i := 0; i < 20; i++ {
		time.Sleep(5 * time.Millisecond) // letting polls happen, not timing
		if got := e.gate.Status().InFlight; got != 1 {
			t.Fatalf("in flight = %d before the pod reported Ready, want 1", got)
		}
	}
	e.proxy.PodReady("default-web-0")
	if got := e.gate.Status().InFlight; got != 0 {
		t.Fatalf("in flight after Ready = %d, want 0", got)
	}
	if c := e.gate.Status().Counters; c.Expired != 0 {
		t.Fatalf("the slot expired (%d) instead of ending at Ready", c.Expired)
	}
}

func TestWatchLostFallsBackToSettling(t *testing.T) {
	pods := &fakePods{waitReady: map[string]bool{"default-web-0": true}}
	e := newPodsEnv(t, pods)
	ctx := context.Background()
	c, err := e.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: "sb-web-0",
		Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "app"}}, SandboxConfig: sandbox("default", "web-0", nil)})
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	if _, err := e.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId}); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
	time.Sleep(30 * time.Millisecond) // a few polls while waiting for Ready
	if got := e.gate.Status().InFlight; got != 1 {
		t.Fatalf("in flight = %d while the pod waits for Ready, want 1", got)
	}
	// The watch is lost (WaitsForReady answers false): settling ends it.
	pods.set(func() { pods.waitReady = nil })
	waitUntil(t, "the slot to end on settling once Ready cannot be seen", func() bool { return e.gate.Status().InFlight == 0 })
}

// With settle_before_ready, a probed pod whose container went idle gives
// its slot back without waiting for its probe's next period.
func TestSettleBeforeReady(t *testing.T) {
	pods := &fakePods{waitReady: map[string]bool{"default-web-0": true}}
	e := newEnv(t, nil, openPolicy(4), func(c *Config) {
		c.Pods = pods
		c.Warmup.SettleBeforeReady = true
	})
	ctx := context.Background()
	c, err := e.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: "sb-web-0",
		Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "app"}}, SandboxConfig: sandbox("default", "web-0", nil)})
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	if _, err := e.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId}); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
	waitUntil(t, "the idle container's slot to end before Ready", func() bool { return e.gate.Status().InFlight == 0 })
	if c := e.gate.Status().Counters; c.Expired != 0 {
		t.Fatalf("the slot expired (%d) instead of ending on settling", c.Expired)
	}
}

func TestSlotOutlivesTheCallDeadline(t *testing.T) {
	e := newPodsEnv(t, &fakePods{})
	// kubelet gives RunPodSandbox 4 minutes; the warm-up cap is 10 s here.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if _, err := e.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sandbox("default", "web-0", nil)}); err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	ls := e.gate.Leases()
	if len(ls) != 1 {
		t.Fatalf("leases = %d, want 1", len(ls))
	}
	if hold := ls[0].Expires.Sub(ls[0].Granted); hold < 4*time.Minute {
		t.Fatalf("slot's hold cap = %v, want at least the call's 4 minute deadline plus the warm-up cap", hold)
	}
}
