package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// A pod's whole life through the proxy, as kubelet drives it.
func TestPodLifecycleThroughProxy(t *testing.T) {
	n := startNode(t, nodeOptions{})
	ctx := context.Background()

	v, err := n.rs.Version(ctx, "v1")
	if err != nil || v.RuntimeName != "containerd" {
		t.Fatalf("Version through the proxy = %+v, %v; want containerd's", v, err)
	}
	sbID, cID, err := n.runPod(ctx, "default", "web-0", nil, "sh", "-c", "echo ready; sleep 300")
	if err != nil {
		t.Fatal(err)
	}
	n.eventually(30*time.Second, "the container to run and log ready", func() (bool, string) {
		st, err := n.rs.ContainerStatus(ctx, cID, false)
		if err != nil {
			return false, err.Error()
		}
		log := n.logOf("default", "web-0")
		return st.GetStatus().GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING && strings.Contains(log, "ready"),
			fmt.Sprintf("state %v, log %q", st.GetStatus().GetState(), log)
	})
	exec, err := n.rs.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: cID, Cmd: []string{"true"}, Stdout: true})
	if err != nil || !strings.HasPrefix(exec.GetUrl(), "http://") {
		t.Fatalf("Exec through the proxy = %q, %v; want containerd's streaming URL", exec.GetUrl(), err)
	}
	if _, err := n.rs.ContainerStatus(ctx, "no-such-container", false); status.Code(err) != codes.NotFound {
		t.Fatalf("ContainerStatus(no-such-container) = %v, want containerd's NotFound", err)
	}
	if err := n.rs.StopPodSandbox(ctx, sbID); err != nil {
		t.Fatalf("StopPodSandbox: %v", err)
	}
	if err := n.rs.RemovePodSandbox(ctx, sbID); err != nil {
		t.Fatalf("RemovePodSandbox: %v", err)
	}
	n.eventually(10*time.Second, "every slot to be released", func() (bool, string) {
		s := n.status()
		return s.InFlight == 0, fmt.Sprintf("in flight %d", s.InFlight)
	})
}

// While the gate is paused starts wait and startgatectl shows them;
// critical pods pass; resume lets the rest through in class order.
func TestPausedGateQueuesStartsInClassOrder(t *testing.T) {
	n := startNode(t, nodeOptions{})
	ctx := context.Background()
	n.ctl("set", "--inflight", "1")
	stopWatch := n.watch()
	n.ctl("pause")

	pods := []struct{ name, class string }{{"p-low", "low"}, {"p-normal", "normal"}, {"p-high", "high"}}
	var wg sync.WaitGroup
	errs := make(chan error, len(pods))
	for i, p := range pods {
		// Enqueue one at a time so arrival order is known: low first.
		want := i + 1
		wg.Add(1)
		go func(name, class string) {
			defer wg.Done()
			// A whole pod: its slot is held until its container has
			// warmed up, then the next pod goes.
			if _, _, err := n.runPod(ctx, "default", name, map[string]string{"startgate.io/class": class}, "sleep", "300"); err != nil {
				errs <- err
			}
		}(p.name, p.class)
		n.eventually(10*time.Second, p.name+" to queue", func() (bool, string) {
			q := n.queue()
			return len(q) == want, fmt.Sprintf("%d queued", len(q))
		})
	}
	q := n.queue()
	got := []string{}
	for _, w := range q {
		got = append(got, w.Class+":"+w.Description)
	}
	want := []string{"high:start pod default/p-high", "normal:start pod default/p-normal", "low:start pod default/p-low"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("startgatectl queue shows %v, want %v", got, want)
	}

	// A critical pod passes the paused gate.
	if _, _, err := n.runPod(ctx, "kube-system", "coredns", nil, "sleep", "300"); err != nil {
		t.Fatalf("a kube-system pod on a paused gate: %v", err)
	}

	n.ctl("resume")
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var order []string
	for _, e := range stopWatch() {
		if e.Type == "granted" && e.Reason == "granted" {
			order = append(order, strings.TrimPrefix(e.Description, "start pod default/"))
		}
	}
	if strings.Join(order, ",") != "p-high,p-normal,p-low" {
		t.Fatalf("granted after resume in order %v, want p-high, p-normal, p-low", order)
	}
}

// A burst of 30 pods completes with zero errors and never exceeds the
// in-flight limit, as the daemon's own events show.
func TestBurstStaysWithinLimit(t *testing.T) {
	n := startNode(t, nodeOptions{})
	ctx := context.Background()
	n.ctl("set", "--inflight", "4")
	stopWatch := n.watch()
	const pods = 30
	var wg sync.WaitGroup
	errs := make(chan error, pods)
	for i := 0; i < pods; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ns := fmt.Sprintf("team-%d", i%3)
			// A short CPU-bound init, then idle like a service.
			if _, _, err := n.runPod(ctx, ns, fmt.Sprintf("burst-%d", i), nil,
				"sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo ready; sleep 300"); err != nil {
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("burst: %v", err)
	}
	n.eventually(60*time.Second, "every slot to be released after warm-up", func() (bool, string) {
		s := n.status()
		return s.InFlight == 0 && s.QueueLength == 0, fmt.Sprintf("in flight %d, queued %d", s.InFlight, s.QueueLength)
	})
	grants := grantsWithinLimit(t, stopWatch())
	// Each pod takes one slot, at RunPodSandbox, held by its container.
	if grants != pods {
		t.Errorf("saw %d grants, want %d (one per pod)", grants, pods)
	}
}

