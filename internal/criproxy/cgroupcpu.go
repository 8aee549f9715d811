package criproxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// A warming container's CPU use is polled every WarmupPolicy.Poll, ten
// times a second for each container in flight. Through CRI that is a
// ContainerStats call: startgated to containerd, containerd to the
// container's shim over ttrpc, the shim to the cgroup. On a 2-core node
// rolling out 40 pods those calls cost containerd and the shims 4.7
// core-seconds a rollout more than reading the cgroup does, against 9.2
// for the pods' own start work (startgate-bench kube, "where the CPU
// went", docs/benchmarks.md): a gate that meant to spare the node's CPU
// spent a good part of it on watching. The same counter is one file in the container's cgroup, which
// startgated (root, on the host) reads itself: cpuacct.usage on cgroup
// v1, cpu.stat's usage_usec on v2, found from the container's init pid
// (/proc/PID/cgroup). A container whose cgroup cannot be found or read
// (a runtime that runs it in a VM, a cgroup namespace that hides it)
// goes on through CRI.

// cgroupCPU is one container's CPU counter in its cgroup.
type cgroupCPU struct {
	file string
	v2   bool // cpu.stat's usage_usec, else cpuacct.usage's nanoseconds
}

// findCgroupCPU finds pid's CPU counter: its cgroup from procRoot's
// PID/cgroup, under cgroupRoot (/sys/fs/cgroup). On cgroup v1 the
// cpuacct hierarchy is mounted as its controllers are listed
// ("cpu,cpuacct", the usual mount, or "cpuacct" alone).
func findCgroupCPU(procRoot, cgroupRoot string, pid int) (cgroupCPU, error) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "cgroup"))
	if err != nil {
		return cgroupCPU{}, fmt.Errorf("criproxy: cgroup of pid %d: %w", pid, err)
	}
	var unified string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// hierarchy-ID:controller-list:path (cgroups(7)).
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 || !strings.HasPrefix(parts[2], "/") {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			unified = parts[2]
			continue
		}
		ctrls := strings.Split(parts[1], ",")
		for _, c := range ctrls {
			if c != "cpuacct" {
				continue
			}
			for _, dir := range []string{parts[1], "cpuacct"} {
				f := filepath.Join(cgroupRoot, dir, parts[2], "cpuacct.usage")
				if _, err := os.Stat(f); err == nil {
					return cgroupCPU{file: f}, nil
				}
			}
			return cgroupCPU{}, fmt.Errorf("criproxy: pid %d's cpuacct cgroup %s is not under %s", pid, parts[2], cgroupRoot)
		}
	}
	if unified != "" {
		f := filepath.Join(cgroupRoot, unified, "cpu.stat")
		if _, err := os.Stat(f); err == nil {
			return cgroupCPU{file: f, v2: true}, nil
		}
		return cgroupCPU{}, fmt.Errorf("criproxy: pid %d's cgroup %s has no cpu.stat under %s", pid, unified, cgroupRoot)
	}
	return cgroupCPU{}, fmt.Errorf("criproxy: pid %d has no cpuacct or unified cgroup", pid)
}

// usage reads the counter, in nanoseconds of CPU.
func (c cgroupCPU) usage() (uint64, error) {
	b, err := os.ReadFile(c.file)
	if err != nil {
		return 0, err
	}
	if !c.v2 {
		return strconv.ParseUint(string(bytes.TrimSpace(b)), 10, 64)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
			us, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return us * 1000, err
		}
	}
	return 0, errors.New("criproxy: " + c.file + " has no usage_usec")
}
