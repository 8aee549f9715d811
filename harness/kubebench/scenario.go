package kubebench

import (
	"context"
	"fmt"
	"regexp"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/startgate/startgate/harness/bench"
)

// PodTime is one pod of a scenario run.
type PodTime struct {
	Name string `json:"name"`
	// Created is the pod's creationTimestamp and ReadyAt its Ready
	// condition's lastTransitionTime (zero if never Ready in time): the
	// objects' own times, to the second. WatchAdded and WatchReady are
	// when the watch delivered them, in the harness's clock.
	Created    time.Time `json:"created"`
	ReadyAt    time.Time `json:"ready_at"`
	WatchAdded time.Time `json:"watch_added"`
	WatchReady time.Time `json:"watch_ready"`
	// Ready is Created to ReadyAt (reboot: the kubelet's start, to the
	// second, to ReadyAt). A pod not Ready by the deadline (TimedOut),
	// or never created, counts at the deadline: never dropped.
	Ready    time.Duration `json:"ready_ns"`
	TimedOut bool          `json:"timed_out,omitempty"`
	// CPU is the app container's CPU time, from the kubelet's stats
	// summary after the run (zero if it had none for the pod).
	CPU time.Duration `json:"cpu_ns,omitempty"`
	// Pull and PullWaiting are kubelet's figures for the pod's image
	// pull: the pull, and the pull with its wait for the node's pull
	// worker (its Pulled event); zero if no event was found.
	Pull        time.Duration `json:"pull_ns,omitempty"`
	PullWaiting time.Duration `json:"pull_waiting_ns,omitempty"`
	// Restarts counts the pod's container restarts during the scenario;
	// after a reboot, those beyond the re-creation the reboot itself
	// makes kubelet count as one.
	Restarts int32 `json:"restarts,omitempty"`
}

// Dist is a kubelet histogram's difference over a run.
type Dist struct {
	Count uint64        `json:"count"`
	P50   time.Duration `json:"p50_ns"`
	Mean  time.Duration `json:"mean_ns"`
}

func distOf(h histogram) Dist { return Dist{Count: h.Count, P50: h.quantile(0.5), Mean: h.mean()} }

// ScenarioRun is one scenario run by one mode in one round.
type ScenarioRun struct {
	Scenario string `json:"scenario"`
	Mode     string `json:"mode"`
	// Round 0 is the warm-up, run and kept but never counted.
	Round int `json:"round"`
	// Position is the mode's place in its round's order, from 0.
	Position int       `json:"position"`
	Start    time.Time `json:"start"`
	Pods     []PodTime `json:"pods"`
	// Completion is from the scenario's start until every new pod was
	// Ready and no old one was left; Complete is false if the deadline
	// came first (Completion is the deadline then).
	Completion time.Duration `json:"completion_ns"`
	Complete   bool          `json:"complete"`
	// Failed counts the pods not Ready by the deadline (or missing).
	Failed int `json:"failed"`
	// KubeletSLI and KubeletTotal are kubelet's pod start histograms over
	// the run.
	KubeletSLI   Dist `json:"kubelet_sli"`
	KubeletTotal Dist `json:"kubelet_total"`
	// Patch is the digest pushed before a rollout; Prefetch how long
	// startgated took to fetch it when announced.
	Patch         string             `json:"patch,omitempty"`
	Prefetch      time.Duration      `json:"prefetch_ns,omitempty"`
	PrefetchError string             `json:"prefetch_error,omitempty"`
	Gate          []bench.GateSample `json:"gate,omitempty"`
	CPU           []CPUSample        `json:"cpu,omitempty"`
	Idle          IdleCPU            `json:"idle"`
	// CPUBy is where the run's CPU went (the local node only).
	CPUBy    *CPUBy   `json:"cpu_by,omitempty"`
	Ideal    Ideal    `json:"ideal"`
	Warnings []string `json:"warnings,omitempty"`
}

