package fleet

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	coordclient "k8s.io/client-go/kubernetes/typed/coordination/v1"

	"github.com/startgate/startgate/harness/testbed/cluster"
)

// apiServer is a real kube-apiserver (the testbed's control plane, no
// kubelet) with a namespace for the slots; shared by this file's tests.
func apiServer(t *testing.T) (kubernetes.Interface, string) {
	t.Helper()
	c := cluster.StartT(t, cluster.Options{NoKubelet: true})
	ns := "startgate-system"
	if _, err := c.Client().CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return c.Client(), ns
}

func newTestBudget(t *testing.T, leases coordclient.LeaseInterface, id string, slots int, d time.Duration) *Budget {
	t.Helper()
	b, err := NewBudget(BudgetOptions{Leases: leases, Identity: id, Slots: slots, LeaseDuration: d,
		RetryMin: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBudgetOnAPIServer: on a real API server, many nodes contending for
// K slots never hold more than K at once and all get one in turn; a node
// that dies holding a slot (stops renewing, never releases) holds the
// others back until its lease expires, not forever and not less; a
// holder that cannot renew gives its slot up before another node can
// take it.
func TestBudgetOnAPIServer(t *testing.T) {
	client, ns := apiServer(t)
	leases := client.CoordinationV1().Leases(ns)

	t.Run("at most K", func(t *testing.T) {
		const nodes, slots = 24, 3
		var held, peak, done atomic.Int32
		var wg sync.WaitGroup
		for i := range nodes {
			b := newTestBudget(t, leases, fmt.Sprintf("node-%d", i), slots, 5*time.Second)
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				s, err := b.Acquire(ctx)
				if err != nil {
					t.Errorf("node-%d: Acquire: %v", i, err)
					return
				}
				n := held.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				time.Sleep(100 * time.Millisecond) // the fetch
				held.Add(-1)
				s.Release(ctx)
				done.Add(1)
			})
		}
		wg.Wait()
		if done.Load() != nodes {
			t.Fatalf("%d of %d nodes got a slot", done.Load(), nodes)
		}
		if peak.Load() > slots || peak.Load() < 1 {
			t.Errorf("peak slots held at once = %d, want 1..%d", peak.Load(), slots)
		}
		t.Logf("peak %d of %d slots", peak.Load(), slots)
	})

	t.Run("a dead holder delays others until expiry", func(t *testing.T) {
		const d = 3 * time.Second
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		dead := newTestBudget(t, leases, "dead-node", 1, d)
		// Slot 0 of a one-slot budget, named like the others': clear what
		// the first subtest left (no holder).
		s, err := dead.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Dies: the renewer stops, nothing is released.
		s.cancel()
		<-s.done
		diedAt := time.Now()
		other := newTestBudget(t, leases, "other-node", 1, d)
		s2, err := other.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		waited := time.Since(diedAt)
		s2.Release(ctx)
		t.Logf("slot taken over %v after its holder died (lease %v)", waited, d)
		if waited < d {
			t.Errorf("another node took the slot %v after its holder died, before the lease's %v", waited, d)
		}
	})

	t.Run("a holder that cannot renew gives up before others take over", func(t *testing.T) {
		const d = 3 * time.Second
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cut := &cutLeases{LeaseInterface: leases}
		holder := newTestBudget(t, cut, "partitioned-node", 1, d)
		s, err := holder.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cut.cut.Store(true) // its renewals fail from now on
		lostAt := make(chan time.Time, 1)
		go func() {
			<-s.Lost()
			lostAt <- time.Now()
		}()
		other := newTestBudget(t, leases, "other-node", 1, d)
		s2, err := other.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		takenAt := time.Now()
		s2.Release(ctx)
		select {
		case <-s.Lost():
		default:
			t.Fatal("another node took the slot while its holder still thought it held it")
		}
		s.Release(ctx)
		if at := <-lostAt; !at.Before(takenAt) {
			t.Errorf("the holder gave up at %v, after the other took over at %v", at, takenAt)
		}
	})
}

// cutLeases fails Update once cut: a node cut off from the API server.
type cutLeases struct {
	coordclient.LeaseInterface
	cut atomic.Bool
}

func (c *cutLeases) Update(ctx context.Context, l *coordinationv1.Lease, o metav1.UpdateOptions) (*coordinationv1.Lease, error) {
	if c.cut.Load() {
		return nil, errors.New("cut off")
	}
	return c.LeaseInterface.Update(ctx, l, o)
}

// downLeases is an API server out of reach.
type downLeases struct{ coordclient.LeaseInterface }

func (downLeases) List(context.Context, metav1.ListOptions) (*coordinationv1.LeaseList, error) {
	return nil, errors.New("connection refused")
}

// TestBudgetFailsOpen: with the API out of reach for FailOpenAfter, a
// node fetches without a slot (as it would alone) instead of never.
func TestBudgetFailsOpen(t *testing.T) {
	b, err := NewBudget(BudgetOptions{Leases: downLeases{}, Identity: "n", Slots: 1, LeaseDuration: 3 * time.Second,
		RetryMin: 10 * time.Millisecond, RetryMax: 20 * time.Millisecond, FailOpenAfter: 100 * time.Millisecond, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := b.Acquire(ctx)
	if err != nil {
		t.Fatalf("Acquire with the API down = %v, want an unbounded slot after FailOpenAfter", err)
	}
	if !s.Unbounded() {
		t.Errorf("slot %q given with the API down is not unbounded", s.Name())
	}
	s.Release(ctx)

	b.opts.FailOpenAfter = 0
	ctx2, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	if _, err := b.Acquire(ctx2); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Acquire without fail-open and the API down = %v, want it to wait until ctx ends", err)
	}
}
