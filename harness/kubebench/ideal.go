package kubebench

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// The ideal bound of a rollout on this node, from measured parts: one
// pull of the patch (it must cross the network once), then every pod's
// CPU work packed onto the node's cores with no gap and no contention.
// No gate and no setting can finish the rollout sooner than
//
//	ideal = patch pull + Σ pods' CPU / cores
//
// and with the patch prefetched (its pull done before the rollout)
// nothing can beat Σ pods' CPU / cores. It is a lower bound: it leaves
// out the kubelet's, containerd's and runc's own work per pod and the
// probes' periods, so no mode reaches it; the distance to it is what
// every part of the start path costs together.

// podCPUWait bounds the wait for the kubelet's stats to cover every pod
// of a run (they are cached for its housekeeping period, about 10 s).
const podCPUWait = 30 * time.Second

// podCPU reads each pod's app container CPU (usageCoreNanoSeconds) from
// the kubelet's summary API, through the API server's node proxy, by pod
// UID; it waits until every pod's stats were taken after since, or
// podCPUWait passes, and returns what it has.
func podCPU(ctx context.Context, cs kubernetes.Interface, node string, uids map[string]string, since time.Time) (map[string]time.Duration, error) {
	out := map[string]time.Duration{}
	var lastErr error
	_ = wait.PollUntilContextTimeout(ctx, 2*time.Second, podCPUWait, true, func(ctx context.Context) (bool, error) {
		b, err := cs.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes", node, "proxy/stats/summary").Do(ctx).Raw()
		if err != nil {
			lastErr = err
			return false, nil
		}
		var s statsapi.Summary
		if err := json.Unmarshal(b, &s); err != nil {
			lastErr = err
			return false, nil
		}
		fresh := 0
		for _, p := range s.Pods {
			if _, ok := uids[p.PodRef.UID]; !ok {
				continue
			}
			for _, c := range p.Containers {
				if c.Name != "app" || c.CPU == nil || c.CPU.UsageCoreNanoSeconds == nil {
					continue
				}
				out[p.PodRef.UID] = time.Duration(*c.CPU.UsageCoreNanoSeconds)
				if c.CPU.Time.After(since) {
					fresh++
				}
			}
		}
		return fresh >= len(uids), nil
	})
	if len(out) == 0 && lastErr != nil {
		return nil, fmt.Errorf("kubebench: the kubelet's stats summary: %w", lastErr)
	}
	return out, nil
}

// Ideal is a run's bound from its own measured parts.
type Ideal struct {
	// PatchPull is the longest single pull of the run (the one that moved
	// the patch's bytes; kubelet's Pulled events).
	PatchPull time.Duration `json:"patch_pull_ns"`
	// CPU is the pods' app containers' CPU, summed.
	CPU   time.Duration `json:"cpu_ns"`
	Pods  int           `json:"pods"` // pods whose CPU was read
	Cores int           `json:"cores"`
}

// bound is the rollout's ideal completion; withPull false leaves the
// patch's pull out (it was prefetched).
func (i Ideal) bound(withPull bool) time.Duration {
	if i.Cores < 1 || i.Pods == 0 {
		return 0
	}
	d := i.CPU / time.Duration(i.Cores)
	if withPull {
		d += i.PatchPull
	}
	return d
}

// idealOf is a run's parts: its longest pull, and its pods' CPU.
func idealOf(pods []PodTime, cores int) Ideal {
	i := Ideal{Cores: cores}
	for _, p := range pods {
		i.PatchPull = max(i.PatchPull, p.Pull)
		if p.CPU > 0 {
			i.CPU += p.CPU
			i.Pods++
		}
	}
	return i
}

// roundIdeal is a round's bound from the medians of its runs' parts:
// the patch's pull from the runs that pulled it (not the prefetched
// ones, whose pulls found it local), and the pods' CPU per pod times the
// round's pod count; without withPull, the CPU alone.
func roundIdeal(runs []RoundFigures, withPull bool) time.Duration {
	var pulls, perPod []time.Duration
	pods, cores := 0, 0
	for _, f := range runs {
		i := f.Ideal
		if i.Pods == 0 || i.Cores < 1 {
			continue
		}
		perPod = append(perPod, i.CPU/time.Duration(i.Pods))
		pods, cores = max(pods, f.Pods), i.Cores
		if !f.Prefetched && i.PatchPull > 0 {
			pulls = append(pulls, i.PatchPull)
		}
	}
	if len(perPod) == 0 || (withPull && len(pulls) == 0) {
		return 0
	}
	d := pct(perPod, 50) * time.Duration(pods) / time.Duration(cores)
	if withPull {
		d += pct(pulls, 50)
	}
	return d
}
