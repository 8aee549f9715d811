package criproxy

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// WarmupPolicy says when a started container's slot is given back.
//
// The slot taken at CreateContainer is held until the container's CPU use
// settles (its warm-up is over), it exits, or Cap passes, whichever comes
// first. Releasing at StartContainer's return would admit the next start
// while this one still burns its init CPU, which is exactly the contention
// the gate exists to avoid; holding to readiness would need kubelet's
// probes, which the CRI does not carry. CPU use is read from CRI
// ContainerStats (usage_core_nano_seconds), which on containerd stops
// growing within one poll of a busy loop's end.
type WarmupPolicy struct {
	// Poll is how often a warming container's CPU use is read.
	Poll time.Duration
	// SettleCores: below this many cores of CPU use the container counts
	// as idle.
	SettleCores float64
	// SettlePolls: idle for this many polls in a row means settled.
	SettlePolls int
	// Cap is the longest a slot is held after CreateContainer.
	Cap time.Duration
}

// DefaultWarmupPolicy: TESTBED.md saw a busy loop's CPU stop growing in
// CRI stats within 250 ms of its end, so two idle polls of 250 ms say the
// warm-up is over; 60 s caps a start that never settles (a service that
// stays busy).
func DefaultWarmupPolicy() WarmupPolicy {
	return WarmupPolicy{Poll: 250 * time.Millisecond, SettleCores: 0.1, SettlePolls: 2, Cap: 60 * time.Second}
}

func (w WarmupPolicy) withDefaults() WarmupPolicy {
	d := DefaultWarmupPolicy()
	if w.Poll <= 0 {
		w.Poll = d.Poll
	}
	if w.SettleCores <= 0 {
		w.SettleCores = d.SettleCores
	}
	if w.SettlePolls <= 0 {
		w.SettlePolls = d.SettlePolls
	}
	if w.Cap <= 0 {
		w.Cap = d.Cap
	}
	return w
}

// warmer holds the slots of created containers until their warm-up ends.
type warmer struct {
	p  *Proxy
	mu sync.Mutex
	// pending: created, not yet started.
	pending map[string]pendingSlot
}

type pendingSlot struct {
	release func()
	at      time.Time
}

func newWarmer(p *Proxy) *warmer {
	return &warmer{p: p, pending: make(map[string]pendingSlot)}
}

func (w *warmer) created(id string, release func()) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	// Containers created and never started: their leases have expired at
	// the cap; forget them.
	for k, s := range w.pending {
		if now.Sub(s.at) > w.p.cfg.Warmup.Cap {
			s.release()
			delete(w.pending, k)
		}
	}
	if old, ok := w.pending[id]; ok {
		old.release() // a retried create of the same ID: one slot is enough
	}
	w.pending[id] = pendingSlot{release: release, at: now}
}

func (w *warmer) take(id string) func() {
	w.mu.Lock()
	defer w.mu.Unlock()
	s, ok := w.pending[id]
	if !ok {
		return nil
	}
	delete(w.pending, id)
	return s.release
}

// releaseAll gives back the slots of containers never started, at Stop.
func (w *warmer) releaseAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, s := range w.pending {
		s.release()
		delete(w.pending, k)
	}
}

// failed: StartContainer failed, so there is no warm-up to wait for.
func (w *warmer) failed(id string) {
	if r := w.take(id); r != nil {
		r()
	}
}

// started begins watching the container; its slot is released when the
// container settles or exits. The lease's own hold cap (WarmupPolicy.Cap,
// set at CreateContainer) ends it in any case.
func (w *warmer) started(id string) {
	release := w.take(id)
	if release == nil {
		return // created before startgated, or its slot already expired
	}
	w.p.wg.Add(1)
	go func() {
		defer w.p.wg.Done()
		defer release()
		reason := w.watch(id)
		w.p.log.Debug("warm-up over: slot released", zap.String("container", id), zap.String("reason", reason))
	}()
}

// watch polls the container until it settles, exits or the proxy stops,
// and says which.
func (w *warmer) watch(id string) string {
	pol := w.p.cfg.Warmup
	deadline := time.Now().Add(pol.Cap)
	t := time.NewTicker(pol.Poll)
	defer t.Stop()
	var lastUsage uint64
	var lastAt time.Time
	idle := 0
	for {
		select {
		case <-w.p.stopCh:
			return "proxy stopping"
		case now := <-t.C:
			if now.After(deadline) {
				return "cap"
			}
			ctx, cancel := context.WithTimeout(context.Background(), pol.Poll*4)
			st, err := w.p.runtime.ContainerStats(ctx, &runtimeapi.ContainerStatsRequest{ContainerId: id})
			cancel()
			if status.Code(err) == codes.NotFound {
				return "removed"
			}
			if err != nil {
				// containerd busy or restarting: try again next poll.
				continue
			}
			cpu := st.GetStats().GetCpu()
			if cpu.GetUsageCoreNanoSeconds() == nil {
				if w.exited(id) {
					return "exited"
				}
				continue
			}
			usage := cpu.GetUsageCoreNanoSeconds().GetValue()
			if !lastAt.IsZero() {
				cores := float64(usage-lastUsage) / float64(now.Sub(lastAt).Nanoseconds())
				if usage < lastUsage || cores < pol.SettleCores {
					idle++
				} else {
					idle = 0
				}
				if idle >= pol.SettlePolls {
					if w.exited(id) {
						return "exited"
					}
					return "settled"
				}
			}
			lastUsage, lastAt = usage, now
		}
	}
}

func (w *warmer) exited(id string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st, err := w.p.runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	return status.Code(err) == codes.NotFound || st.GetStatus().GetState() == runtimeapi.ContainerState_CONTAINER_EXITED
}
