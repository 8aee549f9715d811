package server

import (
	"context"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	pb "github.com/startgate/startgate/proto/startgate/v1"
)

// BenchmarkAcquireReleaseUnixSocket measures what a caller pays for an
// uncontended slot: open the Acquire stream, send start, receive granted,
// half-close, receive released and the end of the stream, over a real
// unix socket on one reused connection. newHarness pins the gate's rate at
// 1e6 starts/s (Policy.FixedRate, the UpdatePolicy field) so the token
// bucket never throttles the loop; the default static rate would.
//
//	go test -run '^$' -bench AcquireReleaseUnixSocket -benchtime 20000x ./internal/server/
func BenchmarkAcquireReleaseUnixSocket(b *testing.B) {
	h := newHarness(b, true, nil)
	ctx := context.Background()
	if _, err := h.client.Status(ctx, &pb.StatusRequest{}); err != nil {
		b.Fatalf("warm-up Status: %v", err)
	}
	req := start(pb.Class_CLASS_NORMAL, "bench", "benchmark")
	took := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		s, err := h.client.Acquire(ctx)
		if err != nil {
			b.Fatalf("Acquire: %v", err)
		}
		if err := s.Send(req); err != nil {
			b.Fatalf("Send: %v", err)
		}
		m, err := s.Recv()
		if err != nil || m.GetGranted() == nil {
			b.Fatalf("Recv = %v, %v; want granted", m, err)
		}
		if err := s.CloseSend(); err != nil {
			b.Fatalf("CloseSend: %v", err)
		}
		if m, err := s.Recv(); err != nil || m.GetReleased() == nil {
			b.Fatalf("Recv = %v, %v; want released", m, err)
		}
		if _, err := s.Recv(); !errors.Is(err, io.EOF) {
			b.Fatalf("Recv = %v, want EOF", err)
		}
		took = append(took, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(took)
	pct := func(p float64) float64 {
		return float64(took[min(len(took)-1, int(p*float64(len(took))))]) / float64(time.Microsecond)
	}
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}
