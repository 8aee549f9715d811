package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/startgate/startgate/harness/testbed"
)

// Pod is one pod of a burst.
type Pod struct {
	Name string `json:"name"`
	// Work is the pod's workload kind (cpu or io).
	Work string `json:"work"`
	// Ready is the time from the burst's start to the container's ready
	// line (CRI log time); zero when the pod failed.
	Ready time.Duration `json:"ready_ns"`
	// Init is the time from the container's start line to its ready
	// line: the init work's wall time under this mode's contention.
	Init time.Duration `json:"init_ns"`
	// Pull is the time from the pod's first call to its PullImage's
	// return: waiting for the node's one pull at a time, and the pull.
	// Zero when the burst pulls nothing (calibration).
	Pull time.Duration `json:"pull_ns,omitempty"`
	// Retries counts failed CRI calls that were retried after the
	// back-off.
	Retries int `json:"retries"`
	// Errors are the failed calls' errors, in order.
	Errors []string `json:"errors,omitempty"`
	// Calls are the successful calls' latencies by method: how long the
	// client waited in each (for startgate, gate time included).
	Calls map[string]time.Duration `json:"calls_ns,omitempty"`
	// CPU is the container's CPU time at its ready line (CRI
	// ContainerStats), measured for calibration pods only.
	CPU time.Duration `json:"cpu_ns,omitempty"`
	// FailReason says why the pod never became ready; "" when it did.
	FailReason string `json:"fail_reason,omitempty"`
}

// Failed reports whether the pod never became ready.
func (p *Pod) Failed() bool { return p.FailReason != "" }

// Burst is one mode's run of N pods started at once.
type Burst struct {
	Mode  string    `json:"mode"`
	Round int       `json:"round"`
	Start time.Time `json:"start"`
	// Patch is the digest pushed under the app's tag before the burst.
	Patch string `json:"patch,omitempty"`
	// Prefetch is how long startgated took, from PrefetchAdd, to show
	// the patch fetched (startgate-prefetch only); PrefetchError says
	// why it did not, and the burst then ran anyway.
	Prefetch      time.Duration `json:"prefetch_ns,omitempty"`
	PrefetchError string        `json:"prefetch_error,omitempty"`
	Pods          []Pod         `json:"pods"`
	// Gate is startgated's gate during a startgate burst (Status every
	// 250 ms from just before the burst until its last pod is ready).
	Gate []GateSample `json:"gate,omitempty"`
}

// Kubelet is how the client behaves, after kubelet's defaults.
type Kubelet struct {
	// Timeout is each CRI call's timeout (kubelet's
	// --runtime-request-timeout, 2 minutes); the CRI client gives
	// RunPodSandbox twice this.
	Timeout time.Duration
	// Backoff is the wait before a pod whose sync failed is synced again
	// (kubelet's pod worker backOffPeriod, 10 s).
	Backoff time.Duration
}

// DefaultKubelet is kubelet's defaults.
func DefaultKubelet() Kubelet {
	return Kubelet{Timeout: 2 * time.Minute, Backoff: 10 * time.Second}
}

// burstSpec is everything a burst needs; the node fills it in.
type burstSpec struct {
	mode     Mode
	round    int
	pods     int
	workload Workload
	rs       internalapi.RuntimeService
	images   internalapi.ImageManagerService
	image    string
	// pull: every pod pulls image first, one pull at a time on the
	// node (kubelet's default serialize-image-pulls, with
	// imagePullPolicy Always).
	pull bool
	// pullInSandbox: the pull comes after RunPodSandbox (kubelet's own
	// order) instead of before it.
	pullInSandbox bool
	logRoot       string // pod log directories go under it
	kubelet       Kubelet
	// deadline bounds the whole burst: a pod not ready by then failed.
	deadline time.Duration
	// poll is how often a started container's log is read for its ready
	// line; it only decides when the client learns of readiness (and
	// frees a fixed-K slot), not the measured time.
	poll time.Duration
	// measureCPU: read each container's CPU time once it is ready (one
	// more CRI call per pod, so only for calibration).
	measureCPU bool
	// progress, if not nil, is called with the counts now and then.
	progress func(ready, failed int, elapsed time.Duration)
}

// namespace is the pods' namespace: an ordinary tenant, class normal.
const namespace = "bench"

