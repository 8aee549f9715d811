package criproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/startgate/startgate/internal/admission"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeRuntime is a CRI server on a real unix socket, standing in for
// containerd in unit tests (the e2e tests use the real one).
type fakeRuntime struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer

	mu       sync.Mutex
	calls    map[string]int
	md       metadata.MD
	deadline time.Time
	usage    uint64 // ContainerStats' CPU counter
	// busySince, when set, is when the container began burning a whole
	// core: the counter then grows with wall time, as a busy loop's does,
	// however late the test's goroutines are scheduled.
	busySince time.Time
	pullGate  chan struct{}
	pullCalls atomic.Int32
	// images maps a pulled reference to its image ID, as containerd's
	// image records do; ImageStatus reads it.
	images map[string]string
	// sandboxes and containers are what ListPodSandbox and
	// ListContainers answer (Restore reads them).
	sandboxes  []*runtimeapi.PodSandbox
	containers []*runtimeapi.Container
}

func (f *fakeRuntime) ListPodSandbox(ctx context.Context, r *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	f.record(ctx, "ListPodSandbox")
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*runtimeapi.PodSandbox
	for _, sb := range f.sandboxes {
		if st := r.GetFilter().GetState(); st != nil && st.GetState() != sb.GetState() {
			continue
		}
		out = append(out, sb)
	}
	return &runtimeapi.ListPodSandboxResponse{Items: out}, nil
}

func (f *fakeRuntime) ListContainers(ctx context.Context, r *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	f.record(ctx, "ListContainers")
	f.mu.Lock()
	defer f.mu.Unlock()
	return &runtimeapi.ListContainersResponse{Containers: f.containers}, nil
}

func (f *fakeRuntime) record(ctx context.Context, m string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[m]++
	f.md, _ = metadata.FromIncomingContext(ctx)
	f.deadline, _ = ctx.Deadline()
}

func (f *fakeRuntime) count(m string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[m]
}

func (f *fakeRuntime) Version(ctx context.Context, r *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	f.record(ctx, "Version")
	return &runtimeapi.VersionResponse{Version: r.Version, RuntimeName: "fake", RuntimeVersion: "1.2.3", RuntimeApiVersion: "v1"}, nil
}

func (f *fakeRuntime) RunPodSandbox(ctx context.Context, r *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	f.record(ctx, "RunPodSandbox")
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: "sb-" + r.GetConfig().GetMetadata().GetName()}, nil
}

func (f *fakeRuntime) CreateContainer(ctx context.Context, r *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	f.record(ctx, "CreateContainer")
	return &runtimeapi.CreateContainerResponse{ContainerId: "ctr-" + r.GetConfig().GetMetadata().GetName()}, nil
}

func (f *fakeRuntime) StartContainer(ctx context.Context, r *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	f.record(ctx, "StartContainer")
	return &runtimeapi.StartContainerResponse{}, nil
}

func (f *fakeRuntime) StopPodSandbox(ctx context.Context, r *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	f.record(ctx, "StopPodSandbox")
	return &runtimeapi.StopPodSandboxResponse{}, nil
}

func (f *fakeRuntime) RemoveContainer(ctx context.Context, r *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	f.record(ctx, "RemoveContainer")
	return &runtimeapi.RemoveContainerResponse{}, nil
}

func (f *fakeRuntime) ContainerStatus(ctx context.Context, r *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	if r.ContainerId == "missing" {
		return nil, status.Errorf(codes.NotFound, "container %q not found", r.ContainerId)
	}
	return &runtimeapi.ContainerStatusResponse{Status: &runtimeapi.ContainerStatus{Id: r.ContainerId, State: runtimeapi.ContainerState_CONTAINER_RUNNING}}, nil
}

func (f *fakeRuntime) ContainerStats(ctx context.Context, r *runtimeapi.ContainerStatsRequest) (*runtimeapi.ContainerStatsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	usage := f.usage
	if !f.busySince.IsZero() {
		usage += uint64(time.Since(f.busySince))
	}
	return &runtimeapi.ContainerStatsResponse{Stats: &runtimeapi.ContainerStats{
		Cpu: &runtimeapi.CpuUsage{UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: usage}},
	}}, nil
}

