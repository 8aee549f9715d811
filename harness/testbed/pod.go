package testbed

import runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

// HostNetwork is the Linux part of a pod sandbox config that runs on a
// testbed: the node's network namespace, because the testbed has no CNI
// (a pod-network sandbox fails there by design), and the pod's own PID and
// IPC namespaces, as kubelet sets them by default.
func HostNetwork() *runtimeapi.LinuxPodSandboxConfig {
	return &runtimeapi.LinuxPodSandboxConfig{
		SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{
				Network: runtimeapi.NamespaceMode_NODE,
				Pid:     runtimeapi.NamespaceMode_POD,
				Ipc:     runtimeapi.NamespaceMode_POD,
			},
		},
	}
}
