package e2e

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	internalapi "k8s.io/cri-api/pkg/apis"
	remote "k8s.io/cri-client/pkg"

	pb "github.com/startgate/startgate/proto/startgate/v1"
)

// BenchmarkProxyOverhead measures what the proxy adds to CRI calls, side
// by side with calling containerd directly, alternating call by call in
// one run so machine noise hits both modes alike. Run it as
//
//	go test -run '^$' -bench ProxyOverhead -benchtime 1x ./e2e/
//
// Each b.N iteration makes `rounds` calls of each kind in each mode; the
// figures are medians (p50) and p99 over those calls, in microseconds.
// For CreateContainer the gate is open and idle (limits pinned high, no
// other start in flight), so the difference is the cost of admission plus
// forwarding; each created container is removed before the next.
func BenchmarkProxyOverhead(b *testing.B) {
	n := startNode(b, nodeOptions{})
	ctx := context.Background()
	direct, err := remote.NewRemoteRuntimeServiceBuilder().WithEndpoint("unix://" + n.tb.Endpoint()).
		WithConnectionTimeout(criTimeout).Build(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer direct.Close(ctx)
	modes := []struct {
		name string
		rs   internalapi.RuntimeService
	}{{"direct", direct}, {"proxy", n.rs}}
	n.ctl("set", "--inflight", "64", "--rate", "10000", "--burst", "1000")
	// The floor: one unary gRPC call to another process on this machine
	// (startgated's own Status, no CRI, no containerd). A proxy in its own
	// process adds at least one such round trip.
	adminConn, err := grpc.NewClient("unix://"+n.api, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer adminConn.Close()
	admin := pb.NewStartgateClient(adminConn)

	sb := n.sandboxConfig("default", "bench", nil)
	sbID, err := direct.RunPodSandbox(ctx, sb, "")
	if err != nil {
		b.Fatal(err)
	}
	cID, err := direct.CreateContainer(ctx, sbID, n.containerConfig("probe", "sleep", "300"), sb)
	if err != nil {
		b.Fatal(err)
	}

	const rounds = 300
	const createRounds = 40
	lat := map[string][]time.Duration{}
	timeIt := func(key string, f func() error) {
		t0 := time.Now()
		if err := f(); err != nil {
			b.Fatalf("%s: %v", key, err)
		}
		lat[key] = append(lat[key], time.Since(t0))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for r := 0; r < rounds; r++ {
			for _, m := range modes {
				timeIt("Version/"+m.name, func() error { _, err := m.rs.Version(ctx, "v1"); return err })
				timeIt("ContainerStatus/"+m.name, func() error { _, err := m.rs.ContainerStatus(ctx, cID, false); return err })
			}
			timeIt("floor", func() error { _, err := admin.Status(ctx, &pb.StatusRequest{}); return err })
		}
		for r := 0; r < createRounds; r++ {
			for _, m := range modes {
				var id string
				timeIt("CreateContainer/"+m.name, func() error {
					var err error
					id, err = m.rs.CreateContainer(ctx, sbID, n.containerConfig(fmt.Sprintf("c-%s-%d-%d", m.name, i, r), "sleep", "300"), sb)
					return err
				})
				if err := m.rs.RemoveContainer(ctx, id); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(us(quantiles(lat["floor"]).p50), "cross-process-unary-p50-µs")
	for _, call := range []string{"Version", "ContainerStatus", "CreateContainer"} {
		d, p := quantiles(lat[call+"/direct"]), quantiles(lat[call+"/proxy"])
		b.ReportMetric(us(d.p50), call+"-direct-p50-µs")
		b.ReportMetric(us(p.p50), call+"-proxy-p50-µs")
		b.ReportMetric(us(p.p50-d.p50), call+"-added-p50-µs")
		b.ReportMetric(us(p.p99-d.p99), call+"-added-p99-µs")
	}
	if s := n.status(); s.InFlight != 0 {
		b.Fatalf("in flight after the benchmark = %d, want 0 (created containers were removed)", s.InFlight)
	}
}

type q struct{ p50, p99 time.Duration }

func quantiles(ds []time.Duration) q {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	at := func(f float64) time.Duration { return s[int(f*float64(len(s)-1))] }
	return q{at(0.50), at(0.99)}
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