// runBurst starts spec.pods pods at once, as many kubelet pod workers
// would, and returns when every pod is ready or failed. It does not tear
// them down.
func runBurst(ctx context.Context, spec burstSpec) Burst {
	ctx, cancel := context.WithTimeout(ctx, spec.deadline)
	defer cancel()
	b := Burst{Mode: spec.mode.Name, Round: spec.round, Pods: make([]Pod, spec.pods)}
	var sem chan struct{}
	if spec.mode.Limit > 0 {
		sem = make(chan struct{}, spec.mode.Limit)
	}
	var ready, failed atomic.Int64
	// Kubelet's serialized puller is one worker for the node; one burst
	// runs at a time, so one per burst is one per node.
	pullMu := make(chan struct{}, 1)
	begin := make(chan struct{})
	var wg sync.WaitGroup
	for i := range b.Pods {
		p := &b.Pods[i]
		p.Name = fmt.Sprintf("%s-r%d-%03d", spec.mode.Name, spec.round, i)
		work := spec.workload.forPod(i)
		p.Work = work.Kind
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-begin
			w := podWorker{spec: &spec, pod: p, start: b.Start, work: work, pullMu: pullMu}
			w.run(ctx, sem)
			if p.Failed() {
				failed.Add(1)
			} else {
				ready.Add(1)
			}
		}()
	}
	// Every worker is parked on begin: the burst starts for all at once.
	b.Start = time.Now()
	close(begin)

	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			if spec.progress != nil {
				spec.progress(int(ready.Load()), int(failed.Load()), time.Since(b.Start))
			}
			return b
		case <-tick.C:
			if spec.progress != nil {
				spec.progress(int(ready.Load()), int(failed.Load()), time.Since(b.Start))
			}
		}
	}
}

// podWorker syncs one pod the way kubelet's pod worker does: image,
// sandbox, container, start; when a call fails, the same step again after the
// back-off, with the same names (so a call still running in containerd
// after the client's timeout shows up as kubelet sees it, "name is
// reserved"). A container that failed to start is removed and created
// again with the next attempt number, as kubelet's next sync would.
type podWorker struct {
	spec  *burstSpec
	pod   *Pod
	start time.Time // the burst's start; set before the worker runs
	work  Workload  // this pod's (mixed resolved)
	// pullMu is the node's one pull at a time.
	pullMu chan struct{}

	pulled                 bool
	sandboxID, containerID string
	attempt                uint32 // the container's
	sandbox                *runtimeapi.PodSandboxConfig
}

func (w *podWorker) run(ctx context.Context, sem chan struct{}) {
	if sem != nil {
		select {
		case sem <- struct{}{}:
			defer func() { <-sem }()
		case <-ctx.Done():
			w.pod.FailReason = "burst deadline passed waiting for a client-side slot"
			return
		}
	}
	w.sandbox = w.sandboxConfig()
	if err := os.MkdirAll(w.sandbox.LogDirectory, 0o755); err != nil {
		w.pod.FailReason = err.Error()
		return
	}
	for {
		err := w.sync(ctx)
		if err == nil {
			break
		}
		w.pod.Errors = append(w.pod.Errors, err.Error())
		if ctx.Err() != nil {
			w.pod.FailReason = "burst deadline passed: " + err.Error()
			return
		}
		w.pod.Retries++
		t := time.NewTimer(w.spec.kubelet.Backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			w.pod.FailReason = "burst deadline passed in back-off after: " + err.Error()
			return
		}
	}
	w.waitReady(ctx)
}

// sync makes the calls still missing; nil once the container started.
func (w *podWorker) sync(ctx context.Context) error {
	rs := w.spec.rs
	if w.spec.pull && !w.spec.pullInSandbox && !w.pulled {
		if err := w.pullImage(ctx); err != nil {
			return err
		}
		w.pulled = true
	}
	if w.sandboxID == "" {
		var id string
		err := w.timed("RunPodSandbox", func() (err error) {
			id, err = rs.RunPodSandbox(ctx, w.sandbox, "")
			return err
		})
		if err != nil {
			return err
		}
		w.sandboxID = id
	}
	if w.spec.pull && w.spec.pullInSandbox && !w.pulled {
		if err := w.pullImage(ctx); err != nil {
			return err
		}
		w.pulled = true
	}
	if w.containerID == "" {
		var id string
		err := w.timed("CreateContainer", func() (err error) {
			id, err = rs.CreateContainer(ctx, w.sandboxID, w.containerConfig(), w.sandbox)
			return err
		})
		if err != nil {
			return err
		}
		w.containerID = id
	}
	err := w.timed("StartContainer", func() error { return rs.StartContainer(ctx, w.containerID) })
	if err != nil {
		// Best effort, as kubelet's next sync: the sandbox's removal at
		// teardown takes the container with it anyway.
		_ = rs.RemoveContainer(ctx, w.containerID)
		w.containerID = ""
		w.attempt++
		return err
	}
	return nil
}

