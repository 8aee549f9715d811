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
// The pod's slot is held until its containers' CPU use settles (their
// warm-up is over), they exit, or Cap passes, whichever comes first; with
// the API watch (Config.Pods), a pod with a readiness or startup probe
// holds it until it reports Ready instead of until it settles. Releasing
// at StartContainer's return would admit the next start while this one
// still burns its init CPU, which is exactly the contention the gate
// exists to avoid. CPU use is read from the container's cgroup
// (cgroupcpu.go), else from CRI ContainerStats (usage_core_nano_seconds);
// either stops growing within one poll of a busy loop's end.
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
	// SettleBeforeReady: a pod that waits for Ready (a probed pod, with
	// the API watch on) also ends its warm-up when its CPU settles first.
	// Off, such a pod holds its slot until Ready: the probe's verdict,
	// not a guess from CPU, but up to a probe period of a slot held by
	// an idle container.
	SettleBeforeReady bool
	// CPUFromCRI reads the CPU use through CRI ContainerStats on every
	// poll instead of from the container's cgroup (cgroupcpu.go), which
	// is the default and falls back to CRI by itself where it cannot.
	CPUFromCRI bool
}

// DefaultWarmupPolicy: a busy loop's CPU stops growing in CRI stats within
// one poll of its end, so one poll under 0.1 cores says the warm-up is
// over. Every poll of idle time is a slot held for nothing: in a 40-pod
// burst on 2 cores, 250 ms polls cost startgate 1.45 times direct's
// makespan and 100 ms polls 1.18, and one idle poll instead of two took
// admission alone from 1.19 to 1.03 times the best fixed limit's p50
// (startgate-bench, docs/benchmarks.md), for ten reads a second per
// warming container, which is why they are cgroup file reads
// (cgroupcpu.go) rather than CRI calls. A start that pauses on IO for a
// poll gives its slot back early; IO pressure then holds the next ones.
// 60 s caps a start that never settles (a service that stays busy).
func DefaultWarmupPolicy() WarmupPolicy {
	return WarmupPolicy{Poll: 100 * time.Millisecond, SettleCores: 0.1, SettlePolls: 1, Cap: 60 * time.Second}
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

// warmer holds pod slots until the pods' warm-ups end.
//
// A pod takes one slot, not one per call: taken at RunPodSandbox, shared by
// the containers kubelet then creates in the pod, and given back when every
// container created under it has finished its warm-up (settled, exited,
// failed to start, removed), when the pod is stopped, or at the cap. With a
// slot per call, a burst's sandboxes all queue ahead of its containers and
// almost no pod is ready until most sandboxes are through; with a slot per
// pod, a pod that is admitted runs to ready before the next one starts. A
// container created after its pod's slot was given back (a second wave of
// containers) takes a slot of its own the same way.
type warmer struct {
	p *Proxy
	// procRoot is where the run-queue waits and the containers'
	// cgroups are read (/proc); cgroupRoot is where cgroups are
	// mounted (/sys/fs/cgroup).
	procRoot   string
	cgroupRoot string
	mu         sync.Mutex
	// Guarded by mu.
	pods       map[string]*podSlot // by sandbox ID
	containers map[string]*warmingContainer
}

type podSlot struct {
	release func()
	uid     string // the pod's UID, from its sandbox config
	at      time.Time
	// users counts containers created under the slot whose warm-up is
	// not over, plus creates in progress.
	users int
}

type warmingContainer struct {
	sandbox string
	started bool
	// stop is closed when the pod's slot ends before the container's
	// warm-up does (the pod reported Ready, was stopped or removed): its
	// watcher has nothing left to decide.
	stop chan struct{}
}

func newWarmer(p *Proxy) *warmer {
	return &warmer{p: p, procRoot: "/proc", cgroupRoot: "/sys/fs/cgroup", pods: make(map[string]*podSlot), containers: make(map[string]*warmingContainer)}
}

// sandboxStarted keeps the pod's slot after RunPodSandbox succeeded.
func (w *warmer) sandboxStarted(sandbox, uid string, release func()) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	// Pods whose containers never came: their leases have expired at the
	// cap; forget them.
	for id, s := range w.pods {
		if now.Sub(s.at) > w.p.cfg.Warmup.Cap {
			w.endPodLocked(id)
		}
	}
	if _, ok := w.pods[sandbox]; ok {
		w.endPodLocked(sandbox) // a sandbox run twice: one slot is enough
	}
	w.pods[sandbox] = &podSlot{release: release, uid: uid, at: now}
}

// join attaches a create to the pod's slot; it reports false if the pod
// holds none, and the create must take one (then adopt it).
func (w *warmer) join(sandbox string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	s, ok := w.pods[sandbox]
	if ok {
		s.users++
	}
	return ok
}

// adopt makes a slot taken at CreateContainer the pod's, with the create
// counted as its user.
func (w *warmer) adopt(sandbox, uid string, release func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if old, ok := w.pods[sandbox]; ok {
		// Another create of the pod took one meanwhile: share it.
		old.users++
		release()
		return
	}
	w.pods[sandbox] = &podSlot{release: release, uid: uid, at: time.Now(), users: 1}
}

