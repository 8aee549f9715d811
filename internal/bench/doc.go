// Package bench is startgate-bench: bursts of pods on a real containerd,
// started the way kubelet starts them, once per mode, side by side.
//
// # What it measures
//
// N pods (default 40) start at once. Each container prints "start", runs a
// CPU-bound shell loop of about 0.2 CPU-seconds, prints "ready" and sleeps
// like a service. A pod's figure is its time to ready: from the burst's
// start to the ready line's timestamp in the container's CRI log, which
// containerd writes, so the client's polling never enters it. Per mode:
// p50, p90, p99 (nearest rank), mean, makespan, failures, retries, and
// each as a ratio to direct; and the ideal lower bound: one pod's
// measured time alone, run first in, first out, as many at a time as the
// node has cores (Ideal).
//
// # Modes
//
//   - direct: the client talks to containerd, nothing limits it;
//   - fixed-K: the same with a client-side semaphore of K pods in flight,
//     each held from RunPodSandbox to its ready line (what pod-pacemaker
//     style tools do);
//   - startgate: the client talks to startgated's CRI socket, the proxy in
//     front of the same containerd.
//
// Modes alternate within a run: every round runs each mode once, in the
// given order in odd rounds and reversed in even ones. Between bursts all
// pods are torn down (StopPodSandbox, RemovePodSandbox, through the mode's
// own endpoint) and the next burst waits until CPU pressure is low (Quiet).
//
// # The client
//
// One goroutine per pod plays kubelet's pod worker (podWorker) with
// kubelet's own CRI client (k8s.io/cri-client): RunPodSandbox,
// CreateContainer, StartContainer, each with kubelet's 2-minute timeout
// (4 for RunPodSandbox); a failed call is retried after kubelet's 10 s
// back-off with the same names, and counted.
//
// # The node
//
// startNode starts a testbed containerd (internal/testbed), imports the
// busybox app image and, when a mode needs it, runs startgated with the
// CRI proxy in front of it as a child process: this binary re-executed
// with an environment marker (RunChild), so no build step is needed and
// the daemon's goroutines and GC do not share a process with the client
// being timed. Everything is stopped at the end, also on Ctrl-C.
//
// # Calibration
//
// Before the bursts, probe pods size the loop to the init CPU time asked
// for, then three pods run alone; their median time to ready is the unit
// of the ideal bound.
//
// # Extending it (issue 5)
//
// A prefetch mode is a Mode with one more field, acted on by the node
// before the burst; IO-bound and mixed init are Workload kinds; a patched
// image pulled before the containers start is one more step in
// podWorker.sync. Run's Options carry the daemon's extra config for
// tuning runs.
package bench
