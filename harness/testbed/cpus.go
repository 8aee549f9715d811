package testbed

import (
	"fmt"

	"k8s.io/utils/cpuset"
)

// Pinned is the command that runs bin with args on the CPUs of list (a
// Linux CPU list, "0" or "0-1,3"), through util-linux's taskset, which
// sets the affinity and execs bin: the process and every child it starts
// (containerd's shims and their containers, startgated, the kubelet) run
// on those CPUs only, and a Go program's runtime.NumCPU counts them: a
// node of that size. An empty list runs bin as it is.
func Pinned(list, bin string, args []string) (string, []string, error) {
	if list == "" {
		return bin, args, nil
	}
	if _, err := ParseCPUs(list); err != nil {
		return "", nil, err
	}
	return "taskset", append([]string{"--cpu-list", list, bin}, args...), nil
}

// ParseCPUs reads a Linux CPU list ("0", "0-1,3"): not empty.
func ParseCPUs(list string) (cpuset.CPUSet, error) {
	s, err := cpuset.Parse(list)
	if err != nil || s.IsEmpty() {
		return cpuset.CPUSet{}, fmt.Errorf("testbed: CPU list %q: want CPUs like 0 or 0-1,3", list)
	}
	return s, nil
}
