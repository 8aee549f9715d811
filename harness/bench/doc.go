// Package bench is startgate-bench: the patch-rollout burst on a real
// containerd, started the way kubelet starts it, once per mode, side by
// side (issue 5).
//
// # The scenario
//
// The app image is served by the testbed's registry (docker-registry on
// 127.0.0.1:PORT; containerd's CRI pulls from it over plain HTTP, and the
// name has no host to look up): busybox plus one layer of --patch-size
// random bytes (20 MiB by default, incompressible). Before the bursts the
// node pulls the tag through the CRI, as a node running the app has it.
// Before each burst a patch is pushed: the same tag, that layer replaced
// by new random bytes, a new digest. Then N pods (default 40) start at
// once on the tag. Each pod worker pulls it first (imagePullPolicy Always,
// so every pod pulls; kubelet's default serialize-image-pulls, so one pull
// at a time on the node: the first moves the layer, the others find it),
// then runs its sandbox and its one container, which prints "start", does
// its init work, prints "ready" and sleeps like a service.
//
// On loopback a 20 MiB layer moves in a fraction of a second and a tag
// resolves in microseconds, which hides what a prefetch saves and what
// each pod's pull costs, and no node pulls from a registry on itself. The
// registry is made far away (testbed.Link, a user-space link in front of
// it): --registry-mbps (DefaultRegistryMbps, 100 Mbit/s: a node's share
// of a remote registry, 1.7 s for the layer) caps every byte from the
// registry to the node, --registry-rtt (DefaultRegistryRTT, 20 ms) delays
// each byte by half of it each way and a new connection by all of it, and
// --registry-token (on) makes the registry ask for a bearer token from a
// token service behind the same link, as public registries do:
// containerd authenticates again on every PullImage, so each pod's pull
// of a tag whose layers are all local still costs about five round trips.
// The node pulls and startgated prefetches across the link; pushes go
// around it. --registry-mbps 0 --registry-rtt 0 --registry-token=false is
// loopback.
//
// A pod's figure is its time to ready: from the burst's start to the
// ready line's timestamp in the container's CRI log, which containerd
// writes, so the client's polling never enters it. Per mode: p50, p90,
// p99 (nearest rank), mean, makespan, failures, retries, the pull time
// (a pod's wait for the pull worker plus its PullImage; the burst's
// longest PullImage), the prefetch time, each figure as a ratio to direct;
// and the ideal lower bound: one pod's measured time alone, run first in,
// first out, as many at a time as the node has cores, no pull (Ideal).
//
// # Workloads
//
//   - cpu (default): a busy shell loop of about 0.2 CPU-seconds;
//   - io: write a file in the container's root filesystem (overlayfs
//     upper, on the node's disk), fsync it and read it back with
//     O_DIRECT, sized so that a lone pod's init takes as long as the cpu
//     one's;
//   - mixed: even pods cpu, odd pods io.
//
// # Modes
//
//   - direct: the client talks to containerd, nothing limits it;
//   - fixed-K: the same with a client-side semaphore of K pods in flight,
//     each held from its pull to its ready line (what pod-pacemaker style
//     tools do);
//   - startgate: the client talks to startgated's CRI socket, the proxy in
//     front of the same containerd: admission alone;
//   - startgate-prefetch: the same, and before the burst the patch is
//     announced to startgated (PrefetchAdd on its API socket, what a
//     pipeline would do) and the burst waits until PrefetchList shows the
//     new digest done (at most --prefetch-timeout; past it, or if the
//     prefetch fails, the burst runs anyway and the report warns). The
//     prefetch time is reported, not counted in time to ready: it happens
//     before the rollout. startgated's own resolve interval is an hour, so
//     the startgate mode, on the same daemon, never finds a patch
//     prefetched.
//
// Modes alternate within a run: every round runs each mode once, in the
// given order in odd rounds and reversed in even ones. Between bursts all
// pods are torn down (StopPodSandbox, RemovePodSandbox, through the mode's
// own endpoint) and the next burst waits until CPU pressure is low (Quiet),
// also after a prefetch, whose unpack is work of its own. During a
// startgate burst the gate's Status is sampled every 250 ms (GateSample:
// in-flight limit, rate, queue, pressure), for tuning: the JSON output
// carries the samples, the progress a summary.
//
// # The client
//
// One goroutine per pod plays kubelet's pod worker (podWorker) with
// kubelet's own CRI client (k8s.io/cri-client): PullImage (no timeout, as
// kubelet's), RunPodSandbox, CreateContainer, StartContainer, each with
// kubelet's 2-minute timeout (4 for RunPodSandbox); a failed call is
// retried after kubelet's 10 s back-off with the same names, and counted.
//
// # The node
//
// startNode starts a testbed containerd and registry (harness/testbed),
// pushes and pulls the app image and, when a mode needs it, runs startgated
// with the CRI proxy in front of the containerd (and [prefetch] on for the
// prefetch mode) as a child process: this binary re-executed with an
// environment marker (RunChild), so no build step is needed and the
// daemon's goroutines and GC do not share a process with the client being
// timed. Everything is stopped at the end (pods, startgated, containerd
// and its shims, the registry, their directories), also on Ctrl-C.
//
// # Calibration
//
// Before the bursts, probe pods size the CPU loop to the init CPU time
// asked for (CRI stats), then, for io and mixed, the IO size to the same
// wall time; then lone pods of each kind run alone, and their median time
// to ready is the unit of the ideal bound.
//
// # Output
//
// A markdown table on stdout, a chart (WriteChart: SVG, the CDF of time to
// ready per mode; --chart), optionally every pod's record as JSON. Progress
// on stderr: a bar per burst on a terminal, plain lines every few seconds
// otherwise (progress).
package bench