// setBusy starts or stops the container burning a core.
func (f *fakeRuntime) setBusy(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case on && f.busySince.IsZero():
		f.busySince = time.Now()
	case !on && !f.busySince.IsZero():
		f.usage += uint64(time.Since(f.busySince))
		f.busySince = time.Time{}
	}
}

func (f *fakeRuntime) burn(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.usage += uint64(d)
}

func (f *fakeRuntime) PullImage(ctx context.Context, r *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	f.pullCalls.Add(1)
	select {
	case <-f.pullGate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	id := "sha256:" + r.GetImage().GetImage()
	f.setImage(r.GetImage().GetImage(), id)
	return &runtimeapi.PullImageResponse{ImageRef: id}, nil
}

// setImage points ref's image record at id; "" removes it.
func (f *fakeRuntime) setImage(ref, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.images == nil {
		f.images = map[string]string{}
	}
	if id == "" {
		delete(f.images, ref)
		return
	}
	f.images[ref] = id
}

func (f *fakeRuntime) ImageStatus(ctx context.Context, r *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	f.record(ctx, "ImageStatus")
	f.mu.Lock()
	defer f.mu.Unlock()
	id, ok := f.images[r.GetImage().GetImage()]
	if !ok {
		return &runtimeapi.ImageStatusResponse{}, nil
	}
	return &runtimeapi.ImageStatusResponse{Image: &runtimeapi.Image{Id: id}}, nil
}

// serveFake starts the fake on sock; a method it does not know is echoed
// back, standing in for a newer containerd.
func serveFake(t testing.TB, sock string, f *fakeRuntime) func() {
	t.Helper()
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatalf("listen %s: %v", sock, err)
	}
	s := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
		in := new(frame)
		if err := ss.RecvMsg(in); err != nil {
			return err
		}
		return ss.SendMsg(&frame{b: append([]byte("echo:"), in.b...)})
	}), grpc.ForceServerCodec(rawCodec{}))
	runtimeapi.RegisterRuntimeServiceServer(s, f)
	runtimeapi.RegisterImageServiceServer(s, f)
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(lis) }()
	var once sync.Once
	stop := func() { once.Do(func() { s.Stop(); <-done }) }
	t.Cleanup(stop)
	return stop
}

type env struct {
	t       *testing.T
	dir     string
	fake    *fakeRuntime
	gate    *admission.Gate
	proxy   *Proxy
	conn    *grpc.ClientConn
	rt      runtimeapi.RuntimeServiceClient
	img     runtimeapi.ImageServiceClient
	stopUp  func()
	upSock  string
	observe *countingObserver
}

type countingObserver struct {
	mu       sync.Mutex
	failOpen map[string]int
}

func (c *countingObserver) FailOpen(method, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failOpen[reason]++
}
func (c *countingObserver) Forwarded(string, string, time.Duration) {}
func (c *countingObserver) GateWait(string, time.Duration)          {}
func (c *countingObserver) PodGone(_, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failOpen["pod-gone:"+reason]++ // one map: the keys never collide
}
func (c *countingObserver) PullShared(string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failOpen["pull-shared"]++
}
func (c *countingObserver) get(reason string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failOpen[reason]
}

func newEnv(t *testing.T, gate Gate, pol admission.Policy, opts ...func(*Config)) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, dir: dir, fake: &fakeRuntime{calls: map[string]int{}, pullGate: make(chan struct{})}, upSock: filepath.Join(dir, "up.sock")}
	e.stopUp = serveFake(t, e.upSock, e.fake)
	if gate == nil {
		g, err := admission.New(admission.Config{Policy: pol})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(g.Close)
		e.gate, gate = g, g
	}
	e.observe = &countingObserver{failOpen: map[string]int{}}
	cfg := Config{Upstream: e.upSock, Gate: gate, Observer: e.observe,
		Warmup: WarmupPolicy{Poll: 5 * time.Millisecond, Cap: 10 * time.Second}}
	for _, o := range opts {
		o(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.stuckCheck = 10 * time.Millisecond
	e.proxy = p
	lis, err := net.Listen("unix", filepath.Join(dir, "cri.sock"))
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = p.Serve(lis) }()
	e.conn, err = grpc.NewClient("unix://"+filepath.Join(dir, "cri.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	e.rt, e.img = runtimeapi.NewRuntimeServiceClient(e.conn), runtimeapi.NewImageServiceClient(e.conn)
	t.Cleanup(func() {
		e.conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Stop(ctx)
		<-served
	})
	return e
}

func openPolicy(inflight int) admission.Policy {
	p := admission.DefaultPolicy()
	p.StaticInFlight, p.FixedRate, p.Burst = inflight, 1e6, 1000
	return p
}

func sandbox(ns, name string, ann map[string]string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Namespace: ns, Name: name, Uid: ns + "-" + name}, Annotations: ann}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling progress, not asserting time
	}
}

