// Package e2e runs startgated as a real process in front of a real
// containerd (internal/testbed) and drives it the way a node does: with
// kubelet's own CRI client (k8s.io/cri-client) on the CRI socket and the
// real startgatectl binary on the admin socket. Under CI=true these tests
// fail, never skip, when the testbed cannot start.
package e2e
