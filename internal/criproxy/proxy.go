package criproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/lru"

	"github.com/startgate/startgate/internal/admission"
)

// Gate is what the proxy needs of admission; *admission.Gate implements
// it.
type Gate interface {
	Acquire(ctx context.Context, req admission.Request) (*admission.Lease, error)
	// Restore grants a slot at once, whatever the limits (Proxy.Restore).
	Restore(req admission.Request) (*admission.Lease, error)
	// Bypassed reports whether an operator turned the gate off
	// (startgatectl bypass on); it must not block.
	Bypassed() bool
	// Alive reports whether the controller ticked recently; it must not
	// block, so it answers even when the gate is wedged.
	Alive(now time.Time) bool
}

var _ Gate = (*admission.Gate)(nil)

// Observer counts what the proxy does besides admission itself; the
// metrics package implements it.
type Observer interface {
	// FailOpen: a gated call passed without a slot; reason is "bypass",
	// "gate-stuck", "gate-error" or "gate-panic".
	FailOpen(method, reason string)
	// Forwarded: a call went to containerd, with its gRPC code and the
	// time containerd took; took is negative for a stream, whose length
	// is the caller's, not containerd's.
	Forwarded(method, code string, took time.Duration)
	// GateWait: a gated call spent took in admission (waiting for a slot,
	// or deciding to pass without one), whatever came of it.
	GateWait(method string, took time.Duration)
	// PodGone: a start was not forwarded (it left the gate's queue, or
	// never joined it) because the API says its pod is gone; reason is
	// "deleted", "terminating" or "finished".
	PodGone(method, reason string)
	// PullShared: a PullImage was answered with a recent pull's
	// resolution, without asking the registry (PullPolicy.ShareWindow).
	PullShared(method string)
}

type nopObserver struct{}

func (nopObserver) FailOpen(string, string)                 {}
func (nopObserver) Forwarded(string, string, time.Duration) {}
func (nopObserver) GateWait(string, time.Duration)          {}
func (nopObserver) PodGone(string, string)                  {}
func (nopObserver) PullShared(string)                       {}

// Config wires a Proxy.
type Config struct {
	// Upstream is containerd's CRI socket path.
	Upstream   string
	Gate       Gate
	Logger     *zap.Logger
	Classifier *Classifier
	Warmup     WarmupPolicy
	Pulls      PullPolicy
	Observer   Observer
	// IOPressure returns the node's smoothed IO stall fraction; it sizes
	// the image pull lane. Nil keeps the lane at its maximum.
	IOPressure func() float64
	// Prefetch, when set, lets a PullImage join a prefetch of the same
	// image and hears of every pull that succeeded; nil means none.
	Prefetch Prefetch
	// Pods, when set, is the API server's view of the node's pods: starts
	// of deleted pods are cancelled, and a probed pod's warm-up ends when
	// it reports Ready. Nil means the CRI alone (no API access).
	Pods PodView
	// Events, with HeldEventAfter above zero and Explain, tells a pod's
	// owner why its start waits: see held.go.
	Events         EventSink
	HeldEventAfter time.Duration
	// Explain phrases why the queued requests with these descriptions
	// wait, by description (admission.Gate.Explain); one no longer queued
	// is left out.
	Explain func(descriptions ...string) map[string]string
}

// Prefetch is what the proxy needs of the prefetch manager;
// *prefetch.Manager implements it.
type Prefetch interface {
	// Join waits for a prefetch of ref that is pending or running, making
	// a pending one start now; it reports false at once when there is
	// none. Its error is the fetch's (or ctx's).
	Join(ctx context.Context, ref string) (joined bool, err error)
	// Pulled tells the manager the CRI pulled ref as imageID (the
	// response's image_ref); it reports whether prefetched content
	// served the pull. It must not block for long.
	Pulled(ctx context.Context, ref, imageID string) (hit bool)
	// Moved reports whether the manager knows ref's tag points at a
	// digest the node has not pulled yet (a prefetch pending, running
	// or done): a shared pull answer for ref is stale then.
	Moved(ref string) bool
}