func TestPassthroughKeepsEverything(t *testing.T) {
	e := newEnv(t, nil, openPolicy(4))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "x-trace", "abc")
	v, err := e.rt.Version(ctx, &runtimeapi.VersionRequest{Version: "v1"})
	if err != nil {
		t.Fatalf("Version: %v", err)
	}
	if v.RuntimeName != "fake" || v.RuntimeVersion != "1.2.3" || v.Version != "v1" {
		t.Fatalf("Version = %+v, want the upstream's answer", v)
	}
	e.fake.mu.Lock()
	gotMD, gotDeadline := e.fake.md.Get("x-trace"), e.fake.deadline
	e.fake.mu.Unlock()
	if len(gotMD) != 1 || gotMD[0] != "abc" {
		t.Fatalf("upstream metadata x-trace = %v, want [abc]", gotMD)
	}
	// gRPC sends a timeout, not a time: each hop re-bases it on arrival.
	if want, _ := ctx.Deadline(); gotDeadline.IsZero() || gotDeadline.Sub(want).Abs() > time.Second {
		t.Fatalf("upstream deadline %v, want the caller's %v (within a second)", gotDeadline, want)
	}

	// Errors keep their code and message.
	_, err = e.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: "missing"})
	if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != `container "missing" not found` {
		t.Fatalf("ContainerStatus(missing) = %v, want NotFound with the upstream's message", err)
	}

	// A method this build does not know is forwarded as bytes.
	out := new(frame)
	err = e.conn.Invoke(ctx, "/runtime.v1.RuntimeService/SomethingNew", &frame{b: []byte("payload")}, out, grpc.ForceCodec(rawCodec{}))
	if err != nil || string(out.b) != "echo:payload" {
		t.Fatalf("unknown method: %q, %v; want echo:payload", out.b, err)
	}
}

func TestPausedGateHoldsStartsAndCriticalPasses(t *testing.T) {
	cl := DefaultClassifier()
	cl.CriticalNamespaces = append(cl.CriticalNamespaces, "infra")
	e := newEnv(t, nil, openPolicy(4), func(c *Config) { c.Classifier = cl })
	e.gate.Pause()
	ctx := context.Background()

	errc := make(chan error, 1)
	go func() {
		_, err := e.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sandbox("default", "web-0", nil)})
		errc <- err
	}()
	waitUntil(t, "the sandbox to queue", func() bool { return e.gate.Status().Queued == 1 })
	if q := e.gate.Queue(); q[0].Tenant != "default" || q[0].Description != "start pod default/web-0" || q[0].Class != admission.Normal {
		t.Fatalf("queued %+v, want a normal start of default/web-0", q[0])
	}
	if n := e.fake.count("RunPodSandbox"); n != 0 {
		t.Fatalf("RunPodSandbox reached containerd %d times through a paused gate", n)
	}

	// kube-system, static pods and the annotation (where it may pick
	// critical) bypass the gate.
	for _, sb := range []*runtimeapi.PodSandboxConfig{
		sandbox("kube-system", "coredns", nil),
		sandbox("default", "static", map[string]string{"kubernetes.io/config.source": "file"}),
		sandbox("infra", "vip", map[string]string{"startgate.io/class": "critical"}),
	} {
		if _, err := e.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sb}); err != nil {
			t.Fatalf("critical RunPodSandbox %s/%s: %v", sb.Metadata.Namespace, sb.Metadata.Name, err)
		}
	}
	if n := e.fake.count("RunPodSandbox"); n != 3 {
		t.Fatalf("RunPodSandbox reached containerd %d times, want the 3 critical ones", n)
	}
	e.gate.Resume()
	if err := <-errc; err != nil {
		t.Fatalf("RunPodSandbox after resume: %v", err)
	}
	// Each pod holds its slot until its containers have warmed up or it
	// is stopped.
	if st := e.gate.Status(); st.InFlight != 4 {
		t.Fatalf("in flight after four pods started = %d, want 4", st.InFlight)
	}
	for _, name := range []string{"web-0", "coredns", "static", "vip"} {
		if _, err := e.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: "sb-" + name}); err != nil {
			t.Fatalf("StopPodSandbox: %v", err)
		}
	}
	if st := e.gate.Status(); st.InFlight != 0 {
		t.Fatalf("in flight after the pods stopped = %d, want 0", st.InFlight)
	}
}

