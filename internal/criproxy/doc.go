// Package criproxy puts the admission gate between kubelet and containerd.
//
// Kubelet's --container-runtime-endpoint points at startgated's CRI
// socket; the proxy forwards every call to containerd's CRI socket and
// gates the ones that start things. Neither kubelet nor containerd has a
// setting for how many starts run at once, and a containerd NRI plugin
// cannot hold a start (each NRI request has a two-second budget), so a
// proxy is where the gate can sit.
//
// # Forwarding
//
// The proxy is a gRPC server with no services, only an unknown-service
// handler, and a raw codec: every call is forwarded as wire bytes, so
// requests, responses, fields this build does not know, status codes and
// messages, metadata, headers and trailers, deadlines and the streaming
// URLs of Exec, Attach and PortForward pass through unchanged, and a CRI
// method added by a newer kubelet is forwarded, not refused. One wrapper
// per call family (handle): the start family (start.go), image pulls
// (pull.go), unary passthrough (one Invoke) and streams (forwardStream).
//
// # Gating
//
// A pod takes one slot at RunPodSandbox, shared by the containers kubelet
// creates in it and held through their warm-up: it is released when every
// one has settled (its cgroup's CPU counter, else CRI ContainerStats), exited, failed to start or been
// removed, when the pod stops, or when the cap passes (WarmupPolicy). A
// container created in a pod that no longer holds a slot takes its own.
// The class and tenant
// come from the pod (Classifier): static and mirror pods, kube-system and
// pods annotated startgate.io/class: critical bypass the gate, DaemonSet
// pods are high, the rest normal; tenant is the namespace. The caller's
// deadline (kubelet: 2 minutes, 4 for RunPodSandbox) reaches the gate with
// the context, and the gate admits before the deadline minus its margin.
// A caller that gives up while queued leaves the queue and its call is
// never forwarded. A slot's hold cap covers the call's own deadline plus
// the warm-up cap, so it is never taken back from a call still inside
// containerd.
//
// # The API's view (PodView)
//
// kubelet syncs a pod under context.WithoutCancel: deleting the pod never
// cancels its start waiting in the gate. With a PodView (internal/kube's
// watch of the node's pods), the proxy is told when a pod is gone and
// cancels its queued starts (Aborted, never forwarded; pods.go), refuses
// at once a start of a pod already known gone, and ends a probed pod's
// warm-up when it reports Ready rather than when its CPU settles. Without
// one, or while the watch is unhealthy, it works from the CRI alone.
//
// PullImage has a lane of its own, sized from IO pressure, and concurrent
// pulls of one reference with the same credentials are collapsed into one
// upstream pull.
//
// # Failing open
//
// The gate must never be why a node cannot start containers. With the gate
// bypassed by an operator, closed, failing, or not ticking (a wedged
// gate: its liveness is read without its lock), gated calls pass straight
// through, logged and counted (Observer.FailOpen). With containerd down,
// callers get Unavailable at once and the connection comes back by itself
// (backoff capped at one second); startgated serves its CRI socket even
// before containerd is up.
package criproxy
