package criproxy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/procfs"
)

// A container whose CPU counter stops growing has either finished its
// warm-up or is waiting for a CPU it cannot get: on a node loaded by
// other work a starved init looks settled, and its slot would be given
// back while it has not really started. The kernel tells the two apart
// per task: its state (/proc/PID/task/TID/stat) is R, runnable, while it
// waits for a CPU and S or D once it is idle; and its schedstat's second
// field is the time it has spent runnable on a run queue (added when the
// task gets a CPU, so a task starved through a whole poll shows it only
// later: the state is the signal that does not lag). A container with a
// task runnable, or whose tasks waited at least SettleCores of a core
// since the last poll, is starved, not settled. This works on cgroup v1
// and v2 alike (a cgroup's own CPU pressure needs v2, and these nodes may
// run v1).

// runQueue reads, for every thread of pid and of its descendants (a
// shell's children, found through /proc/PID/task/TID/children) under
// procRoot, their run-queue wait in total and whether any is runnable.
func runQueue(procRoot string, pid int) (wait time.Duration, runnable bool, err error) {
	fs, err := procfs.NewFS(procRoot)
	if err != nil {
		return 0, false, fmt.Errorf("criproxy: %w", err)
	}
	var total time.Duration
	seen := map[int]bool{}
	queue := []int{pid}
	for len(queue) > 0 && len(seen) < maxStarvedTasks {
		p := queue[0]
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		tasks, err := fs.AllThreads(p)
		if err != nil {
			if p == pid {
				return 0, false, fmt.Errorf("criproxy: tasks of pid %d: %w", pid, err)
			}
			continue // exited meanwhile
		}
		for _, t := range tasks {
			if s, err := t.Schedstat(); err == nil {
				total += time.Duration(s.WaitingNanoseconds)
			}
			if s, err := t.Stat(); err == nil && s.State == "R" {
				runnable = true
			}
			queue = append(queue, taskChildren(procRoot, p, t.PID)...)
		}
	}
	return total, runnable, nil
}

// taskChildren lists the children of thread tid of pid. procfs (up to
// v0.23.0, the newest) has no reader for the children file, a list of
// pids.
func taskChildren(procRoot string, pid, tid int) []int {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "task", strconv.Itoa(tid), "children"))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if c, err := strconv.Atoi(f); err == nil {
			out = append(out, c)
		}
	}
	return out
}

// maxStarvedTasks bounds the processes one read walks: a container that
// forks thousands is read in part, not at the cost of the proxy.
const maxStarvedTasks = 256

// containerPID reads the host pid of a container's init from the CRI's
// verbose status ("info": {"pid": N}), as containerd's CRI gives it.
func containerPID(info map[string]string) (int, bool) {
	var v struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(info["info"]), &v); err != nil || v.PID <= 0 {
		return 0, false
	}
	return v.PID, true
}
