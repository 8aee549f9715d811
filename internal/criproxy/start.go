package criproxy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/startgate/startgate/internal/admission"
)

const (
	runtimeService         = "/runtime.v1.RuntimeService/"
	methodRunPodSandbox    = runtimeService + "RunPodSandbox"
	methodCreateContainer  = runtimeService + "CreateContainer"
	methodStartContainer   = runtimeService + "StartContainer"
	methodStopContainer    = runtimeService + "StopContainer"
	methodStopPodSandbox   = runtimeService + "StopPodSandbox"
	methodRemovePodSandbox = runtimeService + "RemovePodSandbox"
	methodRemoveContainer  = runtimeService + "RemoveContainer"
	methodPullImage        = "/runtime.v1.ImageService/PullImage"
)

// forwardStart gates the start family. A pod takes one slot at
// RunPodSandbox, held through its containers' creates, starts and warm-ups
// (see warmer): a container's start cost is mostly the CPU its process
// burns right after runc starts it, not the CRI calls themselves.
// CreateContainer takes a slot only for a pod that holds none;
// StartContainer never does.
func (p *Proxy) forwardStart(ss grpc.ServerStream, method string) error {
	ctx := ss.Context()
	in := new(frame)
	if err := ss.RecvMsg(in); err != nil {
		return err
	}
	switch method {
	case methodRunPodSandbox:
		req := new(runtimeapi.RunPodSandboxRequest)
		if err := proto.Unmarshal(in.b, req); err != nil {
			return status.Errorf(codes.InvalidArgument, "criproxy: decode RunPodSandboxRequest: %v", err)
		}
		md := req.GetConfig().GetMetadata()
		release, err := p.admit(ctx, method, req.GetConfig(), fmt.Sprintf("start pod %s/%s", md.GetNamespace(), md.GetName()))
		if err != nil {
			return err
		}
		out, err := p.invoke(ss, method, in)
		if err != nil {
			release()
			return err
		}
		resp := new(runtimeapi.RunPodSandboxResponse)
		if perr := proto.Unmarshal(out.b, resp); perr != nil || resp.GetPodSandboxId() == "" {
			release()
		} else {
			p.warm.sandboxStarted(resp.GetPodSandboxId(), md.GetUid(), release)
		}
		return ss.SendMsg(out)

	case methodCreateContainer:
		req := new(runtimeapi.CreateContainerRequest)
		if err := proto.Unmarshal(in.b, req); err != nil {
			return status.Errorf(codes.InvalidArgument, "criproxy: decode CreateContainerRequest: %v", err)
		}
		sb := req.GetPodSandboxId()
		if !p.warm.join(sb) {
			// The pod holds no slot (its first wave is over, or it was
			// started before startgated): take one.
			md := req.GetSandboxConfig().GetMetadata()
			desc := fmt.Sprintf("create container %s/%s/%s", md.GetNamespace(), md.GetName(), req.GetConfig().GetMetadata().GetName())
			release, err := p.admit(ctx, method, req.GetSandboxConfig(), desc)
			if err != nil {
				return err
			}
			p.warm.adopt(sb, md.GetUid(), release)
		} else if ctx.Err() != nil {
			p.warm.createFailed(sb)
			return status.FromContextError(ctx.Err()).Err()
		}
		out, err := p.invoke(ss, method, in)
		if err != nil {
			p.warm.createFailed(sb)
			return err
		}
		resp := new(runtimeapi.CreateContainerResponse)
		if perr := proto.Unmarshal(out.b, resp); perr != nil || resp.GetContainerId() == "" {
			// Forward what containerd said; without an ID there is
			// nothing to watch.
			p.warm.createFailed(sb)
		} else {
			p.warm.created(resp.GetContainerId(), sb)
		}
		return ss.SendMsg(out)

	default: // StartContainer
		req := new(runtimeapi.StartContainerRequest)
		if err := proto.Unmarshal(in.b, req); err != nil {
			return status.Errorf(codes.InvalidArgument, "criproxy: decode StartContainerRequest: %v", err)
		}
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		out, err := p.invoke(ss, method, in)
		if err != nil {
			p.warm.notStarted(req.GetContainerId())
			return err
		}
		p.warm.started(req.GetContainerId())
		return ss.SendMsg(out)
	}
}

