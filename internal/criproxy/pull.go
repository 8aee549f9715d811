package criproxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
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
	// Passthrough forwards PullImage to the runtime as kubelet sent it,
	// like any other image call: no lane, no shared resolutions, no join
	// of a running prefetch (a prefetched image is still found local, so
	// the pull moves no layer). For a node whose kubelet already paces
	// its pulls (maxParallelImagePulls, registryPullQPS) as its operator
	// wants, and for measuring the gate without the pull path.
	Passthrough bool
	// Min and Max bound the pulls in flight node-wide.
	Min, Max int
	// IOTarget: above this IO stall fraction the lane shrinks by one pull
	// per Interval; below it, it grows by one while pulls wait.
	IOTarget float64
	Interval time.Duration
	// ShareWindow: a PullImage for a pod of a controller generation (one
	// ReplicaSet, one StatefulSet or DaemonSet revision, one Job) whose
	// reference a pull for a pod of the same generation (with the same
	// credentials) resolved at the registry less than ShareWindow ago is
	// answered with that pull's image at once, if containerd still holds
	// it under the reference (a local ImageStatus) and the prefetch
	// manager knows of no newer digest. 0 turns sharing off; negative
	// means the default.
	//
	// This is what keeps a burst from queueing on round trips that move
	// no byte: with imagePullPolicy Always kubelet pulls for every pod,
	// one pull at a time by default, and each pull re-resolves the tag
	// (with a token first, at a public registry: five round trips or so,
	// 100 ms at 20 ms). The trade is freshness, and it is bounded to one
	// generation: a rollout makes a new generation, so a tag pushed and
	// then rolled out is always seen (the rollout's first pull resolves
	// afresh); a tag pushed while one generation's pods are being created
	// reaches the pods of that generation created within ShareWindow of
	// its first pull only once the window has passed, so those run the
	// digest their siblings run (up to ShareWindow older than the
	// registry's). A prefetch that noticed the new digest (the registry's
	// notification, or its own resolve) ends the sharing at once.
	ShareWindow time.Duration
}

// MaxShareWindow bounds PullPolicy.ShareWindow: past a few minutes a
// shared answer is not a burst's any more but a cache that hides pushes.
const MaxShareWindow = 5 * time.Minute

// DefaultPullPolicy: kubelet pulls one image at a time by default; up to
// three in flight overlaps network and unpack without letting pulls
// saturate the disk, and IO pressure above the gate's default IO target
// narrows the lane. Pulls share a resolution for 5 s: long enough that a
// burst's pulls (kubelet pulls in SyncPod, as each admitted sandbox
// comes up) cost one round trip chain every few seconds instead of one
// per pod, short enough that a generation's pods created after a push
// see it within seconds.
func DefaultPullPolicy() PullPolicy {
	return PullPolicy{Min: 1, Max: 3, IOTarget: 0.4, Interval: time.Second, ShareWindow: 5 * time.Second}
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
	if p.ShareWindow < 0 {
		p.ShareWindow = d.ShareWindow
	}
	p.ShareWindow = min(p.ShareWindow, MaxShareWindow)
	return p
}

// pullLane runs image pulls apart from the start gate: pulls are network
// and disk work, and a start must not wait behind another image's pull.
// Concurrent pulls of one reference (with the same credentials) are
// collapsed into one upstream pull whose answer every caller gets; later
// ones within the share window get that answer too (shared).
type pullLane struct {
	pol  PullPolicy
	io   func() float64
	sf   singleflight.Group
	mu   sync.Mutex
	cond *sync.Cond
	// guarded by mu
	limit, inFlight, waiting int

	recent struct {
		sync.Mutex // never held with mu
		byKey      map[string]resolution
	}
}

// resolution is a pull's answer, shareable until its window ends.
type resolution struct {
	r       pullResult
	imageID string    // the response's image_ref
	at      time.Time // when the upstream pull began: the resolution is no older
}

// maxRecent bounds the remembered resolutions: a node pulls a few dozen
// images; past this the oldest is forgotten (a pull then resolves).
const maxRecent = 1024

func newPullLane(pol PullPolicy, io func() float64) *pullLane {
	l := &pullLane{pol: pol, io: io, limit: pol.Max}
	l.cond = sync.NewCond(&l.mu)
	l.recent.byKey = map[string]resolution{}
	return l
}