// pullImage pulls the pod's image as kubelet's serialized puller does:
// after every pull queued before it on the node. No sandbox config is
// passed (containerd's CRI uses it only for a runtime handler's
// snapshotter).
func (w *podWorker) pullImage(ctx context.Context) error {
	t0 := time.Now()
	select {
	case w.pullMu <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("PullImage: waiting for the node's pull worker: %w", ctx.Err())
	}
	err := w.timed("PullImage", func() error {
		_, err := w.spec.images.PullImage(ctx, &runtimeapi.ImageSpec{Image: w.spec.image}, nil, nil)
		return err
	})
	<-w.pullMu
	if err == nil {
		w.pod.Pull = time.Since(t0)
	}
	return err
}

func (w *podWorker) timed(method string, call func() error) error {
	t0 := time.Now()
	err := call()
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	if w.pod.Calls == nil {
		w.pod.Calls = make(map[string]time.Duration, 4)
	}
	w.pod.Calls[method] = time.Since(t0)
	return nil
}

// waitReady reads the container's log until its ready line appears.
func (w *podWorker) waitReady(ctx context.Context) {
	path := filepath.Join(w.sandbox.LogDirectory, w.logPath())
	tick := time.NewTicker(w.spec.poll)
	defer tick.Stop()
	var lastSize int64 = -1
	for {
		if fi, err := os.Stat(path); err == nil && fi.Size() != lastSize {
			lastSize = fi.Size()
			if b, err := os.ReadFile(path); err == nil {
				if m := parseLog(b); !m.ready.IsZero() {
					w.pod.Ready = m.ready.Sub(w.start)
					if !m.start.IsZero() {
						w.pod.Init = m.ready.Sub(m.start)
					}
					if w.spec.measureCPU {
						w.readCPU(ctx)
					}
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			w.pod.FailReason = "started, but no ready line before the burst deadline"
			if errors.Is(ctx.Err(), context.Canceled) {
				w.pod.FailReason = "interrupted before its ready line"
			}
			return
		case <-tick.C:
		}
	}
}

// readCPU records the container's CPU time so far: once the ready line is
// out, the container only sleeps, so this is its init work's CPU time.
func (w *podWorker) readCPU(ctx context.Context) {
	st, err := w.spec.rs.ContainerStats(ctx, w.containerID)
	if err != nil {
		w.pod.Errors = append(w.pod.Errors, "ContainerStats: "+err.Error())
		return
	}
	w.pod.CPU = time.Duration(st.GetCpu().GetUsageCoreNanoSeconds().GetValue())
}

func (w *podWorker) sandboxConfig() *runtimeapi.PodSandboxConfig {
	uid := w.pod.Name + "-uid"
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: w.pod.Name, Namespace: namespace, Uid: uid},
		LogDirectory: filepath.Join(w.spec.logRoot, namespace+"_"+w.pod.Name+"_"+uid),
		Labels:       map[string]string{"app": "startgate-bench", "startgate-bench/mode": w.spec.mode.Name},
		Annotations:  map[string]string{"kubernetes.io/config.source": "api"},
		Linux:        testbed.HostNetwork(),
	}
}

func (w *podWorker) logPath() string { return "app_" + strconv.Itoa(int(w.attempt)) + ".log" }

func (w *podWorker) containerConfig() *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "app", Attempt: w.attempt},
		Image:    &runtimeapi.ImageSpec{Image: w.spec.image},
		Command:  w.work.Command(),
		LogPath:  w.logPath(),
		Labels:   map[string]string{"app": "startgate-bench"},
	}
}

// teardown stops and removes every pod sandbox rs lists (removing a
// sandbox removes its containers), a few at a time, through the mode's own
// endpoint, as kubelet would. The benchmark owns the testbed, so every
// sandbox on it is one of its own, including any whose RunPodSandbox the
// client gave up on but containerd finished.
func teardown(ctx context.Context, rs internalapi.RuntimeService) error {
	sbs, err := rs.ListPodSandbox(ctx, nil)
	if err != nil {
		return fmt.Errorf("bench: teardown: list sandboxes: %w", err)
	}
	const workers = 4
	ids := make(chan string)
	errs := make(chan error, len(sbs))
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range ids {
				if err := rs.StopPodSandbox(ctx, id); err != nil {
					errs <- fmt.Errorf("bench: teardown: stop sandbox %s: %w", id, err)
					continue
				}
				if err := rs.RemovePodSandbox(ctx, id); err != nil {
					errs <- fmt.Errorf("bench: teardown: remove sandbox %s: %w", id, err)
				}
			}
		}()
	}
	for _, sb := range sbs {
		ids <- sb.GetId()
	}
	close(ids)
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}
