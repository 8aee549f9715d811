package fleet

import (
	"context"
	"time"

	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// LeaderLease is the Lease through which one startgated of the cluster is
// elected to do what only one should (Elected).
const LeaderLease = "startgate-leader"

// Leader timing: client-go's defaults for controllers. A dead leader is
// replaced within 15 s; nothing the leader does is on a pod start's path,
// so a faster handover would only cost renewals.
const (
	leaderLeaseDuration = 15 * time.Second
	leaderRenewDeadline = 10 * time.Second
	leaderRetryPeriod   = 2 * time.Second
)

// RunLeader takes part in the election until ctx ends, running lead
// (with a context that ends when leadership is lost) while elected.
func RunLeader(ctx context.Context, client kubernetes.Interface, namespace, identity string, log *zap.Logger, lead func(context.Context)) {
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: namespace, Name: LeaderLease},
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: identity},
	}
	for ctx.Err() == nil {
		leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   leaderLeaseDuration,
			RenewDeadline:   leaderRenewDeadline,
			RetryPeriod:     leaderRetryPeriod,
			ReleaseOnCancel: true,
			Name:            LeaderLease,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) {
					log.Info("elected: summing the nodes' prefetch reports")
					lead(ctx)
				},
				OnStoppedLeading: func() { log.Info("no longer elected") },
			},
		})
	}
}
