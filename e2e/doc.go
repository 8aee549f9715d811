// Package e2e runs startgated as a real process in front of a real
// containerd (harness/testbed) and drives it the way a node does: with
// kubelet's own CRI client (k8s.io/cri-client) on the CRI socket and the
// real startgatectl binary on the admin socket. Under CI=true these tests
// fail, never skip, when the testbed cannot start.
//
// The prefetch tests (prefetch_test.go) add the testbed's docker-registry
// behind a front of the test's own (registry_test.go): every image
// reference names the front, so it sees every blob byte the CRI's pulls
// and startgated's prefetches read, and it can answer 500, refuse
// connections or corrupt a blob. The registry's push notifications reach
// startgated's webhook listener through a relay that notes when they
// arrived, the start of the "within 5 s of the notification".
package e2e
