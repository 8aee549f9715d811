package kubelet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Restarter restarts kubelet through systemd and waits until it is
// back: its /healthz answers ok, and, when its API server is reachable
// with kubelet's own credentials, its Node is Ready with a heartbeat
// from after the restart (a Node is Ready only while its runtime
// answers, so this is the check that kubelet reaches the new endpoint).
type Restarter struct {
	Node *Node
	// Timeout bounds the wait for kubelet after the restart.
	Timeout time.Duration
	// Logf reports progress.
	Logf func(format string, args ...any)
	// Systemctl runs systemctl; nil runs the real one.
	Systemctl func(ctx context.Context, args ...string) error
	// APIGrace is how long the API server may not answer before the
	// Node check is skipped (the API is an addition, never required).
	APIGrace time.Duration
}

// ErrNotHealthy is Restart's error when kubelet does not come back in
// time.
var ErrNotHealthy = errors.New("kubelet: not healthy after the restart")

func (r *Restarter) logf(format string, args ...any) {
	if r.Logf != nil {
		r.Logf(format, args...)
	}
}

func (r *Restarter) systemctl(ctx context.Context, args ...string) error {
	if r.Systemctl != nil {
		return r.Systemctl(ctx, args...)
	}
	out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("systemctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Restart reloads systemd's units when asked, restarts kubelet and
// waits for it.
func (r *Restarter) Restart(ctx context.Context, l *Layout, daemonReload bool) error {
	if daemonReload {
		if err := r.systemctl(ctx, "daemon-reload"); err != nil {
			return err
		}
	}
	// The Node's Ready heartbeat before the restart: a later one is the
	// new kubelet's (it reports its status as it starts). Without one
	// (no API now), a heartbeat from a second after the restart is.
	cs := r.nodeClient(l)
	before := readyHeartbeat(ctx, cs, l.NodeName)
	restartAt := time.Now()
	if err := r.systemctl(ctx, "restart", KubeletUnit); err != nil {
		return err
	}
	start := before
	if start.IsZero() {
		start = restartAt.Truncate(time.Second)
	}
	r.logf("kubelet restarted; waiting up to %v for it to be healthy", r.Timeout)
	ctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	if l.Healthz == "" {
		r.logf("kubelet's healthzPort is 0: its /healthz is not checked")
	} else if err := r.waitHealthz(ctx, l.Healthz); err != nil {
		return fmt.Errorf("%w: http://%s/healthz: %v", ErrNotHealthy, l.Healthz, err)
	} else {
		r.logf("kubelet's /healthz answers ok")
	}
	if cs == nil {
		return nil
	}
	return r.waitNodeReady(ctx, cs, l, start, restartAt)
}

// nodeClient is a client with kubelet's own credentials, nil (said)
// when kubelet has none.
func (r *Restarter) nodeClient(l *Layout) kubernetes.Interface {
	if l.Kubeconfig == "" {
		r.logf("kubelet has no --kubeconfig: its Node's readiness is not checked")
		return nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", r.Node.path(l.Kubeconfig))
	if err != nil {
		r.logf("kubelet's kubeconfig %s cannot be read (%v): its Node's readiness is not checked", l.Kubeconfig, err)
		return nil
	}
	cfg.Timeout = 5 * time.Second
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		r.logf("kubelet's kubeconfig %s: %v: its Node's readiness is not checked", l.Kubeconfig, err)
		return nil
	}
	return cs
}

// readyHeartbeat is the Node's Ready condition's last heartbeat; zero
// when the API does not answer.
func readyHeartbeat(ctx context.Context, cs kubernetes.Interface, name string) time.Time {
	if cs == nil {
		return time.Time{}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	node, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return time.Time{}
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.LastHeartbeatTime.Time
		}
	}
	return time.Time{}
}

// leaseRenewed is the node's Lease's renewTime; zero when it cannot be
// read.
func leaseRenewed(ctx context.Context, cs kubernetes.Interface, name string) time.Time {
	lease, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, name, metav1.GetOptions{})
	if err != nil || lease.Spec.RenewTime == nil {
		return time.Time{}
	}
	return lease.Spec.RenewTime.Time
}

func (r *Restarter) waitHealthz(ctx context.Context, addr string) error {
	client := &http.Client{Timeout: 2 * time.Second}
	var last error
	err := wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/healthz", nil)
		resp, err := client.Do(req)
		if err != nil {
			last = err
			return false, nil
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK && strings.TrimSpace(string(b)) == "ok" {
			return true, nil
		}
		last = fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
		return false, nil
	})
	if err != nil && last != nil {
		return last
	}
	return err
}

// waitNodeReady waits for the Node to be Ready and for a sign of the new
// kubelet: a Ready heartbeat after start, or its Lease (kube-node-lease)
// renewed after restartAt. The heartbeat has a second's resolution, and
// a kubelet whose first status lands in the restart's second reports
// the next only when something changes or minutes later; the Lease's
// renewTime has microseconds and is renewed every few seconds. Both are
// read with kubelet's own credentials (NodeRestriction lets a node read
// its own Node and Lease). An API that does not answer within APIGrace
// skips the check and says so.
func (r *Restarter) waitNodeReady(ctx context.Context, cs kubernetes.Interface, l *Layout, start, restartAt time.Time) error {
	began := time.Now()
	grace := r.APIGrace
	if grace == 0 {
		grace = 30 * time.Second
	}
	answered := false
	var last string
	err := wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
		node, err := cs.CoreV1().Nodes().Get(ctx, l.NodeName, metav1.GetOptions{})
		if err != nil {
			if !answered && time.Since(began) > grace {
				return false, errAPIUnreachable
			}
			if !answered {
				last = err.Error()
			}
			return false, nil
		}
		answered = true
		for _, c := range node.Status.Conditions {
			if c.Type != corev1.NodeReady {
				continue
			}
			renewed := leaseRenewed(ctx, cs, l.NodeName)
			last = fmt.Sprintf("Ready=%s (%s: %s), last heartbeat %s, want one after %s; Lease renewed %s, want after %s",
				c.Status, c.Reason, c.Message, c.LastHeartbeatTime.UTC().Format(time.RFC3339), start.UTC().Format(time.RFC3339),
				renewed.UTC().Format(time.RFC3339Nano), restartAt.UTC().Format(time.RFC3339Nano))
			// Both are written by kubelet with this node's clock.
			return c.Status == corev1.ConditionTrue && (c.LastHeartbeatTime.Time.After(start) || renewed.After(restartAt)), nil
		}
		return false, nil
	})
	switch {
	case errors.Is(err, errAPIUnreachable):
		r.logf("the API server did not answer within %v (%s): Node %s's readiness is not checked", grace, last, l.NodeName)
		return nil
	case err != nil:
		return fmt.Errorf("%w: Node %s: %s", ErrNotHealthy, l.NodeName, last)
	}
	r.logf("Node %s is Ready", l.NodeName)
	return nil
}

var errAPIUnreachable = errors.New("api unreachable")

// SystemdRunning: systemd is PID 1 on this node (sd_booted).
func (n *Node) SystemdRunning() bool {
	fi, err := os.Stat(n.path("/run/systemd/system"))
	return err == nil && fi.IsDir()
}

// StartgateUnits are the units kubelet needs once it points at
// startgated.
var StartgateUnits = []string{"startgated-cri.socket", "startgated.service"}

// EnableStartgate enables and starts startgated's CRI socket and daemon,
// so that kubelet's new endpoint is there now and after every reboot.
func (r *Restarter) EnableStartgate(ctx context.Context) error {
	return r.systemctl(ctx, append([]string{"enable", "--now"}, StartgateUnits...)...)
}
