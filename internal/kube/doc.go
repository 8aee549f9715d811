// Package kube is startgated's view of the Kubernetes API: the pods bound
// to this node, from one watch.
//
// # Why
//
// The CRI tells the proxy what kubelet asks for, not why, and kubelet
// syncs a pod under context.WithoutCancel (pkg/kubelet, TODO #113606): a
// pod deleted while its RunPodSandbox waits in the gate does not cancel
// that call. Deleting a 20-replica Deployment behind a slow gate left 17
// starts queued that were later admitted, created, started and killed,
// ahead of the pods that were wanted. And the CRI does not carry
// readiness, so the end of a pod's warm-up had to be guessed from its CPU
// use settling, which a container starved of CPU on a loaded node also
// shows. The API server knows both.
//
// # What
//
// Pods runs one shared informer on pods, narrowed by the field selector
// spec.nodeName=NODE, so a node costs the API server one watch (as
// kubelet's own), never a poll. Handlers only enqueue (namespace/name,
// UID); one worker reads the cache and tells the Sink (criproxy's Proxy):
//
//   - PodGone(uid, reason) when the pod is deleted or replaced by another
//     of the same name ("deleted"), has a deletion timestamp
//     ("terminating") or has finished ("finished"): a start of it still
//     queued leaves the queue and is answered Aborted. The UID is kept
//     as a tombstone for TombstoneTTL, so a start that reaches the gate
//     after the news is refused at once (Gone).
//   - PodReady(uid) when a pod with a readiness or startup probe reports
//     Ready: its warm-up slot ends. A pod without a probe is Ready as
//     soon as its containers run, which says nothing about warm-up, so
//     for it (and whenever the watch is not healthy: WaitsForReady says
//     false) the proxy keeps ending warm-ups when CPU use settles.
//
// # An addition, never a dependency
//
// Queries read the informer's cache and never block. Before the first
// sync, after a watch error and until the watch delivers again (Healthy),
// and for pods the watch has not seen, they answer what a node without
// API access would: not gone, not waiting for Ready. An unreachable API
// server is retried by the informer with back-off; nothing in the start
// path waits for it.
//
// Credentials: a kubeconfig (kubelet's own is enough: the Node authorizer
// lets a node get, list and watch the pods bound to it) or the in-cluster
// service account (NewClient).
package kube
