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
// state:
//
//   - direct: kubelet on containerd's socket;
//   - fixed-K: kubelet on startgated with the in-flight limit pinned at K
//     ([admission.limits] inflight = K, rate 1000/s): what a user of a
//     constant limit (pod-pacemaker and the like) runs;
//   - startgate: kubelet on startgated as shipped, with the pod watch on;
//   - startgate-prefetch: the same with [prefetch] on, and before each
//     rollout the patch is announced (PrefetchAdd, as a CI step's
//     `startgatectl prefetch add` does) and fetched before the rollout
//     starts; the fetch's time is reported, not counted.
//
// Kubelet pulls one image at a time (its default) unless --parallel-pulls
// sets serializeImagePulls false and maxParallelImagePulls.
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
// Every round runs every mode once (the order reversed in even rounds),
// and each mode runs the scenarios asked for, in this order, on a quiet
// node each time:
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
// Then the Deployment is scaled to 0 and the node emptied.
//
// # What is measured
//
// Per pod, from its creation to its Ready condition, as a pod watch sees
// them (the API's timestamps have one-second resolution; the watch's
// delivery is milliseconds); for reboot, from the kubelet's start to the
// pod's Ready with its new container. Per scenario run: p50, p90, p99
// (nearest rank), completion (from the scenario's start until every new
// pod is Ready and no old one is left), pods not Ready in time, container
// restarts (after a reboot, beyond the one kubelet counts for the
// container the reboot made it re-create), each pod's pull (kubelet's "Successfully pulled image ... in
// X (Y including waiting)" event), and kubelet's own
// kubelet_pod_start_sli_duration_seconds and
// kubelet_pod_start_total_duration_seconds (read through the API server's
// node proxy before and after, the histograms' difference). During
// startgated modes the gate's Status is sampled (bench.GateSample).
//
// Ratios to direct are taken within a round (the modes ran minutes apart
// on the same node), then the median over rounds is reported with its
// range: this machine's noise moves a single ratio by 0.3.
//
// --charts DIR writes a chart per scenario (kube-SCENARIO.svg: the pods'
// time to Ready as a CDF per mode, rounds pooled); --report FILE prints
// the tables and charts of a run saved with --json, without running.
package kubebench