// created records a container created under its pod's slot; createFailed
// undoes the join when CreateContainer failed.
func (w *warmer) created(id, sandbox string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.containers[id] = &warmingContainer{sandbox: sandbox, stop: make(chan struct{})}
}

func (w *warmer) createFailed(sandbox string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.leaveLocked(sandbox)
}

// leaveLocked drops one user of the pod's slot, giving it back with the
// last.
func (w *warmer) leaveLocked(sandbox string) {
	s, ok := w.pods[sandbox]
	if !ok {
		return
	}
	s.users--
	if s.users <= 0 {
		s.release()
		delete(w.pods, sandbox)
	}
}

// done ends a container's part in its pod's slot; it is idempotent.
func (w *warmer) done(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	c, ok := w.containers[id]
	if !ok {
		return
	}
	delete(w.containers, id)
	w.leaveLocked(c.sandbox)
}

// notStarted: StartContainer failed, or the container was stopped or
// removed before it started; there is no warm-up to wait for. A container
// already being watched ends through its watcher.
func (w *warmer) notStarted(id string) {
	w.mu.Lock()
	c, ok := w.containers[id]
	watching := ok && c.started
	w.mu.Unlock()
	if !watching {
		w.done(id)
	}
}

// podEnded gives back the slot of a pod kubelet stops or removes.
func (w *warmer) podEnded(sandbox string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.endPodLocked(sandbox)
}

// podReady gives back the slot of the pod with this UID, which reported
// Ready; it reports whether the pod held one.
func (w *warmer) podReady(uid string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for sb, s := range w.pods {
		if s.uid == uid {
			w.endPodLocked(sb)
			return true
		}
	}
	return false
}

// endPodLocked gives back the pod's slot and stops the watchers of its
// containers.
func (w *warmer) endPodLocked(sandbox string) {
	s, ok := w.pods[sandbox]
	if !ok {
		return
	}
	s.release()
	delete(w.pods, sandbox)
	for id, c := range w.containers {
		if c.sandbox == sandbox {
			close(c.stop)
			delete(w.containers, id)
		}
	}
}

// waitsForReady reports whether the container's pod ends its warm-up at
// Ready (see PodView.WaitsForReady) rather than when its CPU settles.
func (w *warmer) waitsForReady(id string) bool {
	if w.p.cfg.Pods == nil {
		return false
	}
	w.mu.Lock()
	uid := ""
	if c, ok := w.containers[id]; ok {
		if s, ok := w.pods[c.sandbox]; ok {
			uid = s.uid
		}
	}
	w.mu.Unlock()
	return uid != "" && w.p.cfg.Pods.WaitsForReady(uid)
}

// releaseAll gives back every slot, at Stop.
func (w *warmer) releaseAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for id := range w.pods {
		w.endPodLocked(id)
	}
	clear(w.containers)
}

// started begins watching the container; its part in the pod's slot ends
// when it settles or exits, or, for a pod that waits for Ready, when the
// pod reports Ready. The lease's own hold cap ends the slot in any case.
func (w *warmer) started(id string) {
	w.startedAt(id, time.Now())
}

// startedAt is started for a container whose warm-up cap counts from
// since (a restored one's: its creation, before the restart).
func (w *warmer) startedAt(id string, since time.Time) {
	w.mu.Lock()
	c, ok := w.containers[id]
	if ok {
		c.started = true
	}
	w.mu.Unlock()
	if !ok {
		return // created before startgated, or its slot already ended
	}
	w.p.wg.Add(1)
	go func() {
		defer w.p.wg.Done()
		defer w.done(id)
		reason := w.watch(id, c.stop, since.Add(w.p.cfg.Warmup.Cap))
		w.p.log.Debug("warm-up over", zap.String("container", id), zap.String("reason", reason))
	}()
}

// restored records a pod whose slot was held before a restart, with the
// containers (created or running) still warming up in it; running ones
// are watched as if just started, their caps counting from their
// creation. A pod with none holds its slot for the containers kubelet is
// about to create, as after RunPodSandbox.
func (w *warmer) restored(sandbox, uid string, at time.Time, release func(), ctrs []*runtimeapi.Container) {
	w.mu.Lock()
	if _, ok := w.pods[sandbox]; ok {
		// Taken by a call that came meanwhile: that slot counts.
		w.mu.Unlock()
		release()
		return
	}
	w.pods[sandbox] = &podSlot{release: release, uid: uid, at: at, users: len(ctrs)}
	for _, c := range ctrs {
		w.containers[c.GetId()] = &warmingContainer{sandbox: sandbox, stop: make(chan struct{})}
	}
	w.mu.Unlock()
	for _, c := range ctrs {
		if c.GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING {
			w.startedAt(c.GetId(), time.Unix(0, c.GetCreatedAt()))
		}
	}
}

