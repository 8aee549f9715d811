package criproxy

import (
	"fmt"
	"time"

	"go.uber.org/zap"
)

// A pod whose start waits in the gate shows only ContainerCreating in
// kubectl. With API access the proxy says why, where the pod's owner
// looks: a Kubernetes Event on the pod (kubectl describe pod, kubectl get
// events), once the start has waited HeldEventAfter, then again at most
// every heldEventEvery while it still waits. client-go's event
// correlator also rate-limits per pod and folds similar events together,
// so a node with many waiting pods cannot flood the API server.

// EventSink posts an Event about a pod; *kube.Pods implements it. It must
// not block: an Event the API cannot take now is dropped.
type EventSink interface {
	PodEvent(namespace, name, uid, reason, message string)
}

// HeldReason is the Event reason of a start waiting in the gate.
const HeldReason = "StartgateWaiting"

// heldEventEvery is the least time between two Events about one waiting
// start (longer when HeldEventAfter is).
const heldEventEvery = time.Minute

// reportHeld looks at the waiting starts every tick until stop closes.
func (p *Proxy) reportHeld(stop <-chan struct{}) {
	after := p.cfg.HeldEventAfter
	every := max(after, heldEventEvery)
	tick := time.NewTicker(min(max(after/4, 100*time.Millisecond), 5*time.Second))
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			due := p.waiting.due(now, after, every)
			if len(due) == 0 {
				continue
			}
			descs := make([]string, len(due))
			for i, h := range due {
				descs[i] = h.desc
			}
			whys := p.cfg.Explain(descs...)
			for _, h := range due {
				why, ok := whys[h.desc]
				if !ok {
					continue // admitted, or gone, since
				}
				msg := fmt.Sprintf("the start has waited %s in startgate for a start slot: %s", h.waited.Round(time.Second), why)
				p.cfg.Events.PodEvent(h.namespace, h.name, h.uid, HeldReason, msg)
				p.log.Debug("start held: event posted", zap.String("pod", h.namespace+"/"+h.name), zap.String("message", msg))
			}
		}
	}
}