func TestGivingUpWhileQueuedIsNeverForwarded(t *testing.T) {
	e := newEnv(t, nil, openPolicy(4))
	e.gate.Pause()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := e.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: "sb",
			Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "app"}}, SandboxConfig: sandbox("default", "web-0", nil)})
		errc <- err
	}()
	waitUntil(t, "the create to queue", func() bool { return e.gate.Status().Queued == 1 })
	cancel()
	if err := <-errc; status.Code(err) != codes.Canceled {
		t.Fatalf("cancelled CreateContainer = %v, want Canceled", err)
	}
	waitUntil(t, "the queue to empty", func() bool { return e.gate.Status().Queued == 0 })
	e.gate.Resume()
	if n := e.fake.count("CreateContainer"); n != 0 {
		t.Fatalf("a withdrawn CreateContainer reached containerd %d times", n)
	}
}

func TestContainerSlotHeldUntilWarmupSettles(t *testing.T) {
	e := newEnv(t, nil, openPolicy(4))
	ctx := context.Background()
	e.fake.burn(time.Second)
	c, err := e.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: "sb",
		Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "app"}}, SandboxConfig: sandbox("default", "web-0", nil)})
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	if got := e.gate.Status().InFlight; got != 1 {
		t.Fatalf("in flight after CreateContainer = %d, want 1 (held for the warm-up)", got)
	}
	// The container burns a core from its start: still warming. Its
	// counter grows with wall time, so a busy machine that schedules this
	// test late does not make it look idle. (Turned on after
	// StartContainer, two polls could fall between the two on a loaded
	// machine and read it idle.)
	e.fake.setBusy(true)
	if _, err := e.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId}); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
	for i := 0; i < 20; i++ { // well over SettlePolls polls
		time.Sleep(5 * time.Millisecond)
		if got := e.gate.Status().InFlight; got != 1 {
			t.Fatalf("slot released while the container still burns CPU (in flight %d)", got)
		}
	}
	e.fake.setBusy(false)
	waitUntil(t, "the slot to be released once CPU use settles", func() bool { return e.gate.Status().InFlight == 0 })
	if c := e.gate.Status().Counters; c.Expired != 0 {
		t.Fatalf("the slot expired (%d) instead of being released at settling", c.Expired)
	}
}

func TestConcurrentPullsOfOneImageCollapse(t *testing.T) {
	e := newEnv(t, nil, openPolicy(4))
	ctx := context.Background()
	const n = 5
	var wg sync.WaitGroup
	refs := make([]string, n)
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r, err := e.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "app:1"}})
			refs[i], errs[i] = r.GetImageRef(), err
		}(i)
	}
	waitUntil(t, "the first pull to reach containerd", func() bool { return e.fake.pullCalls.Load() >= 1 })
	// Give the other callers time to join the pull in flight; they must
	// not reach containerd.
	time.Sleep(50 * time.Millisecond)
	close(e.fake.pullGate)
	wg.Wait()
	for i := range errs {
		if errs[i] != nil || refs[i] != "sha256:app:1" {
			t.Fatalf("pull %d = %q, %v; want sha256:app:1", i, refs[i], errs[i])
		}
	}
	if got := e.fake.pullCalls.Load(); got != 1 {
		t.Fatalf("containerd saw %d pulls for %d concurrent callers of one image, want 1", got, n)
	}
}

// fakePrefetch holds Join until release is closed and records Pulled.
type fakePrefetch struct {
	release chan struct{}
	joinErr error
	mu      sync.Mutex
	joins   []string
	pulled  [][2]string
	moved   bool
}