// watch polls the container until it settles, exits, its pod's slot ends
// or the proxy stops, and says which. A container whose pod waits for
// Ready is not done when it settles: kubelet's probe says when it is,
// and a container starved of CPU on a loaded node looks settled too.
func (w *warmer) watch(id string, stop <-chan struct{}, deadline time.Time) string {
	pol := w.p.cfg.Warmup
	t := time.NewTicker(pol.Poll)
	defer t.Stop()
	var lastUsage uint64
	var lastAt time.Time
	idle := 0
	starve := &starvation{w: w, id: id}
	// cg is the container's cgroup counter (cgroupcpu.go), nil while
	// its CPU is read through CRI.
	var cg *cgroupCPU
	triedCgroup := false
	for {
		select {
		case <-w.p.stopCh:
			return "proxy stopping"
		case <-stop:
			return "pod ready or ended"
		case <-t.C:
			if time.Now().After(deadline) {
				return "cap"
			}
			if !triedCgroup && !pol.CPUFromCRI {
				triedCgroup = true
				if pid := starve.lookup(); pid > 0 {
					c, err := findCgroupCPU(w.procRoot, w.cgroupRoot, pid)
					if err == nil {
						cg = &c
					} else {
						w.p.log.Debug("warm-up CPU through CRI", zap.String("container", id), zap.Error(err))
					}
				}
			}
			// The usage is divided by the time between two reads of it,
			// taken when it was read (the runtime's own timestamp through
			// CRI). Not the ticker's time: on a loaded node a poll runs
			// late, and a late read against an on-time tick makes a busy
			// container look idle.
			var usage uint64
			var now time.Time
			read := false
			if cg != nil {
				u, err := cg.usage()
				if err == nil {
					usage, now, read = u, time.Now(), true
				} else {
					cg = nil // removed: CRI says so, and says the rest
				}
			}
			if !read {
				ctx, cancel := context.WithTimeout(context.Background(), pol.Poll*4)
				st, err := w.p.runtime.ContainerStats(ctx, &runtimeapi.ContainerStatsRequest{ContainerId: id})
				cancel()
				now = time.Now()
				if ts := st.GetStats().GetCpu().GetTimestamp(); ts > 0 {
					now = time.Unix(0, ts)
				}
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
				usage = cpu.GetUsageCoreNanoSeconds().GetValue()
			}
			starved := starve.starved(pol.SettleCores)
			if !lastAt.IsZero() {
				cores := float64(usage-lastUsage) / float64(now.Sub(lastAt).Nanoseconds())
				switch {
				case usage >= lastUsage && cores >= pol.SettleCores:
					idle = 0
				case starved:
					// Not idle: waiting for a CPU.
					idle = 0
					if !starve.said {
						starve.said = true
						w.p.log.Debug("warm-up starved of CPU, not settled", zap.String("container", id))
					}
				default:
					idle++
				}
				if idle >= pol.SettlePolls {
					if w.exited(id) {
						return "exited"
					}
					if pol.SettleBeforeReady || !w.waitsForReady(id) {
						from := "cri"
						if cg != nil {
							from = "cgroup"
						}
						w.p.log.Debug("settled", zap.String("container", id), zap.Float64("cores", cores), zap.String("cpu_from", from),
							zap.Int("pid", starve.pid), zap.Float64("runqueue_cores", starve.rate))
						return "settled"
					}
					idle = 0
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

// starvation follows how long a container's tasks wait on a run queue,
// poll to poll (see starved.go).
type starvation struct {
	w  *warmer
	id string
	// pid is the container's init; 0 until looked up, -1 when it cannot
	// be (the runtime gives none): then nothing is ever starved.
	pid    int
	last   time.Duration
	lastAt time.Time
	// said: the debug line was logged.
	said bool
	// rate is the last poll's run-queue wait, in cores.
	rate float64
}

// lookup finds the container's init pid once (CRI ContainerStatus,
// verbose), and returns it, or -1.
func (s *starvation) lookup() int {
	if s.pid == 0 {
		s.pid = -1
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := s.w.p.runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: s.id, Verbose: true})
		cancel()
		if err == nil {
			if pid, ok := containerPID(st.GetInfo()); ok {
				s.pid = pid
			}
		}
	}
	return s.pid
}

// starved reports whether the container's tasks waited at least cores of
// a core on a run queue since the last call; the first call only reads.
func (s *starvation) starved(cores float64) bool {
	if s.lookup() < 0 {
		return false
	}
	wait, runnable, err := runQueue(s.w.procRoot, s.pid)
	now := time.Now()
	if err != nil {
		s.pid = -1 // exited: its CPU counter says the rest
		return false
	}
	prev, prevAt := s.last, s.lastAt
	s.last, s.lastAt = wait, now
	s.rate = 0
	if !prevAt.IsZero() && wait >= prev {
		s.rate = float64(wait-prev) / float64(now.Sub(prevAt))
	}
	return runnable || s.rate >= cores
}