// shared returns the resolution of key still inside the window at now.
func (l *pullLane) shared(key string, now time.Time) (resolution, bool) {
	if l.pol.ShareWindow <= 0 {
		return resolution{}, false
	}
	l.recent.Lock()
	defer l.recent.Unlock()
	r, ok := l.recent.byKey[key]
	if ok && now.Sub(r.at) >= l.pol.ShareWindow {
		delete(l.recent.byKey, key)
		ok = false
	}
	return r, ok
}

// remember keeps a successful pull's answer for the window, dropping
// expired ones (and the oldest, when full).
func (l *pullLane) remember(key string, r resolution) {
	if l.pol.ShareWindow <= 0 || r.imageID == "" {
		return
	}
	l.recent.Lock()
	defer l.recent.Unlock()
	if old, ok := l.recent.byKey[key]; ok && old.at.After(r.at) {
		return // a later resolution landed first
	}
	if len(l.recent.byKey) >= maxRecent {
		oldestKey, oldest := "", r.at
		for k, v := range l.recent.byKey {
			if r.at.Sub(v.at) >= l.pol.ShareWindow {
				delete(l.recent.byKey, k)
			} else if v.at.Before(oldest) {
				oldestKey, oldest = k, v.at
			}
		}
		if len(l.recent.byKey) >= maxRecent {
			delete(l.recent.byKey, oldestKey)
		}
	}
	l.recent.byKey[key] = r
}

// forget drops key's resolution, if it is still r's.
func (l *pullLane) forget(key string, r resolution) {
	l.recent.Lock()
	defer l.recent.Unlock()
	if cur, ok := l.recent.byKey[key]; ok && cur.at.Equal(r.at) {
		delete(l.recent.byKey, key)
	}
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
	gen, ofPod := pullGeneration(req.GetSandboxConfig())
	key := pullKey(req) + "/" + gen
	if r, ok := p.shareable(ctx, key, req, ofPod); ok {
		p.obs.PullShared(method)
		p.log.Debug("pull answered from a recent resolution", zap.String("image", req.GetImage().GetImage()),
			zap.String("image_id", r.imageID), zap.Duration("age", time.Since(r.at)))
		return sendPull(ss, r.r)
	}
	// Each caller waits on the shared pull from a goroutine the proxy owns,
	// so a caller that leaves does not leave it behind unowned.
	ch := make(chan pullOutcome, 1)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		v, err, _ := p.pulls.sf.Do(key, func() (any, error) { return p.pull(ctx, method, key, in, req) })
		r, _ := v.(pullResult)
		ch <- pullOutcome{r, err}
	}()
	select {
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case o := <-ch:
		if o.err != nil {
			setMD(ss, o.r)
			return o.err
		}
		return sendPull(ss, o.r)
	}
}

func setMD(ss grpc.ServerStream, r pullResult) {
	if len(r.header) > 0 {
		_ = ss.SetHeader(r.header)
	}
	if len(r.trailer) > 0 {
		ss.SetTrailer(r.trailer)
	}
}

func sendPull(ss grpc.ServerStream, r pullResult) error {
	setMD(ss, r)
	return ss.SendMsg(r.out)
}

// imageStatusTimeout bounds the local check behind a shared answer; past
// it the pull goes to the registry as usual.
const imageStatusTimeout = 5 * time.Second

// shareable returns a resolution of key that may answer req now: inside
// the share window, no newer digest known to the prefetch manager, and
// containerd still holding that image under req's reference. A
// resolution that fails a check is forgotten.
func (p *Proxy) shareable(ctx context.Context, key string, req *runtimeapi.PullImageRequest, ofPod bool) (resolution, bool) {
	if !ofPod {
		return resolution{}, false
	}
	r, ok := p.pulls.shared(key, time.Now())
	if !ok {
		return r, false
	}
	image := req.GetImage().GetImage()
	if pf := p.cfg.Prefetch; pf != nil && pf.Moved(image) {
		p.pulls.forget(key, r)
		return r, false
	}
	sctx, cancel := context.WithTimeout(ctx, imageStatusTimeout)
	defer cancel()
	st := new(runtimeapi.ImageStatusResponse)
	err := p.upstream.Invoke(sctx, imageStatusMethod, &runtimeapi.ImageStatusRequest{Image: req.GetImage()}, st)
	if err != nil || st.GetImage().GetId() != r.imageID {
		p.pulls.forget(key, r)
		return r, false
	}
	return r, true
}

