package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/startgate/startgate/internal/kubelet"
)

// The restart of node enable --restart-kubelet on a real kubelet and
// kube-apiserver (NodeRestriction on; kubelet's own credentials): after
// a switch to startgated it waits until the Node is Ready again, with a
// heartbeat from after the restart; after a switch to a socket nothing
// serves, the Node does not come back Ready, the wait says so in time,
// and the switch is undone and kubelet is healthy on containerd again.
// systemctl is stood in for by the testbed's own stop and start of the
// kubelet process (it is not a systemd unit here); everything else is
// what startgatectl runs.
func TestKubeRestartWaitsForReady(t *testing.T) {
	kn := startKubeNode(t, kubeOptions{onContainerd: true})
	n := &kubelet.Node{StateDir: t.TempDir()}
	var mu sync.Mutex
	var logs []string
	logf := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		logs = append(logs, fmt.Sprintf(format, args...))
		t.Logf(format, args...)
	}
	systemctl := func(ctx context.Context, args ...string) error {
		if args[0] != "restart" {
			return nil // daemon-reload: nothing to reload here
		}
		if err := kn.c.StopKubelet(ctx); err != nil {
			return err
		}
		// systemctl restart returns once the process is started; a
		// kubelet that cannot reach its runtime is for the wait to see.
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := kn.c.StartKubelet(sctx); err != nil {
			t.Logf("kubelet start: %v", err)
		}
		return nil
	}
	restarter := func(timeout time.Duration) *kubelet.Restarter {
		return &kubelet.Restarter{Node: n, Timeout: timeout, Logf: logf, Systemctl: systemctl}
	}
	ctx := context.Background()

	if _, err := n.Enable("unix://" + kn.n.cri); err != nil {
		t.Fatal(err)
	}
	if !n.RestartNeeded() {
		t.Fatal("RestartNeeded is false right after the switch, with kubelet started before it")
	}
	l, err := n.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if l.Kubeconfig == "" || l.NodeName != kn.c.NodeName() {
		t.Fatalf("layout: kubeconfig %q, node %q; want kubelet's own, node %s", l.Kubeconfig, l.NodeName, kn.c.NodeName())
	}
	if err := restarter(3*time.Minute).Restart(ctx, l, true); err != nil {
		t.Fatalf("restart onto startgated: %v", err)
	}
	mu.Lock()
	ready := strings.Contains(strings.Join(logs, "\n"), "Node "+kn.c.NodeName()+" is Ready")
	mu.Unlock()
	if !ready {
		t.Fatalf("the restart did not wait for the Node's Ready through kubelet's credentials: %q", logs)
	}
	if n.RestartNeeded() {
		t.Error("RestartNeeded after the restart")
	}
	if _, err := n.Disable(); err != nil {
		t.Fatal(err)
	}

	// A socket nothing serves: kubelet never gets Ready. (The layout is
	// read while kubelet runs: this kubelet is no systemd unit, and once
	// it has exited on the dead socket there is no command line to read.)
	if _, err := n.Enable("unix:///run/startgate/nothing-here.sock"); err != nil {
		t.Fatal(err)
	}
	l, err = n.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	err = restarter(40*time.Second).Restart(ctx, l, true)
	if !errors.Is(err, kubelet.ErrNotHealthy) {
		t.Fatalf("restart onto a dead socket: %v, want ErrNotHealthy", err)
	}
	// What startgatectl does then: switch back and restart again.
	if _, err := n.Disable(); err != nil {
		t.Fatal(err)
	}
	if err := restarter(3*time.Minute).Restart(ctx, l, true); err != nil {
		t.Fatalf("restart back onto containerd: %v", err)
	}
}
