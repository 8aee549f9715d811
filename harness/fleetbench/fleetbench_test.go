package fleetbench

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/startgate/startgate/harness/testbed/cluster"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestSimulation runs the fleet coordination of 24 nodes on the real API
// server, one killed mid-fetch: no more than K fetch at once, every live
// node finishes, the dead node's slot is taken over only once its lease
// has expired, and the elected node's sum of the reports counts them all.
func TestSimulation(t *testing.T) {
	c := cluster.StartT(t, cluster.Options{NoKubelet: true})
	o := Options{Nodes: 24, Slots: 3, FetchTime: 300 * time.Millisecond, LeaseDuration: 3 * time.Second,
		RetryMin: 100 * time.Millisecond, RetryMax: time.Second, StartJitter: 500 * time.Millisecond, ReportEvery: 500 * time.Millisecond, StatusEvery: time.Second,
		Kill: true, Candidates: 2, Deadline: 3 * time.Minute, Logger: zaptest.NewLogger(t)}
	r, err := RunOn(context.Background(), o, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", *r)
	if r.PeakFetching > o.Slots {
		t.Errorf("peak fetches at once = %d, want at most %d", r.PeakFetching, o.Slots)
	}
	if r.Done != o.Nodes-1 {
		t.Errorf("%d nodes done, want %d (all but the dead one)", r.Done, o.Nodes-1)
	}
	if r.KillTakeoverS < o.LeaseDuration.Seconds() {
		t.Errorf("the dead node's slot was taken over %.2fs after the kill, before its %v lease expired", r.KillTakeoverS, o.LeaseDuration)
	}
	if r.StatusDone != r.Done {
		t.Errorf("announcement status done = %d, want %d", r.StatusDone, r.Done)
	}
	// The killed node may die before its watch opens: every other node's
	// must be open.
	if want := float64(r.Nodes-1) / float64(r.Nodes); r.WatchesPerNode < want {
		t.Errorf("%.2f watches per node, want each live node's announcement watch open (%.2f)", r.WatchesPerNode, want)
	}
}

// TestSimulationMirror: behind a mirror, only fetches before the first
// node is done take an upstream slot (never more than K at once); the
// rest go through the mirror without one.
func TestSimulationMirror(t *testing.T) {
	c := cluster.StartT(t, cluster.Options{NoKubelet: true})
	o := Options{Nodes: 16, Slots: 2, FetchTime: time.Second, LeaseDuration: 3 * time.Second,
		RetryMin: 100 * time.Millisecond, RetryMax: time.Second, StartJitter: 3 * time.Second, ReportEvery: 200 * time.Millisecond,
		StatusEvery: 200 * time.Millisecond, Mirror: true, Candidates: 1, Deadline: 3 * time.Minute, Logger: zaptest.NewLogger(t)}
	r, err := RunOn(context.Background(), o, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", *r)
	if r.Done != o.Nodes {
		t.Errorf("%d nodes done, want %d", r.Done, o.Nodes)
	}
	if r.PeakUpstream > o.Slots || r.Upstream < 1 {
		t.Errorf("upstream fetches: %d, at most %d at once; want at least 1, at most %d at once", r.Upstream, r.PeakUpstream, o.Slots)
	}
	if r.Upstream == o.Nodes {
		t.Errorf("every node fetched upstream, none through the mirror once one was done")
	}
}
