package criproxy

import (
	"context"
	"net"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"errors"
	"github.com/startgate/startgate/internal/admission"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// BenchmarkPassthrough isolates the proxy's own cost on a passthrough
// call: fake runtime, proxy and client in one process, direct and proxied
// Version calls alternating. e2e's BenchmarkProxyOverhead measures the
// same against the real containerd, startgated running as its own process.
func BenchmarkPassthrough(b *testing.B) {
	dir := b.TempDir()
	f := &fakeRuntime{calls: map[string]int{}, pullGate: make(chan struct{})}
	up := filepath.Join(dir, "up.sock")
	defer serveFake(b, up, f)()
	p, err := New(Config{Upstream: up, Gate: alwaysGate{}})
	if err != nil {
		b.Fatal(err)
	}
	lisPath := filepath.Join(dir, "cri.sock")
	lis, err := net.Listen("unix", lisPath)
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = p.Serve(lis) }()
	defer func() { p.Stop(context.Background()); <-served }()
	dial := func(path string) runtimeapi.RuntimeServiceClient {
		c, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		return runtimeapi.NewRuntimeServiceClient(c)
	}
	direct, proxied := dial(up), dial(lisPath)
	ctx := context.Background()
	var d, pr []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, err := direct.Version(ctx, &runtimeapi.VersionRequest{}); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := proxied.Version(ctx, &runtimeapi.VersionRequest{}); err != nil {
			b.Fatal(err)
		}
		d, pr = append(d, t1.Sub(t0)), append(pr, time.Since(t1))
	}
	med := func(s []time.Duration) float64 {
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return float64(s[len(s)/2]) / 1e3
	}
	b.ReportMetric(med(d), "direct-p50-µs")
	b.ReportMetric(med(pr), "proxy-p50-µs")
}

// alwaysGate grants nothing and is never asked: Version is not gated.
type alwaysGate struct{}

func (alwaysGate) Acquire(context.Context, admission.Request) (*admission.Lease, error) {
	return nil, errors.New("not gated")
}
func (alwaysGate) Restore(admission.Request) (*admission.Lease, error) {
	return nil, errors.New("not gated")
}
func (alwaysGate) Bypassed() bool       { return false }
func (alwaysGate) Alive(time.Time) bool { return true }
