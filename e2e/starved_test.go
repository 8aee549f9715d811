package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// A container starved of CPU is still warming up: with one CPU held busy
// by two hog containers and the new pod pinned to that CPU with the
// smallest CPU weight (cpu.shares 2), its init loop barely runs and its
// CPU counter hardly grows, which alone reads as settled. Its tasks'
// run-queue wait says it is waiting, so its slot stays held; once the
// hogs stop, it runs, finishes and settles, and the slot comes back.
//
// Every container is pinned to one CPU so that the starvation does not
// depend on how many cores the machine has (hogs spread over all cores
// left one free on a CI host with more than two).
func TestStarvedContainerIsNotSettled(t *testing.T) {
	n := startNode(t, nodeOptions{config: "[admission.limits]\ninflight = 8\n[cri.warmup]\ncap = \"5m\"\n"})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cpu := firstAllowedCPU(t)
	// runPinned runs a pod whose one container runs script on that CPU
	// with the given weight, and returns its sandbox.
	runPinned := func(name string, shares int64, script string) string {
		t.Helper()
		sbCfg := n.sandboxConfig("default", name, nil)
		if err := os.MkdirAll(sbCfg.LogDirectory, 0o755); err != nil {
			t.Fatal(err)
		}
		sb, err := n.rs.RunPodSandbox(ctx, sbCfg, "")
		if err != nil {
			t.Fatal(err)
		}
		cc := n.containerConfig("app", "sh", "-c", script)
		cc.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{CpusetCpus: strconv.Itoa(cpu), CpuShares: shares}}
		cid, err := n.rs.CreateContainer(ctx, sb, cc, sbCfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.rs.StartContainer(ctx, cid); err != nil {
			t.Fatal(err)
		}
		return sb
	}
	var hogs []string
	for i := range 2 {
		hogs = append(hogs, runPinned(fmt.Sprintf("hog-%d", i), 1024, "while :; do :; done"))
	}
	// Weight 20 against two hogs' 1024: about 1% of the CPU, so the init
	// loop (a second or more of CPU) takes minutes, while runc's own
	// start of the container in that cgroup (tens of ms) still ends
	// within the CRI call's deadline on a loaded CI host (at weight 2 it
	// did not: StartContainer ran out of time there).
	runPinned("starved", 20, "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; echo init-done; exec sleep 3600")
	holds := func() bool { return strings.Contains(n.ctl("leases", "-o", "json"), "default/starved") }
	// Thirty polls' worth of a starved init: each would have ended the
	// warm-up had the CPU counter been the only signal.
	for range 30 {
		if !holds() {
			t.Fatalf("the starved pod's slot was given back while its init had not run (its log: %q)\n%s", n.logOf("default", "starved"), n.logLines("warm-up", 20))
		}
		if strings.Contains(n.logOf("default", "starved"), "init-done") {
			t.Fatalf("the init finished despite two hogs on its CPU %d: the node did not starve it (cpu.shares or cpuset not honoured?)", cpu)
		}
		time.Sleep(100 * time.Millisecond) // one warm-up poll; the assertion is the slot, not the time
	}
	if !strings.Contains(n.logLines("starved of CPU, not settled", 1), "starved") {
		t.Errorf("startgated did not say the container was starved")
	}
	for _, h := range hogs {
		if err := n.rs.StopPodSandbox(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	n.eventually(2*time.Minute, "the pod to finish its init and give its slot back", func() (bool, string) {
		return !holds() && strings.Contains(n.logOf("default", "starved"), "init-done"), n.logOf("default", "starved")
	})
	// Its CPU was read from its cgroup, not through containerd
	// (cri.warmup.cpu_source's default): a runc container on the host
	// always has one.
	if line := n.logLines(`"msg":"settled"`, 1); !strings.Contains(line, `"cpu_from":"cgroup"`) {
		t.Errorf("the warm-up did not read the container's cgroup: %s", line)
	}
}

// firstAllowedCPU is the lowest CPU this process may run on; containers
// pinned to it are inside every cpuset on the path.
func firstAllowedCPU(t *testing.T) int {
	t.Helper()
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	for i := range 1024 {
		if set.IsSet(i) {
			return i
		}
	}
	t.Fatal("no CPU in this process's affinity mask")
	return 0
}