// restartedAt is the annotation `kubectl rollout restart` sets.
const restartedAt = "kubectl.kubernetes.io/restartedAt"

// updateApp changes the Deployment (retrying on conflicts).
func (b *runner) updateApp(ctx context.Context, change func(*appsv1.Deployment)) error {
	deps := b.n.client().AppsV1().Deployments(b.n.namespace())
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		d, err := deps.Get(ctx, appName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		change(d)
		_, err = deps.Update(ctx, d, metav1.UpdateOptions{})
		return err
	})
}

// scale sets the replicas.
func (b *runner) scale(ctx context.Context, n int32) error {
	return b.updateApp(ctx, func(d *appsv1.Deployment) { d.Spec.Replicas = ptr.To(n) })
}

// measure runs change and waits until want new pods (added after it) are
// Ready and none of the pods present before is left, or the deadline;
// then it reads kubelet's metrics and the pods' pull events.
func (b *runner) measure(ctx context.Context, run *ScenarioRun, want int, change func() error) error {
	before, _ := b.pods.snapshot()
	old := map[string]bool{}
	for uid, p := range before {
		if p.deleted.IsZero() {
			old[uid] = true
		}
	}
	sli0, total0, merr := kubeletStarts(ctx, b.n.client(), b.n.nodeName())
	busy, err := startLoad(b.opts.Load, b.opts.CPUs)
	if err != nil {
		return err
	}
	defer busy.stop()
	t0 := time.Now()
	stopGate := b.watchGate(run, t0)
	run.Start = t0
	if err := change(); err != nil {
		stopGate()
		return err
	}
	done := func(pods map[string]podSeen) bool {
		ready := 0
		for uid, p := range pods {
			if old[uid] {
				if p.deleted.IsZero() {
					return false
				}
				continue
			}
			if p.deleted.IsZero() && !p.ready.IsZero() {
				ready++
			}
		}
		return ready >= want
	}
	run.Complete = b.pods.waitFor(ctx, b.opts.Deadline, done)
	run.Completion = time.Since(t0)
	stopGate()
	busy.stop()
	if err := ctx.Err(); err != nil {
		return err
	}
	after, _ := b.pods.snapshot()
	uids := map[string]string{}
	for uid, p := range after {
		if old[uid] {
			continue
		}
		uids[uid] = p.name
		run.Pods = append(run.Pods, b.podTime(p, p.created, p.restarts))
	}
	b.fillMissing(run, want)
	b.pullTimes(ctx, run, uids, t0)
	b.podCPUs(ctx, run, uids, t0)
	if merr == nil {
		sli1, total1, err := kubeletStarts(ctx, b.n.client(), b.n.nodeName())
		merr = err
		run.KubeletSLI, run.KubeletTotal = distOf(sli1.sub(sli0)), distOf(total1.sub(total0))
	}
	if merr != nil {
		run.Warnings = append(run.Warnings, merr.Error())
	}
	return nil
}

// podTime is p's figures, from since (its creation; reboot: the
// kubelet's start) to its Ready condition, or at the deadline.
func (b *runner) podTime(p podSeen, since time.Time, restarts int32) PodTime {
	pt := PodTime{Name: p.name, Created: p.created, WatchAdded: p.added, Restarts: restarts}
	if p.ready.IsZero() {
		pt.Ready, pt.TimedOut = b.opts.Deadline, true
		return pt
	}
	pt.ReadyAt, pt.WatchReady = p.readyAt, p.ready
	pt.Ready = max(0, p.readyAt.Sub(since.Truncate(time.Second)))
	return pt
}

// fillMissing counts the pods a run wanted and never saw at the
// deadline, and sets Failed.
func (b *runner) fillMissing(run *ScenarioRun, want int) {
	for i := len(run.Pods); i < want; i++ {
		run.Pods = append(run.Pods, PodTime{Name: "(never created)", Ready: b.opts.Deadline, TimedOut: true})
	}
	run.Failed = want - countReady(run.Pods)
}