// forwardEnd forwards StopContainer, RemoveContainer, StopPodSandbox and
// RemovePodSandbox, then gives back what the container or pod held:
// kubelet stops pods mid-start when they are deleted, and the slot must
// not wait for its cap.
func (p *Proxy) forwardEnd(ss grpc.ServerStream, method string) error {
	in := new(frame)
	if err := ss.RecvMsg(in); err != nil {
		return err
	}
	out, err := p.invoke(ss, method, in)
	if err != nil {
		return err
	}
	// All four requests carry the ID as field 1.
	req := new(runtimeapi.RemoveContainerRequest)
	if proto.Unmarshal(in.b, req) == nil {
		switch method {
		case methodStopContainer, methodRemoveContainer:
			p.warm.notStarted(req.GetContainerId())
		default:
			p.warm.podEnded(req.GetContainerId())
		}
	}
	return ss.SendMsg(out)
}

// relay forwards a unary call and its answer.
func (p *Proxy) relay(ss grpc.ServerStream, method string, in *frame) error {
	out, err := p.invoke(ss, method, in)
	if err != nil {
		return err
	}
	return ss.SendMsg(out)
}

// callTimeout is how long kubelet gives RunPodSandbox, the longest of the
// calls a slot covers (twice runtimeRequestTimeout's default of 2
// minutes); it bounds a call that came without a deadline.
const callTimeout = 4 * time.Minute

// holdFor is a slot's hold cap: the call it covers, which the caller's
// deadline bounds, then the warm-up cap. A slot is never taken back from
// a call that is still inside containerd (under load a RunPodSandbox has
// taken 80 s there); after the call the warmer gives it back at the
// warm-up cap at the latest.
func (p *Proxy) holdFor(ctx context.Context) time.Duration {
	call := callTimeout
	if d, ok := ctx.Deadline(); ok {
		call = max(time.Until(d), 0)
	}
	return call + p.cfg.Warmup.Cap
}

// firstRefusal says whether uid's pod has not been told yet that its
// class annotation was not honoured, and remembers that it now has.
func (p *Proxy) firstRefusal(uid string) bool {
	p.refusedMu.Lock()
	defer p.refusedMu.Unlock()
	if _, said := p.refused.Get(uid); said {
		return false
	}
	p.refused.Add(uid, struct{}{})
	return true
}

