package kubebench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/procfs"

	"github.com/startgate/startgate/harness/stats"
)

// CPUBy is where a run's CPU went, in core-seconds: what a reader needs
// to tell a gate that saves work from one that only moves it, or costs
// some of its own (its warm-up polls, kubelet's retries).
//
// It is measured on the local node only, over every CPU of this machine
// (the control plane shares them): the node's busy time from /proc/stat,
// the pods' from their cgroups' cpuacct (sandboxes included), and each
// component's from its processes' /proc/PID/stat, with the children they
// reaped (containerd's CNI plugins and shim starts, kubelet's mounts; a
// shim's own time only, as the containers it reaps are the pods'). Other
// is the rest: runc, the kernel's threads, the docker-registry's link,
// and the last sample period of processes that ended during the run
// (old pods' shims).
type CPUBy struct {
	Busy         float64 `json:"busy"`
	Pods         float64 `json:"pods"`
	Kubelet      float64 `json:"kubelet"`
	Containerd   float64 `json:"containerd"`
	Shims        float64 `json:"shims"`
	Startgated   float64 `json:"startgated"`
	ControlPlane float64 `json:"control_plane"`
	Pacemaker    float64 `json:"pacemaker"`
	// Harness is this benchmark's own process (its watches, the
	// registry's far-away link) and the registry.
	Harness float64 `json:"harness"`
	Other   float64 `json:"other"`
}

// cpuClass names the component a process belongs to, by its comm, or ""
// for one that is not tracked on its own (counted in Other).
func cpuClass(comm string, pid, self int) string {
	switch {
	case pid == self:
		return "harness"
	case comm == "kubelet":
		return "kubelet"
	case comm == "containerd":
		return "containerd"
	case strings.HasPrefix(comm, "containerd-shim"):
		return "shims"
	case comm == "startgated", comm == "startgate-bench":
		// The benchmark runs startgated by executing itself again.
		return "startgated"
	case comm == "kube-apiserver", comm == "etcd", comm == "kube-controller", comm == "kube-scheduler":
		// comm is cut at 15 bytes: kube-controller-manager.
		return "control plane"
	case comm == "node-daemon":
		return "pod-pacemaker"
	case comm == "docker-registry":
		return "harness"
	}
	return ""
}

// userHZ is the unit of /proc/PID/stat's times: the kernel reports them in
// USER_HZ, 100 on every Linux architecture.
const userHZ = 100

type procKey struct {
	pid   int
	start uint64 // tells a reused pid apart
}

type procCPU struct {
	class       string
	first, last float64
	// born: first seen after the run's first sample, so all of its time
	// is the run's.
	born bool
}

// cpuAccount follows the processes' CPU over a run.
type cpuAccount struct {
	fs        procfs.FS
	self      int
	podsUsage string // a cgroup's cpuacct.usage; "" if none was found
	samples   int
	procs     map[procKey]*procCPU
	busy0     float64
	busy      float64
	pods0     float64
	pods      float64
}