func (f *fakePrefetch) Join(ctx context.Context, ref string) (bool, error) {
	f.mu.Lock()
	f.joins = append(f.joins, ref)
	f.mu.Unlock()
	select {
	case <-f.release:
		return true, f.joinErr
	case <-ctx.Done():
		return true, ctx.Err()
	}
}

func (f *fakePrefetch) Pulled(_ context.Context, ref, imageID string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pulled = append(f.pulled, [2]string{ref, imageID})
	return true
}

func (f *fakePrefetch) Moved(string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.moved
}

func (f *fakePrefetch) snapshot() (joins []string, pulled [][2]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.joins...), append([][2]string(nil), f.pulled...)
}

// A pull of an image being prefetched waits for that fetch before it
// reaches containerd, and containerd's answer is reported back, whether
// the fetch ended well or not (a failed fetch still lets the pull go).
func TestPullJoinsPrefetch(t *testing.T) {
	for _, joinErr := range []error{nil, errors.New("registry answered 500")} {
		pf := &fakePrefetch{release: make(chan struct{}), joinErr: joinErr}
		e := newEnv(t, nil, openPolicy(4), func(c *Config) { c.Prefetch = pf })
		close(e.fake.pullGate)
		done := make(chan error, 1)
		go func() {
			r, err := e.img.PullImage(context.Background(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "app:1"}})
			if err == nil && r.GetImageRef() != "sha256:app:1" {
				err = errors.New("image ref " + r.GetImageRef())
			}
			done <- err
		}()
		waitUntil(t, "the pull to join the prefetch", func() bool { j, _ := pf.snapshot(); return len(j) == 1 })
		time.Sleep(20 * time.Millisecond)
		if n := e.fake.pullCalls.Load(); n != 0 {
			t.Fatalf("containerd saw %d pulls while the prefetch it joined was running, want 0", n)
		}
		close(pf.release)
		if err := <-done; err != nil {
			t.Fatalf("PullImage after the join (fetch error %v): %v", joinErr, err)
		}
		joins, pulled := pf.snapshot()
		if joins[0] != "app:1" || len(pulled) != 1 || pulled[0] != [2]string{"app:1", "sha256:app:1"} {
			t.Fatalf("joins %q, pulled %q; want one join of app:1 and Pulled(app:1, sha256:app:1)", joins, pulled)
		}
	}
}

func TestContainerdDownThenBack(t *testing.T) {
	e := newEnv(t, nil, openPolicy(4))
	ctx := context.Background()
	if _, err := e.rt.Version(ctx, &runtimeapi.VersionRequest{}); err != nil {
		t.Fatalf("Version: %v", err)
	}
	e.stopUp()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := e.rt.Version(cctx, &runtimeapi.VersionRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Version with containerd down = %v, want Unavailable", err)
	}
	e.fake.pullGate = make(chan struct{})
	e.stopUp = serveFake(t, e.upSock, e.fake)
	waitUntil(t, "the proxy to reconnect", func() bool {
		_, err := e.rt.Version(ctx, &runtimeapi.VersionRequest{})
		return err == nil
	})
}

func TestFailOpen(t *testing.T) {
	t.Run("bypass", func(t *testing.T) {
		e := newEnv(t, nil, openPolicy(4))
		e.gate.Pause()
		e.gate.SetBypass(true)
		if _, err := e.rt.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{Config: sandbox("default", "a", nil)}); err != nil {
			t.Fatalf("RunPodSandbox with bypass on: %v", err)
		}
		if got := e.observe.get("bypass"); got != 1 {
			t.Fatalf("fail-open bypass count = %d, want 1", got)
		}
	})
	t.Run("gate closed", func(t *testing.T) {
		e := newEnv(t, nil, openPolicy(4))
		e.gate.Close()
		if _, err := e.rt.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{Config: sandbox("default", "a", nil)}); err != nil {
			t.Fatalf("RunPodSandbox with the gate closed: %v", err)
		}
		if got := e.observe.get("gate-error"); got != 1 {
			t.Fatalf("fail-open gate-error count = %d, want 1", got)
		}
	})
	t.Run("gate stuck", func(t *testing.T) {
		g := &stuckGate{release: make(chan struct{})}
		e := newEnv(t, g, admission.Policy{})
		defer close(g.release)
		if _, err := e.rt.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{Config: sandbox("default", "a", nil)}); err != nil {
			t.Fatalf("RunPodSandbox with the gate stuck: %v", err)
		}
		if got := e.observe.get("gate-stuck"); got != 1 {
			t.Fatalf("fail-open gate-stuck count = %d, want 1", got)
		}
	})
}