// admit waits for a start slot and returns its release. The caller's
// deadline comes with ctx: the gate admits it before the deadline minus
// its margin, so the gate never turns a start into a timeout. A caller
// that has gone gets its context's error, and a start whose pod the API
// says is gone gets Aborted; neither call is forwarded. Anything else that
// goes wrong in admission lets the call pass without a slot (fail open),
// logged and counted.
func (p *Proxy) admit(ctx context.Context, method string, sb *runtimeapi.PodSandboxConfig, desc string) (func(), error) {
	began := time.Now()
	defer func() { p.obs.GateWait(method, time.Since(began)) }()
	noop := func() {}
	if p.cfg.Gate.Bypassed() {
		p.obs.FailOpen(method, "bypass")
		return noop, nil
	}
	uid := sb.GetMetadata().GetUid()
	if pg := p.goneBeforeQueue(uid, desc); pg != nil {
		p.log.Info("start of a gone pod refused", zap.String("method", method), zap.String("description", desc),
			zap.String("uid", uid), zap.String("reason", pg.reason))
		p.obs.PodGone(method, pg.reason)
		return nil, pg.status()
	}
	cl := p.classifier.Load().Classify(sb)
	if cl.Refused != "" && uid != "" {
		if p.firstRefusal(uid) {
			p.log.Warn("pod's class annotation not honoured", zap.String("pod", sb.GetMetadata().GetNamespace()+"/"+sb.GetMetadata().GetName()),
				zap.String("uid", uid), zap.String("reason", cl.Refused), zap.Stringer("class", cl.Class), zap.String("class_from", cl.Why))
		}
	}
	cls := cl.Class
	req := admission.Request{Class: cls, Tenant: cl.Tenant, Description: desc, Hold: p.holdFor(ctx)}

	type result struct {
		lease *admission.Lease
		err   error
	}
	// The gate runs on its own goroutine so that a wedged gate cannot hold
	// the call: every p.stuckCheck the controller's liveness is looked at
	// without taking the gate's lock. That goroutine lives as long as the
	// gate takes to answer; if the handler has given up on it by then, it
	// gives the slot straight back. It is the one goroutine here without
	// an owner to wait for it: waiting is what a wedged gate must not
	// cause.
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer p.waiting.add(uid, desc, sb.GetMetadata().GetNamespace(), sb.GetMetadata().GetName(), cancel)()
	done := make(chan result, 1)
	var mu sync.Mutex
	abandoned := false
	go func() {
		var r result
		func() {
			defer func() {
				if v := recover(); v != nil {
					r = result{err: fmt.Errorf("criproxy: admission panicked: %v", v)}
				}
			}()
			r.lease, r.err = p.cfg.Gate.Acquire(actx, req)
		}()
		mu.Lock()
		defer mu.Unlock()
		if abandoned {
			if r.lease != nil {
				r.lease.Release()
			}
			return
		}
		done <- r
	}()
	abandon := func() {
		mu.Lock()
		abandoned = true
		mu.Unlock()
		select {
		case r := <-done:
			if r.lease != nil {
				r.lease.Release()
			}
		default:
		}
	}
	tick := time.NewTicker(p.stuckCheck)
	defer tick.Stop()
	for {
		select {
		case r := <-done:
			if pg := podGone(actx); pg != nil && ctx.Err() == nil {
				// Cancelled by the API watch, or granted just as it
				// cancelled: either way the pod is gone.
				if r.lease != nil {
					r.lease.Release()
				}
				p.log.Info("queued start cancelled: its pod is gone", zap.String("method", method),
					zap.String("description", desc), zap.String("uid", uid), zap.String("reason", pg.reason))
				p.obs.PodGone(method, pg.reason)
				return nil, pg.status()
			}
			switch {
			case r.err == nil:
				if ctx.Err() != nil {
					// Granted as the caller left: never forward.
					r.lease.Release()
					return nil, status.FromContextError(ctx.Err()).Err()
				}
				p.log.Debug("start admitted", zap.String("method", method), zap.String("description", desc),
					zap.Stringer("class", cls), zap.String("class_from", cl.Why), zap.Uint64("lease", r.lease.ID()))
				return r.lease.Release, nil
			case ctx.Err() != nil:
				return nil, status.FromContextError(ctx.Err()).Err()
			case errors.Is(r.err, admission.ErrDeadlineTooNear):
				// The operator chose refuse: that is policy, not a fault.
				return nil, status.Error(codes.DeadlineExceeded, r.err.Error())
			default:
				if r.lease != nil {
					r.lease.Release()
				}
				p.log.Warn("admission failed: passing the start without a slot", zap.String("method", method),
					zap.String("description", desc), zap.Error(r.err))
				p.obs.FailOpen(method, "gate-error")
				return noop, nil
			}
		case <-tick.C:
			if !p.cfg.Gate.Alive(time.Now()) {
				p.log.Error("admission is not ticking: passing the start without a slot", zap.String("method", method),
					zap.String("description", desc))
				p.obs.FailOpen(method, "gate-stuck")
				abandon()
				return noop, nil
			}
		}
	}
}
