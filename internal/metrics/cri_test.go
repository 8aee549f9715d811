package metrics

import (
	"context"
	"math"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/startgate/startgate/internal/admission"
	"github.com/startgate/startgate/internal/criproxy"
)

func TestCRIObserverCounts(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := New(reg)
	const version = "/runtime.v1.RuntimeService/Version"
	const create = "/runtime.v1.RuntimeService/CreateContainer"
	m.Forwarded(version, "OK", time.Millisecond)
	m.Forwarded(version, "OK", 2*time.Millisecond)
	m.Forwarded(version, "Unavailable", time.Millisecond)
	m.Forwarded("/runtime.v1.ImageService/PullImage", "NotFound", 30*time.Millisecond)
	m.Forwarded("/evil.Service/"+strings.Repeat("x", 100), "Unimplemented", time.Millisecond)
	m.Forwarded("/runtime.v1.RuntimeService/GetContainerEvents", "OK", -1) // a stream: not timed
	m.GateWait(create, 3*time.Second)
	m.FailOpen(create, "gate-stuck")
	m.FailOpen("/runtime.v1.RuntimeService/RunPodSandbox", "bypass")
	m.FailOpen("/runtime.v1.RuntimeService/RunPodSandbox", "bypass")

	for _, tc := range []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"calls Version OK", m.criCalls.WithLabelValues(version, "OK"), 2},
		{"calls Version Unavailable", m.criCalls.WithLabelValues(version, "Unavailable"), 1},
		{"calls PullImage NotFound", m.criCalls.WithLabelValues("/runtime.v1.ImageService/PullImage", "NotFound"), 1},
		{"calls outside the CRI fold into other", m.criCalls.WithLabelValues("other", "Unimplemented"), 1},
		{"fail open create gate-stuck", m.failOpen.WithLabelValues(create, "gate-stuck"), 1},
		{"fail open sandbox bypass", m.failOpen.WithLabelValues("/runtime.v1.RuntimeService/RunPodSandbox", "bypass"), 2},
		{"fail open create gate-panic (pre-created zero)", m.failOpen.WithLabelValues(create, "gate-panic"), 0},
	} {
		if got := testutil.ToFloat64(tc.c); got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, got, tc.want)
		}
	}
	// Zeros for every gated method and reason, so alerts have a series.
	if got, want := testutil.CollectAndCount(m.failOpen), len(gatedMethods)*len(failOpenReasons); got != want {
		t.Errorf("cri_fail_open_total series = %d, want %d", got, want)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP startgate_cri_calls_total CRI calls the proxy forwarded to containerd, by gRPC method and containerd's status code.
# TYPE startgate_cri_calls_total counter
startgate_cri_calls_total{code="NotFound",method="/runtime.v1.ImageService/PullImage"} 1
startgate_cri_calls_total{code="OK",method="/runtime.v1.RuntimeService/Version"} 2
startgate_cri_calls_total{code="Unavailable",method="/runtime.v1.RuntimeService/Version"} 1
startgate_cri_calls_total{code="OK",method="/runtime.v1.RuntimeService/GetContainerEvents"} 1
startgate_cri_calls_total{code="Unimplemented",method="other"} 1
`), "startgate_cri_calls_total"); err != nil {
		t.Errorf("cri_calls_total exposition: %v", err)
	}
	// The time histogram: containerd's time for every unary call, none
	// for a stream; the gate's for the gated call.
	for _, tc := range []struct {
		method, phase string
		count         uint64
		sum           float64
	}{
		{version, "containerd", 3, 0.004},
		{"/runtime.v1.ImageService/PullImage", "containerd", 1, 0.03},
		{"other", "containerd", 1, 0.001},
		{"/runtime.v1.RuntimeService/GetContainerEvents", "containerd", 0, 0},
		{create, "gate", 1, 3},
	} {
		h := &dto.Metric{}
		if err := m.criTime.WithLabelValues(tc.method, tc.phase).(prometheus.Histogram).Write(h); err != nil {
			t.Fatal(err)
		}
		if got := h.GetHistogram(); got.GetSampleCount() != tc.count || math.Abs(got.GetSampleSum()-tc.sum) > 1e-9 {
			t.Errorf("cri_call_duration_seconds{%s,%s}: count %d sum %v, want %d and %v", tc.method, tc.phase, got.GetSampleCount(), got.GetSampleSum(), tc.count, tc.sum)
		}
	}
}

// fakeRuntime answers Version and RunPodSandbox, standing in for
// containerd behind a real proxy.
type fakeRuntime struct {
	runtimeapi.UnimplementedRuntimeServiceServer
}

func (fakeRuntime) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{RuntimeName: "fake"}, nil
}

func (fakeRuntime) RunPodSandbox(context.Context, *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: "sb"}, nil
}

// TestWithRealProxy wires Metrics as a real proxy's observer, in front of
// a fake runtime on a real socket, with a real gate that an operator has
// bypassed.
func TestWithRealProxy(t *testing.T) {
	dir := t.TempDir()
	upstream, front := filepath.Join(dir, "containerd.sock"), filepath.Join(dir, "cri.sock")
	lis, err := net.Listen("unix", upstream)
	if err != nil {
		t.Fatal(err)
	}
	fake := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(fake, fakeRuntime{})
	served := make(chan error, 1)
	go func() { served <- fake.Serve(lis) }()
	defer func() { fake.Stop(); <-served }()

	reg := prometheus.NewPedanticRegistry()
	m := New(reg)
	g, err := admission.New(admission.Config{Policy: admission.DefaultPolicy(), Cores: 1, Observer: m})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	m.WatchGate(g)
	g.SetBypass(true)
	p, err := criproxy.New(criproxy.Config{Upstream: upstream, Gate: g, Observer: m})
	if err != nil {
		t.Fatal(err)
	}
	plis, err := net.Listen("unix", front)
	if err != nil {
		t.Fatal(err)
	}
	pserved := make(chan error, 1)
	go func() { pserved <- p.Serve(plis) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		p.Stop(ctx)
		<-pserved
	}()

	conn, err := grpc.NewClient("unix://"+front, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := rt.Version(ctx, &runtimeapi.VersionRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("Version through the proxy: %v", err)
	}
	if _, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: "p", Namespace: "default"}}}); err != nil {
		t.Fatalf("RunPodSandbox through the proxy: %v", err)
	}
	if _, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("ListContainers through the proxy = %v, want the fake's Unimplemented", err)
	}
	for _, tc := range []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"calls Version OK", m.criCalls.WithLabelValues("/runtime.v1.RuntimeService/Version", "OK"), 1},
		{"calls RunPodSandbox OK", m.criCalls.WithLabelValues("/runtime.v1.RuntimeService/RunPodSandbox", "OK"), 1},
		{"calls ListContainers Unimplemented", m.criCalls.WithLabelValues("/runtime.v1.RuntimeService/ListContainers", "Unimplemented"), 1},
		{"fail open RunPodSandbox bypass", m.failOpen.WithLabelValues("/runtime.v1.RuntimeService/RunPodSandbox", "bypass"), 1},
	} {
		if got := testutil.ToFloat64(tc.c); got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, got, tc.want)
		}
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP startgate_bypassed 1 when an operator bypassed the gate (startgatectl bypass on): starts pass without a slot.
# TYPE startgate_bypassed gauge
startgate_bypassed 1
`), "startgate_bypassed"); err != nil {
		t.Errorf("bypassed gauge while bypassed: %v", err)
	}
	g.SetBypass(false)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP startgate_bypassed 1 when an operator bypassed the gate (startgatectl bypass on): starts pass without a slot.
# TYPE startgate_bypassed gauge
startgate_bypassed 0
`), "startgate_bypassed"); err != nil {
		t.Errorf("bypassed gauge after bypass off: %v", err)
	}
}