// TestCriticalAnnotationNotHonoured: a pod outside the allowed namespaces
// that asks for critical by annotation waits in the gate like any other
// (here: behind a paused gate, where critical would bypass), and the
// proxy says so once for the pod, not once per start.
func TestCriticalAnnotationNotHonoured(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	e := newEnv(t, nil, openPolicy(4), func(c *Config) { c.Logger = zap.New(core) })
	ann := map[string]string{"startgate.io/class": "critical"}
	e.gate.Pause()
	// Well beyond the deadline margin, which admits even a paused gate.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := e.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sandbox("default", "web", ann)})
		done <- err
	}()
	waitUntil(t, "the sandbox to queue", func() bool { return e.gate.Status().Queued == 1 })
	e.gate.Resume()
	if err := <-done; err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	for _, name := range []string{"a", "b"} {
		c, err := e.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: "sb-web",
			Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: name}}, SandboxConfig: sandbox("default", "web", ann)})
		if err != nil {
			t.Fatalf("CreateContainer %s: %v", name, err)
		}
		if _, err := e.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId}); err != nil {
			t.Fatalf("StartContainer %s: %v", name, err)
		}
	}
	said := logs.FilterMessage("pod's class annotation not honoured").All()
	if len(said) != 1 {
		t.Fatalf("%d warnings for the pod, want 1", len(said))
	}
	if r := said[0].ContextMap()["reason"]; !strings.Contains(fmt.Sprint(r), "kube-system") {
		t.Errorf("warning's reason = %v, want it to name the allowed namespaces", r)
	}
	for _, l := range logs.FilterMessage("start admitted").All() {
		if cls := l.ContextMap()["class"]; fmt.Sprint(cls) != "normal" {
			t.Errorf("start admitted as %v, want normal", cls)
		}
	}
}

// stuckGate never answers and says it is not alive.
type stuckGate struct{ release chan struct{} }

func (g *stuckGate) Acquire(ctx context.Context, _ admission.Request) (*admission.Lease, error) {
	<-g.release
	return nil, errors.New("stuck gate released")
}
func (g *stuckGate) Restore(admission.Request) (*admission.Lease, error) {
	<-g.release
	return nil, errors.New("stuck gate released")
}
func (*stuckGate) Bypassed() bool       { return false }
func (*stuckGate) Alive(time.Time) bool { return false }