func countReady(ps []PodTime) int {
	n := 0
	for _, p := range ps {
		if !p.TimedOut {
			n++
		}
	}
	return n
}

// pulledRE reads kubelet's Pulled event: `Successfully pulled image "X"
// in 1.2s (1.5s including waiting). Image size: N bytes.`
var pulledRE = regexp.MustCompile(`pulled image ".*" in ([0-9][0-9.a-zµ]*) \(([0-9][0-9.a-zµ]*) including waiting\)`)

// pullTimes fills in each pod's pull from its Pulled events since t0.
func (b *runner) pullTimes(ctx context.Context, run *ScenarioRun, uids map[string]string, t0 time.Time) {
	evs, err := b.n.client().CoreV1().Events(b.n.namespace()).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("reason", "Pulled").String(),
	})
	if err != nil {
		run.Warnings = append(run.Warnings, fmt.Sprintf("kubebench: list Pulled events: %v", err))
		return
	}
	byName := map[string]*PodTime{}
	for i := range run.Pods {
		byName[run.Pods[i].Name] = &run.Pods[i]
	}
	since := t0.Truncate(time.Second)
	for _, ev := range evs.Items {
		name, ok := uids[string(ev.InvolvedObject.UID)]
		if !ok || eventTime(&ev).Before(since) {
			continue
		}
		m := pulledRE.FindStringSubmatch(ev.Message)
		if m == nil {
			continue
		}
		pull, err1 := time.ParseDuration(m[1])
		waiting, err2 := time.ParseDuration(m[2])
		if p := byName[name]; p != nil && err1 == nil && err2 == nil {
			p.Pull, p.PullWaiting = pull, waiting
		}
	}
}

// podCPUs fills in each pod's CPU from the kubelet's stats, and the run's
// ideal bound.
func (b *runner) podCPUs(ctx context.Context, run *ScenarioRun, uids map[string]string, t0 time.Time) {
	cpu, err := podCPU(ctx, b.n.client(), b.n.nodeName(), uids, t0)
	if err != nil {
		run.Warnings = append(run.Warnings, err.Error())
	}
	byName := map[string]time.Duration{}
	for uid, d := range cpu {
		byName[uids[uid]] = d
	}
	for i := range run.Pods {
		run.Pods[i].CPU = byName[run.Pods[i].Name]
	}
	run.Ideal = idealOf(run.Pods, b.res.Cores)
}

func eventTime(ev *corev1.Event) time.Time {
	if !ev.LastTimestamp.IsZero() {
		return ev.LastTimestamp.Time
	}
	if !ev.EventTime.IsZero() {
		return ev.EventTime.Time
	}
	return ev.CreationTimestamp.Time
}

// watchGate samples the node's CPU and, with startgated, its gate during
// a run from t0; the returned func stops both and stores the samples.
func (b *runner) watchGate(run *ScenarioRun, t0 time.Time) func() {
	ctx, cancel := context.WithCancel(context.Background())
	gate := make(chan []bench.GateSample, 1)
	cpu := make(chan []CPUSample, 1)
	api := b.n.gate()
	cores := 0
	read := func(ctx context.Context) (float64, int, bool) {
		v, c, ok := b.n.idle(ctx)
		cores = c
		return v, c, ok
	}
	go func() { cpu <- sampleCPU(ctx, read, api, t0, b.cpuEvery) }()
	by := make(chan *CPUBy, 1)
	if b.n.local() {
		go func() { by <- sampleCPUBy(ctx, cpuBySampleEvery) }()
	} else {
		by <- nil
	}
	if api != nil {
		go func() { gate <- bench.WatchGate(ctx, api, t0) }()
	} else {
		gate <- nil
	}
	return func() {
		cancel()
		run.Gate, run.CPU, run.CPUBy = <-gate, <-cpu, <-by
		run.Idle = idleOf(run.CPU, cores)
	}
}

