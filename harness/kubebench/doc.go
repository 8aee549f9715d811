// Package kubebench is `startgate-bench kube`: the rollout benchmark on a
// real one-node Kubernetes cluster (issue 10), measured as the cluster
// sees it.
//
// # The node
//
// One node on this machine, built from the testbed: a private containerd
// with its own pod network (a bridge and a /24), a docker-registry that is
// far away (testbed.Link: 100 Mbit/s, 20 ms round trip, a bearer token
// per pull from a token service behind the same link), and a real control
// plane and kubelet (testbed/cluster, Kubernetes v1.34). The control plane
// runs for the whole benchmark; the kubelet and startgated are restarted
// for every mode, on an empty node, so each mode starts from the same
// state.
//
// # The modes (mode.go)
//
// A mode is BASE[+OPTION...]. The bases take startgate apart:
//
//   - direct: kubelet on containerd's socket;
//   - proxy: kubelet on startgated with the gate bypassed (SetBypass):
//     the CRI proxy's pull path alone (the pull lane, shared resolutions);
//   - gate: kubelet on startgated with [cri.pulls] enabled = false:
//     admission alone, every pull forwarded as kubelet sent it;
//   - startgate: both, as shipped, with the pod watch on;
//   - startgate-prefetch: the same with [prefetch] on; before each
//     rollout the patch is announced (PrefetchAdd, as a CI step's
//     `startgatectl prefetch add` does) and fetched, and the fetch's time
//     is reported, not counted;
//   - fixed-K: startgate with the in-flight limit pinned at K;
//   - pacemaker, pacemaker-K: kubelet on containerd with pod-pacemaker
//     (pacemaker.go) at its chart's default or at concurrency K.
//
// The options are what a user sets instead: parallel-N and parallel-all
// (kubelet's serializeImagePulls false, maxParallelImagePulls N or none),
// qps-N (registryPullQPS; 0 is no limit), ifnotpresent (imagePullPolicy
// IfNotPresent: the rollout then moves the template to the patch's
// digest, as those users roll out) and startup (a startup probe equal to
// the readiness probe, which is what pod-pacemaker waits for).
//
// # The app
//
// A Deployment of N replicas (default 40) of busybox plus one layer of
// --patch-size random bytes, imagePullPolicy Always. Each container does
// its init work, then serves HTTP on 8080; a readiness probe (HTTP GET,
// every second) passes once it serves. The pods are on the pod network,
// not hostNetwork: hostNetwork replicas would share one port, and only an
// exec probe would be left (a runc exec per pod per second, on 2 cores
// the benchmark's main load, and exec probes fail in the new-machine root,
// docs/testbed.md).
//
//   - cpu: a busy shell loop until the container's own cgroup shows
//     --init-cpu of CPU time (the kernel's count, so no calibration and
//     the same work under any contention);
//   - io: write --io-size to a file in the container's root filesystem,
//     fsync it and read it back with O_DIRECT;
//   - mixed: even pods cpu, odd pods io (by the pod's name hash: the
//     Deployment's pods are alike, so each container picks its half from
//     its hostname).
//
// # The scenarios
//
// A warm-up round (round 0, every mode once, kept in the raw data and
// never counted) comes first, then the counted rounds, each running
// every mode once in the order of a Williams design's row (run.go,
// roundOrder): over as many rounds as modes, every mode runs once in
// every position. Each mode runs the scenarios asked for, in this order,
// on a quiet node each time:
//
//   - scale-up: the Deployment scaled from 0 to N; the node has the image
//     (tag unchanged), so every pull only resolves the tag;
//   - recreate: a patch pushed (the last layer replaced), then a rollout
//     restart with the Recreate strategy: all N old pods go, N new ones
//     start;
//   - rolling: another patch, and a rollout restart with the default
//     RollingUpdate (25% surge, 25% unavailable);
//   - reboot: the kubelet stopped, every pod sandbox killed (what a
//     reboot does to them), containerd restarted, startgated restarted,
//     the kubelet started: the N pods come back at once.
//
// Then the Deployment is scaled to 0 and the node emptied. With --load N,
// N busy loops (a core each, load.go) run while each scenario is
// measured: the other tenants of a node, whose pressure the gate sees.
//
// # What is measured
//
// Per pod, the objects' own times: its creationTimestamp to its Ready
// condition's lastTransitionTime (one-second resolution; reboot: from
// the kubelet's start, to the second); the watch's delivery times are
// kept beside them in the raw data. A pod not Ready by the deadline, or
// never created, counts at the deadline: never dropped. Per round: p50,
// p90, p99 (nearest rank over the round's pods), completion (from the
// scenario's start until every new pod is Ready and no old one is left),
// the node's idle CPU over the run and while starts waited in startgated
// (cpu.go: /proc/stat and the gate's queue, every 250 ms), container
// restarts, each pod's pull (kubelet's Pulled event) and kubelet's own
// pod start histograms.
//
// Where the CPU went (cpuby.go, the local node only): from the
// scenario's start to its end, the machine's busy core-seconds split into
// the pods' (their cgroups' cpuacct), kubelet's, containerd's (with the
// CNI plugins and shim starts it reaped), the shims', startgated's,
// pod-pacemaker's, the control plane's, the harness's own and the rest,
// from /proc every 500 ms: a gate that saves work shows it here, and so
// does one that costs some of its own.
//
// The ideal bound (ideal.go): one pull of the patch plus every pod's CPU
// (the kubelet's stats summary) over the cores, from the same round's
// runs; with the patch prefetched, the CPU alone. Each mode's completion
// is reported over it.
//
// Over rounds (report.go, harness/stats): each figure's median with its
// range; against direct, the proxy alone and the best users' alternative
// (the lowest median p50 among kubelet's settings, fixed limits and
// pod-pacemaker), the ratio taken within each round, its median with a
// 95% bootstrap interval, and a verdict: better or worse when the
// interval excludes 1, else not distinguishable at this noise.
//
// --json FILE keeps everything (per pod: timestamps; per run: mode,
// round, position, the gate's and the CPU's samples; the machine, kernel,
// versions and commit); `make bench-kube` writes it under
// docs/bench-data. --report FILE prints the tables and --charts DIR
// draws a chart per scenario (kube-SCENARIO.svg: the pods' time to Ready
// as a CDF per mode, counted rounds pooled) from such a file, without
// running.
package kubebench