const imageStatusMethod = "/runtime.v1.ImageService/ImageStatus"

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
// succeeded, its answer is kept for the share window, and the prefetch
// manager hears of it: that is how it counts hits and gives up its lease
// on content the CRI's image record now holds.
func (p *Proxy) pull(ctx context.Context, method, key string, in *frame, req *runtimeapi.PullImageRequest) (pullResult, error) {
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
	began := time.Now()
	err := p.upstream.Invoke(pctx, method, in, r.out, grpc.ForceCodec(rawCodec{}), grpc.Header(&r.header), grpc.Trailer(&r.trailer))
	p.obs.Forwarded(method, codeOf(err), time.Since(began))
	if err != nil {
		return r, err
	}
	resp := new(runtimeapi.PullImageResponse)
	if uerr := proto.Unmarshal(r.out.b, resp); uerr != nil || resp.ImageRef == "" {
		return r, nil // answered as is, never shared
	}
	p.pulls.remember(key, resolution{r: r, imageID: resp.ImageRef, at: began})
	if pf != nil && image != "" && pf.Pulled(pctx, image, resp.ImageRef) {
		p.log.Info("pull served from prefetched content", zap.String("image", image), zap.String("image_id", resp.ImageRef))
	}
	return r, nil
}

// runtimeHandlerAnnotation is the sandbox annotation containerd 1.7
// reads a pull's runtime handler (and so its snapshotter) from; CRI
// v1.29+ carries it in ImageSpec.runtime_handler too.
const runtimeHandlerAnnotation = "io.kubernetes.cri.runtime-handler"

// pullKey identifies a pull by what decides its result: the image, the
// runtime handler it is pulled for and the credentials it is pulled with,
// so callers with different secrets never share a result. Not the
// ImageSpec's annotations: kubelet copies every pod annotation into them,
// its own per-pod kubernetes.io/config.seen among them, so no two pods'
// pulls would ever share; the runtime's answer for a shared pull is
// checked against the caller's own full ImageSpec (ImageStatus) anyway.
func pullKey(req *runtimeapi.PullImageRequest) string {
	h := sha256.New()
	for _, s := range []string{
		req.GetImage().GetImage(),
		req.GetImage().GetUserSpecifiedImage(),
		req.GetImage().GetRuntimeHandler(),
		req.GetSandboxConfig().GetAnnotations()[runtimeHandlerAnnotation],
	} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(req.GetAuth())
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

// Pod labels kubelet copies into every sandbox config (and so into the
// PullImage it makes for the pod) that name the controller generation a
// pod belongs to: pods of one generation were created from one template
// by one rollout step.
var generationLabels = []string{
	"pod-template-hash",                  // a Deployment's ReplicaSet
	"controller-revision-hash",           // a StatefulSet's or DaemonSet's revision
	"batch.kubernetes.io/controller-uid", // a Job (v1.27+)
	"controller-uid",                     // a Job (older)
}

// pullGeneration names the pulls that may share a resolution: those made
// for pods of one controller generation in one namespace. A rollout makes
// a new generation (kubectl rollout restart changes the pod template and
// so its hash), so the rollout's first pull always resolves the tag at
// the registry afresh and a tag pushed just before the rollout is always
// seen; only the rollout's later pods share that first answer. A pod no
// controller made is a generation of its own (its retries share). ok is
// false for a pull made for no pod (crictl pull): it never shares.
func pullGeneration(sb *runtimeapi.PodSandboxConfig) (gen string, ok bool) {
	labels := sb.GetLabels()
	ns := sb.GetMetadata().GetNamespace()
	if ns == "" {
		ns = labels[kubeNamespaceLabel]
	}
	// Quoted, so that no namespace (the CRI does not check them) can end
	// in what makes another namespace's key.
	ns = strconv.Quote(ns)
	for _, l := range generationLabels {
		if v := labels[l]; v != "" {
			return ns + "/" + l + "=" + v, true
		}
	}
	if uid := sb.GetMetadata().GetUid(); uid != "" {
		return ns + "/pod=" + uid, true
	}
	if uid := labels[kubePodUIDLabel]; uid != "" {
		return ns + "/pod=" + uid, true
	}
	return "", false
}

const (
	kubeNamespaceLabel = "io.kubernetes.pod.namespace"
	kubePodUIDLabel    = "io.kubernetes.pod.uid"
)

func codeOf(err error) string { return status.Code(err).String() }
