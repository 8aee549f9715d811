package criproxy

import (
	"context"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/startgate/startgate/internal/admission"
)

// TestRestoreRetakesWarmingSlots: after a restart, the pods containerd
// shows warming up (created within the cap, a container not yet exited,
// or no container yet) hold slots again before any call is served, so a
// new start queues behind them; pods long started or done do not; a
// restored slot ends when its container settles, as it would have.
func TestRestoreRetakesWarmingSlots(t *testing.T) {
	e := newEnv(t, nil, openPolicy(2))
	now := time.Now()
	ago := func(d time.Duration) int64 { return now.Add(-d).UnixNano() }
	sb := func(id, name string, created int64) *runtimeapi.PodSandbox {
		return &runtimeapi.PodSandbox{Id: id, State: runtimeapi.PodSandboxState_SANDBOX_READY, CreatedAt: created,
			Metadata: &runtimeapi.PodSandboxMetadata{Namespace: "default", Name: name, Uid: "uid-" + name}}
	}
	ctr := func(id, sandbox string, state runtimeapi.ContainerState, created int64) *runtimeapi.Container {
		return &runtimeapi.Container{Id: id, PodSandboxId: sandbox, State: state, CreatedAt: created}
	}
	e.fake.mu.Lock()
	e.fake.sandboxes = []*runtimeapi.PodSandbox{
		sb("sb-warm", "warm", ago(3*time.Second)),    // its container runs: restored
		sb("sb-new", "new", ago(time.Second)),        // no container yet: restored
		sb("sb-old", "old", ago(10*time.Minute)),     // past the cap
		sb("sb-done", "done", ago(2*time.Second)),    // its container exited
		sb("sb-stale", "stale", ago(20*time.Second)), // its container is past the cap
		{Id: "sb-stopped", State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY, CreatedAt: ago(time.Second),
			Metadata: &runtimeapi.PodSandboxMetadata{Namespace: "default", Name: "stopped", Uid: "uid-stopped"}},
	}
	e.fake.containers = []*runtimeapi.Container{
		ctr("c-warm", "sb-warm", runtimeapi.ContainerState_CONTAINER_RUNNING, ago(2*time.Second)),
		ctr("c-old", "sb-old", runtimeapi.ContainerState_CONTAINER_RUNNING, ago(10*time.Minute)),
		ctr("c-done", "sb-done", runtimeapi.ContainerState_CONTAINER_EXITED, ago(time.Second)),
		ctr("c-stale", "sb-stale", runtimeapi.ContainerState_CONTAINER_RUNNING, ago(15*time.Second)),
	}
	e.fake.mu.Unlock()
	e.fake.setBusy(true) // every container burns CPU: none settles yet

	e.proxy.cfg.Warmup.Cap = 10 * time.Second
	r, err := e.proxy.Restore(context.Background())
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if r.Pods != 2 || r.Containers != 1 {
		t.Fatalf("Restore = %+v, want 2 pods (warm, new), 1 container (c-warm)", r)
	}
	leases := e.gate.Leases()
	if len(leases) != 2 {
		t.Fatalf("%d leases after Restore, want 2: %+v", len(leases), leases)
	}
	for _, l := range leases {
		if l.Reason != admission.AdmitRestored || l.Class != admission.Normal {
			t.Errorf("lease %+v, want a normal one granted as restored", l)
		}
		if left := l.Expires.Sub(l.Granted); left > 10*time.Second {
			t.Errorf("lease %q held for %v, want at most what is left of the 10 s cap", l.Description, left)
		}
	}

	// The limit (2) is taken: a new start waits.
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := e.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sandbox("default", "next", nil)})
		done <- err
	}()
	waitUntil(t, "the new start to queue", func() bool { return e.gate.Status().Queued == 1 })
	select {
	case err := <-done:
		t.Fatalf("RunPodSandbox admitted over the restored slots: %v", err)
	default:
	}
	if n := e.fake.count("RunPodSandbox"); n != 0 {
		t.Fatalf("RunPodSandbox reached containerd %d times, want 0 while the restored pods warm up", n)
	}

	// c-warm settles: its pod's slot ends and the new start goes on.
	e.fake.setBusy(false)
	if err := <-done; err != nil {
		t.Fatalf("RunPodSandbox after the restored container settled: %v", err)
	}
}