func TestClassifier(t *testing.T) {
	c := DefaultClassifier()
	tests := []struct {
		sb   *runtimeapi.PodSandboxConfig
		want admission.Class
	}{
		{sandbox("default", "web", nil), admission.Normal},
		{sandbox("kube-system", "dns", nil), admission.Critical},
		{sandbox("default", "mirror", map[string]string{"kubernetes.io/config.source": "file"}), admission.Critical},
		{sandbox("default", "api", map[string]string{"kubernetes.io/config.source": "api"}), admission.Normal},
		{&runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Namespace: "monitoring", Name: "node-exporter"},
			Labels: map[string]string{"pod-template-generation": "3"}}, admission.High},
		{sandbox("batch", "job", map[string]string{"startgate.io/class": "background"}), admission.Background},
		{sandbox("kube-system", "x", map[string]string{"startgate.io/class": "low"}), admission.Low},
		{sandbox("default", "typo", map[string]string{"startgate.io/class": "urgent"}), admission.Normal},
	}
	for _, tt := range tests {
		got := c.Classify(tt.sb)
		if got.Class != tt.want || got.Tenant != tt.sb.Metadata.Namespace || got.Refused != "" {
			t.Errorf("Classify(%s/%s %v %v) = %+v; want %s, %q, nothing refused", tt.sb.Metadata.Namespace, tt.sb.Metadata.Name,
				tt.sb.Labels, tt.sb.Annotations, got, tt.want, tt.sb.Metadata.Namespace)
		}
	}
	// critical by annotation: kube-system only, by default; elsewhere the
	// rules decide and the refusal is said.
	for _, tt := range []struct {
		sb      *runtimeapi.PodSandboxConfig
		want    admission.Class
		refused bool
	}{
		{sandbox("kube-system", "x", map[string]string{"startgate.io/class": "critical"}), admission.Critical, false},
		{sandbox("default", "x", map[string]string{"startgate.io/class": "critical"}), admission.Normal, true},
		{&runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Namespace: "monitoring", Name: "ds"},
			Labels: map[string]string{"pod-template-generation": "3"}, Annotations: map[string]string{"startgate.io/class": "CRITICAL"}}, admission.High, true},
		{sandbox("default", "x", map[string]string{"startgate.io/class": "high"}), admission.High, false},
	} {
		got := c.Classify(tt.sb)
		if got.Class != tt.want || (got.Refused != "") != tt.refused {
			t.Errorf("Classify(%s/%s %v) = %+v; want %s, refused %v", tt.sb.Metadata.Namespace, tt.sb.Metadata.Name, tt.sb.Annotations, got, tt.want, tt.refused)
		}
		if tt.refused && !strings.Contains(got.Refused, "cri.critical_annotation_namespaces") {
			t.Errorf("Refused = %q, want it to name cri.critical_annotation_namespaces", got.Refused)
		}
	}
	c.CriticalNamespaces = []string{"infra"}
	if got := c.Classify(sandbox("infra", "x", map[string]string{"startgate.io/class": "critical"})); got.Class != admission.Critical {
		t.Errorf("Classify(infra/x critical) with infra allowed = %+v, want critical", got)
	}
	if got := c.Classify(sandbox("kube-system", "x", map[string]string{"startgate.io/class": "critical"})); got.Refused == "" {
		t.Errorf("Classify(kube-system/x critical) with only infra allowed = %+v, want refused (the rules still make it critical)", got)
	}
	bad := &Classifier{Rules: []Rule{{Class: admission.High}}}
	if err := bad.Validate(); err == nil {
		t.Fatalf("Validate of a rule that matches nothing = nil, want an error")
	}
}

// A container created and removed without being started gives its slot
// back at once.
func TestRemovedBeforeStartReleasesSlot(t *testing.T) {
	e := newEnv(t, nil, openPolicy(4))
	ctx := context.Background()
	c, err := e.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: "sb",
		Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "app"}}, SandboxConfig: sandbox("default", "web-0", nil)})
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	if got := e.gate.Status().InFlight; got != 1 {
		t.Fatalf("in flight after CreateContainer = %d, want 1", got)
	}
	if _, err := e.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: c.ContainerId}); err != nil {
		t.Fatalf("RemoveContainer: %v", err)
	}
	if got := e.gate.Status().InFlight; got != 0 {
		t.Fatalf("in flight after RemoveContainer of a never-started container = %d, want 0", got)
	}
}

// A pod takes one slot: at RunPodSandbox, shared by its containers, given
// back when their warm-up is over.
func TestOneSlotPerPod(t *testing.T) {
	e := newEnv(t, nil, openPolicy(4))
	ctx := context.Background()
	sb, err := e.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sandbox("default", "web-0", nil)})
	if err != nil {
		t.Fatal(err)
	}
	if got := e.gate.Status(); got.InFlight != 1 || got.Counters.Admitted != 1 {
		t.Fatalf("after RunPodSandbox: in flight %d, admitted %d; want 1 and 1", got.InFlight, got.Counters.Admitted)
	}
	var ids []string
	for _, name := range []string{"app", "sidecar"} {
		c, err := e.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.PodSandboxId,
			Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: name}}, SandboxConfig: sandbox("default", "web-0", nil)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, c.ContainerId)
	}
	if got := e.gate.Status(); got.InFlight != 1 || got.Counters.Admitted != 1 {
		t.Fatalf("after two creates in the pod: in flight %d, admitted %d; want the pod's one slot", got.InFlight, got.Counters.Admitted)
	}
	if _, err := e.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ids[0]}); err != nil {
		t.Fatal(err)
	}
	// The sidecar is created, not started: the slot waits for it.
	time.Sleep(50 * time.Millisecond) // ten warm-up polls: the app settles
	if got := e.gate.Status().InFlight; got != 1 {
		t.Fatalf("in flight with the sidecar not started = %d, want 1", got)
	}
	if _, err := e.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ids[1]}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the pod's slot to be released once both settle", func() bool { return e.gate.Status().InFlight == 0 })
}
