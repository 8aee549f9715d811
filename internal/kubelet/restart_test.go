package kubelet

import (
	"context"
	"errors"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// A kubelet restarted in the same second as its last Ready heartbeat
// posts its first status with that second's timestamp, and the next only
// minutes later: its Lease, renewed after the restart to the
// microsecond, says the new kubelet is up. Neither a heartbeat nor a
// renewal after the restart: not healthy.
func TestWaitNodeReadyAcceptsALeaseRenewal(t *testing.T) {
	restartAt := time.Date(2026, 12, 4, 19, 29, 44, 600_000_000, time.UTC)
	start := restartAt.Truncate(time.Second)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{
		Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.NewTime(start),
	}}}}
	lease := func(renewed time.Time) *coordinationv1.Lease {
		return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "n1", Namespace: corev1.NamespaceNodeLease},
			Spec: coordinationv1.LeaseSpec{RenewTime: &metav1.MicroTime{Time: renewed}}}
	}
	r := &Restarter{APIGrace: time.Minute}
	l := &Layout{NodeName: "n1"}

	cs := fake.NewClientset(node, lease(restartAt.Add(300*time.Millisecond)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.waitNodeReady(ctx, cs, l, start, restartAt); err != nil {
		t.Errorf("Ready, heartbeat in the restart's second, Lease renewed after it: %v", err)
	}

	cs = fake.NewClientset(node, lease(restartAt.Add(-2*time.Second)))
	ctx, cancel = context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer cancel()
	if err := r.waitNodeReady(ctx, cs, l, start, restartAt); !errors.Is(err, ErrNotHealthy) {
		t.Errorf("no heartbeat nor renewal after the restart: %v, want ErrNotHealthy", err)
	}
}
