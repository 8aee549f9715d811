package criproxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// PullPolicy sizes the image pull lane.
type PullPolicy struct {
	// Min and Max bound the pulls in flight node-wide.
	Min, Max int
	// IOTarget: above this IO stall fraction the lane shrinks by one pull
	// per Interval; below it, it grows by one while pulls wait.
	IOTarget float64
	Interval time.Duration
}

// DefaultPullPolicy: kubelet pulls one image at a time by default; up to
// three in flight overlaps network and unpack without letting pulls
// saturate the disk, and IO pressure above the gate's default IO target
// narrows the lane.
func DefaultPullPolicy() PullPolicy {
	return PullPolicy{Min: 1, Max: 3, IOTarget: 0.4, Interval: time.Second}
}

func (p PullPolicy) withDefaults() PullPolicy {
	d := DefaultPullPolicy()
	if p.Min <= 0 {
		p.Min = d.Min
	}
	if p.Max < p.Min {
		p.Max = max(p.Min, d.Max)
	}
	if p.IOTarget <= 0 {
		p.IOTarget = d.IOTarget
	}
	if p.Interval <= 0 {
		p.Interval = d.Interval
	}
	return p
}

// pullLane runs image pulls apart from the start gate: pulls are network
// and disk work, and a start must not wait behind another image's pull.
// Concurrent pulls of one reference (with the same credentials) are
// collapsed into one upstream pull whose answer every caller gets.
type pullLane struct {
	pol  PullPolicy
	io   func() float64
	sf   singleflight.Group
	mu   sync.Mutex
	cond *sync.Cond
	// guarded by mu
	limit, inFlight, waiting int
}

func newPullLane(pol PullPolicy, io func() float64) *pullLane {
	l := &pullLane{pol: pol, io: io, limit: pol.Max}
	l.cond = sync.NewCond(&l.mu)
	return l
}

// run resizes the lane from IO pressure until stop closes.
func (l *pullLane) run(stop <-chan struct{}) {
	if l.io == nil {
		<-stop
		return
	}
	t := time.NewTicker(l.pol.Interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			io := l.io()
			l.mu.Lock()
			switch {
			case io > l.pol.IOTarget:
				l.limit = max(l.pol.Min, l.limit-1)
			case l.waiting > 0:
				l.limit = min(l.pol.Max, l.limit+1)
			}
			l.cond.Broadcast()
			l.mu.Unlock()
		}
	}
}

// Limit is the lane's current size.
func (l *pullLane) Limit() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.limit
}

// acquire waits for room in the lane or for ctx to end.
func (l *pullLane) acquire(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		l.mu.Lock()
		l.cond.Broadcast()
		l.mu.Unlock()
	})
	defer stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.waiting++
	defer func() { l.waiting-- }()
	for l.inFlight >= l.limit {
		if err := ctx.Err(); err != nil {
			return err
		}
		l.cond.Wait()
	}
	l.inFlight++
	return nil
}

func (l *pullLane) release() {
	l.mu.Lock()
	l.inFlight--
	l.cond.Broadcast()
	l.mu.Unlock()
}

type pullResult struct {
	out             *frame
	header, trailer metadata.MD
}

// forwardPull collapses and throttles PullImage. The upstream pull runs
// detached from any one caller: if the first caller gives up, the others
// (and the node, which is about to use the image) still get it. It keeps
// the first caller's deadline, if it had one.
func (p *Proxy) forwardPull(ss grpc.ServerStream, method string) error {
	ctx := ss.Context()
	in := new(frame)
	if err := ss.RecvMsg(in); err != nil {
		return err
	}
	req := new(runtimeapi.PullImageRequest)
	if err := proto.Unmarshal(in.b, req); err != nil {
		return status.Errorf(codes.InvalidArgument, "criproxy: decode PullImageRequest: %v", err)
	}
	key := pullKey(req)
	// Each caller waits on the shared pull from a goroutine the proxy owns,
	// so a caller that leaves does not leave it behind unowned.
	ch := make(chan pullOutcome, 1)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		v, err, _ := p.pulls.sf.Do(key, func() (any, error) { return p.pull(ctx, method, in, req) })
		r, _ := v.(pullResult)
		ch <- pullOutcome{r, err}
	}()
	select {
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case o := <-ch:
		if len(o.r.header) > 0 {
			_ = ss.SetHeader(o.r.header)
		}
		if len(o.r.trailer) > 0 {
			ss.SetTrailer(o.r.trailer)
		}
		if o.err != nil {
			return o.err
		}
		return ss.SendMsg(o.r.out)
	}
}

type pullOutcome struct {
	r   pullResult
	err error
}

// pull is the one upstream pull of a collapsed group. It is detached from
// the caller who started it, keeping only its deadline, and ends when the
// proxy stops.
//
// With prefetch on, it first joins a prefetch of the same image that is
// pending or running, so the pull then finds every blob local instead of
// fetching the same layers a second time; whatever the prefetch's outcome,
// the pull goes on (it fetches what is still missing). After a pull that
// succeeded, the prefetch manager hears of it: that is how it counts hits
// and gives up its lease on content the CRI's image record now holds.
func (p *Proxy) pull(ctx context.Context, method string, in *frame, req *runtimeapi.PullImageRequest) (pullResult, error) {
	pctx, cancel := context.WithCancel(context.WithoutCancel(outgoing(ctx)))
	defer cancel()
	if d, ok := ctx.Deadline(); ok {
		pctx, cancel = context.WithDeadline(pctx, d)
		defer cancel()
	}
	stop := context.AfterFunc(p.stopCtx, cancel)
	defer stop()
	image := req.GetImage().GetImage()
	pf := p.cfg.Prefetch
	if pf != nil && image != "" {
		joined, err := pf.Join(pctx, image)
		switch {
		case joined && err != nil:
			p.log.Info("pull joined a prefetch that failed; pulling", zap.String("image", image), zap.Error(err))
		case joined:
			p.log.Info("pull joined a prefetch", zap.String("image", image))
		}
	}
	if err := p.pulls.acquire(pctx); err != nil {
		return pullResult{}, status.FromContextError(err).Err()
	}
	defer p.pulls.release()
	r := pullResult{out: new(frame)}
	err := p.upstream.Invoke(pctx, method, in, r.out, grpc.ForceCodec(rawCodec{}), grpc.Header(&r.header), grpc.Trailer(&r.trailer))
	p.obs.Forwarded(method, codeOf(err))
	if err == nil && pf != nil && image != "" {
		resp := new(runtimeapi.PullImageResponse)
		if uerr := proto.Unmarshal(r.out.b, resp); uerr == nil && resp.ImageRef != "" && pf.Pulled(pctx, image, resp.ImageRef) {
			p.log.Info("pull served from prefetched content", zap.String("image", image), zap.String("image_id", resp.ImageRef))
		}
	}
	return r, err
}

// pullKey identifies a pull: the image and the credentials it is pulled
// with, so callers with different secrets never share a result.
func pullKey(req *runtimeapi.PullImageRequest) string {
	h := sha256.New()
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(req.GetImage())
	h.Write(b)
	h.Write([]byte{0})
	b, _ = proto.MarshalOptions{Deterministic: true}.Marshal(req.GetAuth())
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

func codeOf(err error) string { return status.Code(err).String() }