// Proxy serves the CRI on its own socket and forwards every call to
// containerd, gating the ones that start things.
type Proxy struct {
	cfg      Config
	log      *zap.Logger
	obs      Observer
	upstream *grpc.ClientConn
	runtime  runtimeapi.RuntimeServiceClient
	srv      *grpc.Server
	warm     *warmer
	pulls    *pullLane
	waiting  waiters
	// classifier is cfg.Classifier until a reload replaces it
	// (SetClassifier); starts read it once each.
	classifier atomic.Pointer[Classifier]
	// refused holds the uids of pods already told that their class
	// annotation was not honoured, so that it is said once per pod, not
	// once per container; bounded, oldest forgotten first.
	refusedMu sync.Mutex
	refused   *lru.Cache

	// unary holds the full names of the CRI's unary methods, which are
	// forwarded with one Invoke; everything else goes through the
	// generic stream forwarder.
	unary map[string]bool

	// stuckCheck is how often a waiting start looks whether the gate is
	// still alive.
	stuckCheck time.Duration

	// wg owns the goroutines the proxy starts (warm-up watchers, the
	// pull lane's sizing loop).
	wg sync.WaitGroup
	// stopCtx ends at Stop; stopCh is its Done channel.
	stopCtx  context.Context
	stopCh   <-chan struct{}
	stopFunc context.CancelFunc
}

// refusedPods bounds Proxy.refused.
const refusedPods = 4096

// New connects lazily to containerd: the proxy serves, answering
// Unavailable, while containerd is not there, and reconnects by itself
// when it comes.
func New(cfg Config) (*Proxy, error) {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	if cfg.Classifier == nil {
		cfg.Classifier = DefaultClassifier()
	}
	if err := cfg.Classifier.Validate(); err != nil {
		return nil, err
	}
	cfg.Warmup = cfg.Warmup.withDefaults()
	cfg.Pulls = cfg.Pulls.withDefaults()
	conn, err := grpc.NewClient("unix://"+cfg.Upstream,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// containerd restarting should be noticed within a second, not
		// after grpc's default backoff of up to two minutes.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 2 * time.Second,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsgSize), grpc.MaxCallSendMsgSize(maxMsgSize)),
	)
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		cfg:        cfg,
		log:        cfg.Logger,
		obs:        cfg.Observer,
		upstream:   conn,
		runtime:    runtimeapi.NewRuntimeServiceClient(conn),
		unary:      unaryMethods(),
		stuckCheck: time.Second,
		refused:    lru.New(refusedPods),
	}
	p.classifier.Store(cfg.Classifier)
	p.stopCtx, p.stopFunc = context.WithCancel(context.Background())
	p.stopCh = p.stopCtx.Done()
	p.warm = newWarmer(p)
	p.pulls = newPullLane(cfg.Pulls, cfg.IOPressure)
	// The lane's sizing loop starts here, not in Serve, so that Stop's
	// wait never races its Add.
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.pulls.run(p.stopCh)
	}()
	if cfg.Events != nil && cfg.HeldEventAfter > 0 && cfg.Explain != nil {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.reportHeld(p.stopCh)
		}()
	}
	p.srv = grpc.NewServer(
		grpc.ForceServerCodec(rawCodec{}),
		grpc.NumStreamWorkers(uint32(runtime.NumCPU())),
		grpc.UnknownServiceHandler(p.handle),
		grpc.MaxRecvMsgSize(maxMsgSize), grpc.MaxSendMsgSize(maxMsgSize),
	)
	return p, nil
}

// SetClassifier replaces the rules that pick a start's class, for a
// config reload; starts already classified keep their class.
func (p *Proxy) SetClassifier(c *Classifier) error {
	if err := c.Validate(); err != nil {
		return err
	}
	p.classifier.Store(c)
	return nil
}

// maxMsgSize matches kubelet's CRI client (16 MiB).
const maxMsgSize = 16 * 1024 * 1024

