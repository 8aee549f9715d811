package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/startgate/startgate/harness/testbed"
	"github.com/startgate/startgate/harness/testbed/cluster"
)

// BenchmarkStart measures a cluster from nothing to a Ready, untainted
// node whose default namespace takes pods (Start), and Stop, on one
// containerd testbed.
//
//	CI=true STARTGATE_KUBE_BIN=$(hack/kubernetes/build.sh) go test -run '^$' -bench Start -benchtime 5x ./internal/testbed/cluster
func BenchmarkStart(b *testing.B) {
	tb := testbed.StartT(b, testbed.Options{})
	bin, err := cluster.CachedBinaries()
	if err != nil {
		b.Fatal(err)
	}
	var start, stop time.Duration
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		t0 := time.Now()
		c, err := cluster.Start(ctx, cluster.Options{RuntimeEndpoint: tb.Endpoint(), CNIConfDir: tb.CNIConfDir(), KubeBin: bin})
		if err != nil {
			cancel()
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := c.Stop(ctx); err != nil {
			cancel()
			b.Fatal(err)
		}
		cancel()
		start += t1.Sub(t0)
		stop += time.Since(t1)
	}
	b.ReportMetric(start.Seconds()/float64(b.N), "s-to-ready/op")
	b.ReportMetric(stop.Seconds()/float64(b.N), "s-to-stop/op")
}
