// Package devcluster is startgate-cluster (`make cluster`): a one-node
// Kubernetes cluster on this machine with startgated in kubelet's path,
// for trying startgate by hand with kubectl.
//
// Run makes one session directory, /tmp/sgc-NNN, and starts in it, in
// order:
//
//  1. a private containerd (harness/testbed), its CNI conf dir empty;
//  2. a loopback registry (testbed.StartRegistry) with a busybox image
//     pushed as 127.0.0.1:PORT/startgate/busybox:1, which containerd pulls
//     over plain HTTP;
//  3. the cluster's control plane (harness/testbed/cluster, NoKubelet);
//  4. startgated, unless --direct: this binary re-executed with
//     STARTGATE_CLUSTER_RUN_STARTGATED=1 (so the daemon is the one of the
//     same tree, with no build step), its CRI proxy in front of the
//     containerd, its pod watch ([kubernetes]) on the node's own
//     kubeconfig, config, API and CRI sockets and log in DIR/startgated;
//     up when a CRI Version answers through the proxy;
//  5. the kubelet, its runtime endpoint startgated's CRI socket
//     (containerd's with --direct), and the wait for a Ready node.
//
// It prints the kubeconfig, an export line, the image reference, a
// Deployment that runs here (DIR/web.yaml, on the testbed's pod network),
// the startgatectl commands that watch the gate, and
// waits. On SIGINT or SIGTERM, or if startgated dies, it stops everything
// in reverse order (cluster, startgated, registry, containerd with every
// pod) and removes DIR. Every child is in its own process group, so the
// terminal's Ctrl-C reaches this process alone and the teardown runs in
// order; a second Ctrl-C does not cut it short.
package devcluster