// scaleUp is the scale-up scenario: from 0 to N.
func (b *runner) scaleUp(ctx context.Context, run *ScenarioRun) error {
	return b.measure(ctx, run, b.opts.Pods, func() error { return b.scale(ctx, int32(b.opts.Pods)) })
}

// rollout pushes a patch, announces it in the prefetch mode, and rolls
// the Deployment out again with strategy.
func (b *runner) rollout(ctx context.Context, run *ScenarioRun, m Mode, strategy appsv1.DeploymentStrategy, label string) error {
	b.pr.status("%s: pushing a patch", label)
	d, err := b.n.patch(ctx)
	if err != nil {
		return err
	}
	run.Patch = d
	if m.Prefetch && b.n.gate() != nil {
		b.pr.status("%s: announcing the patch, waiting for startgated to fetch it", label)
		took, perr := bench.PrefetchAndWait(ctx, b.n.gate(), b.n.appRef(), d, b.opts.PrefetchTimeout)
		if err := ctx.Err(); err != nil {
			return err
		}
		run.Prefetch = took
		if perr != nil {
			run.PrefetchError = perr.Error()
			run.Warnings = append(run.Warnings, "the rollout ran without the patch prefetched: "+perr.Error())
		}
		if err := b.quiet(ctx, label); err != nil {
			return err
		}
	}
	return b.measure(ctx, run, b.opts.Pods, func() error {
		return b.updateApp(ctx, func(dep *appsv1.Deployment) {
			dep.Spec.Strategy = strategy
			if dep.Spec.Template.Annotations == nil {
				dep.Spec.Template.Annotations = map[string]string{}
			}
			dep.Spec.Template.Annotations[restartedAt] = time.Now().Format(time.RFC3339Nano)
			if m.pullPolicy() == corev1.PullIfNotPresent {
				// The node has the tag: only a new reference pulls.
				dep.Spec.Template.Spec.Containers[0].Image = b.n.digestRef(d)
			}
		})
	})
}

// reboot kills every pod's sandbox, restarts containerd and startgated,
// starts the kubelet and measures from then until each pod is Ready with
// a new container.
func (b *runner) reboot(ctx context.Context, run *ScenarioRun, m Mode) error {
	before, _ := b.pods.snapshot()
	pre := map[string]string{}
	for uid, p := range before {
		if p.deleted.IsZero() {
			pre[uid] = p.container
		}
	}
	t0, err := b.n.reboot(ctx, m)
	if err != nil {
		return err
	}
	run.Start = t0
	stopGate := b.watchGate(run, t0)
	rebooted := func(p podSeen, uid string) bool {
		return !p.ready.IsZero() && p.readyWith != pre[uid] && p.ready.After(t0)
	}
	run.Complete = b.pods.waitFor(ctx, b.opts.Deadline, func(pods map[string]podSeen) bool {
		for uid := range pre {
			if p, ok := pods[uid]; !ok || !rebooted(p, uid) {
				return false
			}
		}
		return true
	})
	run.Completion = time.Since(t0)
	stopGate()
	if err := ctx.Err(); err != nil {
		return err
	}
	after, _ := b.pods.snapshot()
	uids := map[string]string{}
	for uid := range pre {
		p := after[uid]
		if !rebooted(p, uid) {
			p.ready = time.Time{}
		}
		// kubelet counts the container the reboot made it re-create
		// as a restart: only restarts beyond that one count.
		uids[uid] = p.name
		run.Pods = append(run.Pods, b.podTime(p, t0, max(0, p.restarts-before[uid].restarts-1)))
	}
	b.fillMissing(run, len(pre))
	b.pullTimes(ctx, run, uids, t0)
	b.podCPUs(ctx, run, uids, t0)
	// The kubelet restarted: its histograms start from zero.
	sli, total, merr := kubeletStarts(ctx, b.n.client(), b.n.nodeName())
	run.KubeletSLI, run.KubeletTotal = distOf(sli), distOf(total)
	if merr != nil {
		run.Warnings = append(run.Warnings, merr.Error())
	}
	return nil
}
