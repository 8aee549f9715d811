package criproxy

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/startgate/startgate/internal/admission"
)

// Restored says what Restore took back.
type Restored struct {
	// Pods holding a slot again, and the containers still warming up in
	// them.
	Pods, Containers int
}

// Restore takes back, from containerd, the slots of the pods that were
// warming up when the proxy last stopped (the daemon killed, restarted by
// its watchdog, upgraded): every ready sandbox created less than the
// warm-up cap ago whose containers have not all finished holds a slot
// again, through Gate.Restore, until its warm-up ends as it would have
// (settled, exited, Ready, stopped, or the cap counted from its creation).
// Without this, a restart in the middle of a burst admits a full limit of
// new starts on top of the pods still warming. Call it before Serve, with
// a deadline: while containerd does not answer, nothing is restored, the
// error says so and the proxy starts as if nothing were warming (fail
// open). A restored pod the API reports Ready gives its slot back when the
// pod watch syncs (PodReady), as any probed pod does.
func (p *Proxy) Restore(ctx context.Context) (Restored, error) {
	var out Restored
	sbs, err := p.runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{
		State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}}})
	if err != nil {
		return out, fmt.Errorf("criproxy: restore: list sandboxes: %w", err)
	}
	ctrs, err := p.runtime.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		return out, fmt.Errorf("criproxy: restore: list containers: %w", err)
	}
	bySandbox := make(map[string][]*runtimeapi.Container)
	for _, c := range ctrs.GetContainers() {
		bySandbox[c.GetPodSandboxId()] = append(bySandbox[c.GetPodSandboxId()], c)
	}
	now := time.Now()
	capFrom := now.Add(-p.cfg.Warmup.Cap)
	for _, sb := range sbs.GetItems() {
		warming, since, ok := warmingUp(sb, bySandbox[sb.GetId()], capFrom)
		if !ok {
			continue
		}
		md := sb.GetMetadata()
		cfg := &runtimeapi.PodSandboxConfig{Metadata: md, Labels: sb.GetLabels(), Annotations: sb.GetAnnotations()}
		cl := p.classifier.Load().Classify(cfg)
		desc := fmt.Sprintf("start pod %s/%s", md.GetNamespace(), md.GetName())
		lease, err := p.cfg.Gate.Restore(admission.Request{Class: cl.Class, Tenant: cl.Tenant, Description: desc,
			Hold: max(since.Add(p.cfg.Warmup.Cap).Sub(now), time.Second)})
		if err != nil {
			return out, fmt.Errorf("criproxy: restore %s: %w", desc, err)
		}
		p.warm.restored(sb.GetId(), md.GetUid(), since, lease.Release, warming)
		out.Pods++
		out.Containers += len(warming)
		p.log.Info("start restored: its pod was warming up before the restart", zap.String("description", desc),
			zap.String("uid", md.GetUid()), zap.Stringer("class", cl.Class), zap.Int("containers", len(warming)),
			zap.Duration("age", now.Sub(since).Round(time.Millisecond)))
	}
	return out, nil
}

// warmingUp decides whether a ready sandbox held a slot when the proxy
// stopped, and returns the containers still warming up in it and when its
// warm-up began (its newest container's creation, else the sandbox's).
// It did if it was created within the cap and has no containers yet
// (kubelet is about to create them), or if some container created within
// the cap has not exited. A pod whose containers have all exited is
// between waves (its init containers done): its next container takes a
// slot through the gate, as it would have.
func warmingUp(sb *runtimeapi.PodSandbox, ctrs []*runtimeapi.Container, capFrom time.Time) (warming []*runtimeapi.Container, since time.Time, ok bool) {
	since = time.Unix(0, sb.GetCreatedAt())
	if len(ctrs) == 0 {
		return nil, since, since.After(capFrom)
	}
	for _, c := range ctrs {
		created := time.Unix(0, c.GetCreatedAt())
		switch c.GetState() {
		case runtimeapi.ContainerState_CONTAINER_CREATED, runtimeapi.ContainerState_CONTAINER_RUNNING:
		default:
			continue
		}
		if !created.After(capFrom) {
			continue
		}
		warming = append(warming, c)
		if created.After(since) {
			since = created
		}
	}
	return warming, since, len(warming) > 0
}