// podsCgroupUsage is the cpuacct.usage of the cgroup containerd's CRI puts
// the testbed's pods under (cgroupfs, cgroupsPerQOS false: /k8s.io).
func podsCgroupUsage() string {
	for _, p := range []string{"/sys/fs/cgroup/cpuacct/k8s.io/cpuacct.usage", "/sys/fs/cgroup/cpu,cpuacct/k8s.io/cpuacct.usage"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// newCPUAccount reads the proc file system at procRoot and the pods'
// cpuacct.usage at podsUsage ("" for none).
func newCPUAccount(procRoot, podsUsage string) (*cpuAccount, error) {
	fs, err := procfs.NewFS(procRoot)
	if err != nil {
		return nil, err
	}
	return &cpuAccount{fs: fs, self: os.Getpid(), podsUsage: podsUsage, procs: make(map[procKey]*procCPU)}, nil
}

// sample reads every counter once.
func (a *cpuAccount) sample() error {
	st, err := a.fs.Stat()
	if err != nil {
		return err
	}
	t := st.CPUTotal
	busy := t.User + t.Nice + t.System + t.IRQ + t.SoftIRQ + t.Steal
	var pods float64
	if a.podsUsage != "" {
		b, err := os.ReadFile(a.podsUsage)
		if err == nil {
			if ns, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil {
				pods = float64(ns) / 1e9
			}
		}
	}
	procs, err := a.fs.AllProcs()
	if err != nil {
		return err
	}
	first := a.samples == 0
	for _, p := range procs {
		s, err := p.Stat()
		if err != nil {
			continue // ended meanwhile
		}
		class := cpuClass(s.Comm, s.PID, a.self)
		if class == "" {
			continue
		}
		v := s.CPUTime()
		if class != "harness" && class != "shims" {
			// With the children it reaped. Not the benchmark's (its
			// children are the components, counted on their own),
			// nor a shim's: a shim is its containers' subreaper, and
			// a container it reaps brings its whole life's CPU, which
			// the pods' cgroup counted already.
			v += float64(s.CUTime+s.CSTime) / userHZ
		}
		k := procKey{s.PID, s.Starttime}
		if c, ok := a.procs[k]; ok {
			c.last = v
			continue
		}
		a.procs[k] = &procCPU{class: class, first: v, last: v, born: !first}
	}
	if first {
		a.busy0, a.pods0 = busy, pods
	}
	a.busy, a.pods = busy, pods
	a.samples++
	return nil
}

// result is the CPU spent between the first sample and the last. A
// process's class is the name of its part in cpuByParts.
func (a *cpuAccount) result() CPUBy {
	out := CPUBy{Busy: a.busy - a.busy0, Pods: a.pods - a.pods0}
	part := make(map[string]*float64, len(cpuByParts))
	for _, p := range cpuByParts {
		part[p.name] = p.get(&out)
	}
	for _, c := range a.procs {
		v := c.last - c.first
		if c.born {
			v = c.last
		}
		*part[c.class] += v
	}
	out.Other = out.Busy
	for _, p := range cpuByParts {
		if p.name != "busy" && p.name != "other" {
			out.Other -= *p.get(&out)
		}
	}
	return out
}

// cpuBySampleEvery is how often the processes are read: a process that
// ends loses at most this much of its time to Other.
const cpuBySampleEvery = 500 * time.Millisecond

// sampleCPUBy follows this machine's CPU by component until ctx ends; nil
// when it cannot be read.
func sampleCPUBy(ctx context.Context, every time.Duration) *CPUBy {
	a, err := newCPUAccount(procfs.DefaultMountPoint, podsCgroupUsage())
	if err != nil || a.sample() != nil {
		return nil
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			if a.sample() != nil {
				return nil
			}
			r := a.result()
			return &r
		case <-tick.C:
			_ = a.sample() // the next one or the last one counts
		}
	}
}

// cpuByParts lists CPUBy's parts in the report's order.
var cpuByParts = []struct {
	name string
	get  func(*CPUBy) *float64
}{
	{"busy", func(c *CPUBy) *float64 { return &c.Busy }},
	{"pods", func(c *CPUBy) *float64 { return &c.Pods }},
	{"kubelet", func(c *CPUBy) *float64 { return &c.Kubelet }},
	{"containerd", func(c *CPUBy) *float64 { return &c.Containerd }},
	{"shims", func(c *CPUBy) *float64 { return &c.Shims }},
	{"startgated", func(c *CPUBy) *float64 { return &c.Startgated }},
	{"pod-pacemaker", func(c *CPUBy) *float64 { return &c.Pacemaker }},
	{"control plane", func(c *CPUBy) *float64 { return &c.ControlPlane }},
	{"harness", func(c *CPUBy) *float64 { return &c.Harness }},
	{"other", func(c *CPUBy) *float64 { return &c.Other }},
}

// medianCPUBy is each part's median over the rounds that measured it.
func medianCPUBy(rounds []RoundFigures) *CPUBy {
	var out CPUBy
	for _, part := range cpuByParts {
		var vs []float64
		for _, f := range rounds {
			if f.CPUBy != nil {
				vs = append(vs, *part.get(f.CPUBy))
			}
		}
		if len(vs) == 0 {
			return nil
		}
		*part.get(&out) = stats.Of(vs).Median
	}
	return &out
}

// writeCPUBy writes a scenario's table of where the CPU went, if any
// mode measured it.
func writeCPUBy(b *strings.Builder, t Table) {
	measured := false
	for _, row := range t.Rows {
		measured = measured || row.CPUBy != nil
	}
	if !measured {
		return
	}
	b.WriteString("\nWhere the CPU went, core-seconds from the scenario's start to its end (median over rounds; every CPU of the machine, the control plane's included):\n\n| mode |")
	for _, part := range cpuByParts {
		b.WriteString(" " + part.name + " |")
	}
	b.WriteString("\n| --- |" + strings.Repeat(" --: |", len(cpuByParts)) + "\n")
	for _, row := range t.Rows {
		if row.CPUBy == nil {
			continue
		}
		b.WriteString("| " + row.Mode + " |")
		for _, part := range cpuByParts {
			fmt.Fprintf(b, " %.1f |", *part.get(row.CPUBy))
		}
		b.WriteString("\n")
	}
}