// A client that gives up while waiting frees its place, and its start is
// never forwarded to containerd.
func TestGivingUpFreesThePlace(t *testing.T) {
	n := startNode(t, nodeOptions{})
	n.ctl("pause")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := n.rs.RunPodSandbox(ctx, n.sandboxConfig("default", "quitter", nil), "")
		done <- err
	}()
	n.eventually(10*time.Second, "the sandbox to queue", func() (bool, string) {
		q := n.queue()
		return len(q) == 1, fmt.Sprintf("%d queued", len(q))
	})
	cancel()
	if err := <-done; status.Code(err) != codes.Canceled {
		t.Fatalf("RunPodSandbox after cancel = %v, want Canceled", err)
	}
	n.eventually(10*time.Second, "the queue to empty", func() (bool, string) {
		q := n.queue()
		return len(q) == 0, fmt.Sprintf("%d queued", len(q))
	})
	n.ctl("resume")
	sbs, err := n.rs.ListPodSandbox(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, sb := range sbs {
		if sb.GetMetadata().GetName() == "quitter" {
			t.Fatalf("the withdrawn sandbox reached containerd: %+v", sb)
		}
	}
}

// containerd killed and restarted mid-run: calls fail with Unavailable,
// then succeed again without restarting startgated.
func TestContainerdRestart(t *testing.T) {
	n := startNode(t, nodeOptions{})
	ctx := context.Background()
	if _, _, err := n.runPod(ctx, "default", "before", nil, "sleep", "300"); err != nil {
		t.Fatal(err)
	}
	// The container's slot is held through its warm-up, read from
	// containerd: let it settle before containerd goes.
	n.eventually(30*time.Second, "the warm-up slot to be released", func() (bool, string) {
		s := n.status()
		return s.InFlight == 0, fmt.Sprintf("in flight %d", s.InFlight)
	})
	if err := n.tb.Kill(); err != nil {
		t.Fatal(err)
	}
	vctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err := n.rs.Version(vctx, "v1")
	cancel()
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Version with containerd killed = %v, want Unavailable", err)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = n.rs.RunPodSandbox(rctx, n.sandboxConfig("default", "during", nil), "")
	cancel()
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("RunPodSandbox with containerd killed = %v, want Unavailable", err)
	}
	if s := n.status(); s.InFlight != 0 {
		t.Fatalf("in flight after a failed start = %d, want 0", s.InFlight)
	}
	if err := n.tb.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	n.eventually(30*time.Second, "the proxy to reach the restarted containerd", func() (bool, string) {
		_, err := n.rs.Version(ctx, "v1")
		return err == nil, fmt.Sprint(err)
	})
	if _, _, err := n.runPod(ctx, "default", "after", nil, "sleep", "300"); err != nil {
		t.Fatalf("a pod after containerd's restart: %v", err)
	}
}

// containerd stalled (SIGSTOP) in the middle of a burst: the calls inside
// it end at their callers' deadlines and give their slots back, the gate
// still admits critical starts (which then wait on containerd like every
// call) and keeps its queue moving; when containerd resumes, starts go
// through again.
func TestContainerdStalled(t *testing.T) {
	// A deadline margin of 1 s: the queued starts wait until a second
	// before their deadline, then go into containerd too.
	n := startNode(t, nodeOptions{config: "[admission]\ndeadline_margin = \"1s\"\n[admission.limits]\ninflight = 2\n"})
	ctx := context.Background()
	if err := n.tb.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			_ = n.tb.Signal(syscall.SIGCONT)
		}
	}()
	// Four normal starts (two admitted into the stalled containerd, two
	// queued behind them) and one critical, each with kubelet's kind of
	// deadline, shortened.
	errs := make(chan error, 5)
	for i := range 4 {
		go func() {
			rctx, cancel := context.WithTimeout(ctx, 8*time.Second)
			defer cancel()
			_, err := n.rs.RunPodSandbox(rctx, n.sandboxConfig("default", fmt.Sprintf("stalled-%d", i), nil), "")
			errs <- err
		}()
	}
	n.eventually(30*time.Second, "two starts admitted and two queued", func() (bool, string) {
		s := n.status()
		return s.InFlight == 2 && s.QueueLength == 2, fmt.Sprintf("in flight %d, queued %d", s.InFlight, s.QueueLength)
	})
	go func() {
		rctx, cancel := context.WithTimeout(ctx, 8*time.Second)
		defer cancel()
		_, err := n.rs.RunPodSandbox(rctx, n.sandboxConfig("kube-system", "critical", nil), "")
		errs <- err
	}()
	n.eventually(30*time.Second, "the critical start admitted past the full gate", func() (bool, string) {
		s := n.status()
		return s.InFlight == 3, fmt.Sprintf("in flight %d, queued %d", s.InFlight, s.QueueLength)
	})
	for range 5 {
		if err := <-errs; status.Code(err) != codes.DeadlineExceeded {
			t.Errorf("a start into a stalled containerd ended with %v, want DeadlineExceeded at its deadline", err)
		}
	}
	n.eventually(30*time.Second, "every slot given back", func() (bool, string) {
		s := n.status()
		return s.InFlight == 0 && s.QueueLength == 0, fmt.Sprintf("in flight %d, queued %d", s.InFlight, s.QueueLength)
	})
	if err := n.tb.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed = true
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, _, err := n.runPod(rctx, "default", "after", nil, "sleep", "300"); err != nil {
		t.Fatalf("a pod once containerd resumed: %v", err)
	}
}