func unaryMethods() map[string]bool {
	m := map[string]bool{}
	for _, d := range []grpc.ServiceDesc{runtimeapi.RuntimeService_ServiceDesc, runtimeapi.ImageService_ServiceDesc} {
		for _, md := range d.Methods {
			m["/"+d.ServiceName+"/"+md.MethodName] = true
		}
	}
	return m
}

// Serve serves the CRI on lis until Stop.
func (p *Proxy) Serve(lis net.Listener) error {
	return p.srv.Serve(lis)
}

// Stop stops serving, gracefully until ctx ends, then ends the watchers
// (their slots are released) and closes the upstream connection.
func (p *Proxy) Stop(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		p.srv.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		p.srv.Stop()
		<-done
	}
	p.stopFunc()
	p.wg.Wait()
	p.warm.releaseAll()
	p.upstream.Close()
}

// handle is every CRI call's entry: one wrapper per call family.
func (p *Proxy) handle(_ any, ss grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(ss)
	switch method {
	case methodRunPodSandbox, methodCreateContainer, methodStartContainer:
		return p.forwardStart(ss, method)
	case methodPullImage:
		if !p.cfg.Pulls.Passthrough {
			return p.forwardPull(ss, method)
		}
	case methodStopContainer, methodRemoveContainer, methodStopPodSandbox, methodRemovePodSandbox:
		return p.forwardEnd(ss, method)
	}
	if p.unary[method] {
		in := new(frame)
		if err := ss.RecvMsg(in); err != nil {
			return err
		}
		out, err := p.invoke(ss, method, in)
		if err != nil {
			return err
		}
		return ss.SendMsg(out)
	}
	return p.forwardStream(ss, method)
}

// outgoing carries the caller's metadata and deadline upstream.
func outgoing(ctx context.Context) context.Context {
	md, _ := metadata.FromIncomingContext(ctx)
	return metadata.NewOutgoingContext(ctx, md.Copy())
}

// invoke forwards one unary call and relays containerd's header and
// trailer; its error is containerd's status, unchanged.
func (p *Proxy) invoke(ss grpc.ServerStream, method string, in *frame) (*frame, error) {
	var header, trailer metadata.MD
	out := new(frame)
	began := time.Now()
	err := p.upstream.Invoke(outgoing(ss.Context()), method, in, out,
		grpc.ForceCodec(rawCodec{}), grpc.Header(&header), grpc.Trailer(&trailer))
	took := time.Since(began)
	if len(header) > 0 {
		_ = ss.SetHeader(header)
	}
	if len(trailer) > 0 {
		ss.SetTrailer(trailer)
	}
	p.obs.Forwarded(method, codeOf(err), took)
	return out, err
}

var streamDesc = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

// forwardStream forwards a streaming call, or a method this build does not
// know, as raw frames in both directions.
func (p *Proxy) forwardStream(ss grpc.ServerStream, method string) error {
	ctx, cancel := context.WithCancel(outgoing(ss.Context()))
	defer cancel()
	cs, err := p.upstream.NewStream(ctx, streamDesc, method, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		p.obs.Forwarded(method, codeOf(err), -1)
		return err
	}
	// Caller to containerd. The goroutine ends when the caller closes its
	// side or the call ends (ss's context is cancelled once the handler
	// returns, which a bidirectional caller may wait for); p.wg owns it.
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			f := new(frame)
			if err := ss.RecvMsg(f); err != nil {
				if errors.Is(err, io.EOF) {
					_ = cs.CloseSend()
				}
				return
			}
			if err := cs.SendMsg(f); err != nil {
				return
			}
		}
	}()
	// containerd to caller.
	first := true
	for {
		f := new(frame)
		err := cs.RecvMsg(f)
		if first {
			first = false
			if h, herr := cs.Header(); herr == nil && len(h) > 0 {
				_ = ss.SendHeader(h)
			}
		}
		if err != nil {
			ss.SetTrailer(cs.Trailer())
			if errors.Is(err, io.EOF) {
				err = nil
			}
			p.obs.Forwarded(method, codeOf(err), -1)
			return err
		}
		if err := ss.SendMsg(f); err != nil {
			return err
		}
	}
}
