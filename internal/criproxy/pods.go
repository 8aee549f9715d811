package criproxy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// PodView is what the proxy needs of the API server's view of the node's
// pods; *kube.Pods implements it. Its methods read a cache and never
// block. Without one (no API access) the proxy works from the CRI alone.
type PodView interface {
	// Gone reports whether the pod with this UID is known to be deleted,
	// terminating or finished, and which.
	Gone(uid string) (reason string, gone bool)
	// WaitsForReady reports whether the pod's warm-up ends when it
	// reports Ready (it has a readiness or startup probe, is not Ready
	// yet, and the watch is healthy) rather than when its CPU settles.
	WaitsForReady(uid string) bool
}

// podGoneError is the cause a start is cancelled with when its pod is
// gone: kubelet syncs a pod under context.WithoutCancel, so deleting the
// pod never cancels a RunPodSandbox waiting in the gate; without this the
// start would wait its turn, then be created, started and killed, ahead
// of pods that are wanted.
type podGoneError struct {
	desc   string // "start pod NS/NAME"
	uid    string
	reason string // "deleted", "terminating", "finished"
}

func (e *podGoneError) Error() string {
	what := map[string]string{"deleted": "was deleted", "terminating": "is terminating", "finished": "has finished"}[e.reason]
	if what == "" {
		what = "is gone (" + e.reason + ")"
	}
	return fmt.Sprintf("startgate: %s: the pod (uid %s) %s while its start waited in the gate; the start was not forwarded to the runtime", e.desc, e.uid, what)
}

// goneStatus is what kubelet gets for such a start: Aborted, with the
// reason. kubelet records it as the pod's FailedCreatePodSandBox event and
// moves on to tearing the pod down.
func (e *podGoneError) status() error { return status.Error(codes.Aborted, e.Error()) }

// waiters indexes the starts waiting in the gate by pod UID, so that the
// API watch can cancel them.
type waiters struct {
	mu sync.Mutex
	// Guarded by mu.
	byUID map[string]map[*waiting]struct{}
}

type waiting struct {
	desc            string
	namespace, name string
	since           time.Time
	cancel          context.CancelCauseFunc
	// Guarded by waiters.mu.
	lastEvent time.Time
}

// add registers a waiting start of the pod ns/name; the returned func
// unregisters it.
func (ws *waiters) add(uid, desc, ns, name string, cancel context.CancelCauseFunc) func() {
	if uid == "" {
		return func() {}
	}
	w := &waiting{desc: desc, namespace: ns, name: name, since: time.Now(), cancel: cancel}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.byUID == nil {
		ws.byUID = make(map[string]map[*waiting]struct{})
	}
	set := ws.byUID[uid]
	if set == nil {
		set = make(map[*waiting]struct{})
		ws.byUID[uid] = set
	}
	set[w] = struct{}{}
	return func() {
		ws.mu.Lock()
		defer ws.mu.Unlock()
		// w's set is still the current one: a set leaves the map only
		// when empty.
		cur := ws.byUID[uid]
		delete(cur, w)
		if len(cur) == 0 {
			delete(ws.byUID, uid)
		}
	}
}

// heldStart is a start that has waited long enough to be told about.
type heldStart struct {
	uid, desc, namespace, name string
	waited                     time.Duration
}

// due returns the starts that have waited at least after, and were last
// told about at least every ago (or never), marking them told at now.
func (ws *waiters) due(now time.Time, after, every time.Duration) []heldStart {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	var out []heldStart
	for uid, set := range ws.byUID {
		for w := range set {
			if now.Sub(w.since) < after || (!w.lastEvent.IsZero() && now.Sub(w.lastEvent) < every) {
				continue
			}
			w.lastEvent = now
			out = append(out, heldStart{uid: uid, desc: w.desc, namespace: w.namespace, name: w.name, waited: now.Sub(w.since)})
		}
	}
	return out
}

// cancel cancels every start of the pod that is waiting; it returns how
// many.
func (ws *waiters) cancel(uid, reason string) int {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	set := ws.byUID[uid]
	for w := range set {
		w.cancel(&podGoneError{desc: w.desc, uid: uid, reason: reason})
	}
	return len(set)
}

// PodGone implements kube.Sink: a start of the pod still waiting in the
// gate leaves the queue and is never forwarded.
func (p *Proxy) PodGone(uid, reason string) {
	if n := p.waiting.cancel(uid, reason); n > 0 {
		p.log.Info("pod gone: cancelling its queued starts", zap.String("uid", uid), zap.String("reason", reason), zap.Int("starts", n))
	}
}

// PodReady implements kube.Sink: the pod's warm-up is over, its slot is
// given back.
func (p *Proxy) PodReady(uid string) {
	if p.warm.podReady(uid) {
		p.log.Debug("pod ready: warm-up over", zap.String("uid", uid))
	}
}

// goneBeforeQueue refuses a start of a pod the API already says is gone.
func (p *Proxy) goneBeforeQueue(uid, desc string) *podGoneError {
	if p.cfg.Pods == nil || uid == "" {
		return nil
	}
	if reason, gone := p.cfg.Pods.Gone(uid); gone {
		return &podGoneError{desc: desc, uid: uid, reason: reason}
	}
	return nil
}

// podGone extracts the podGoneError a start was cancelled with, if any.
func podGone(ctx context.Context) *podGoneError {
	var pg *podGoneError
	if errors.As(context.Cause(ctx), &pg) {
		return pg
	}
	return nil
}
