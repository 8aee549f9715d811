package criproxy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
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
		tasks, err := os.ReadDir(filepath.Join(procRoot, strconv.Itoa(p), "task"))
		if err != nil {
			if p == pid {
				return 0, false, fmt.Errorf("criproxy: tasks of pid %d: %w", pid, err)
			}
			continue // exited meanwhile
		}
		for _, t := range tasks {
			dir := filepath.Join(procRoot, strconv.Itoa(p), "task", t.Name())
			if b, err := os.ReadFile(filepath.Join(dir, "schedstat")); err == nil {
				if w, ok := parseSchedstatWait(string(b)); ok {
					total += w
				}
			}
			if b, err := os.ReadFile(filepath.Join(dir, "stat")); err == nil && statState(string(b)) == 'R' {
				runnable = true
			}
			if b, err := os.ReadFile(filepath.Join(dir, "children")); err == nil {
				for _, f := range strings.Fields(string(b)) {
					if c, err := strconv.Atoi(f); err == nil {
						queue = append(queue, c)
					}
				}
			}
		}
	}
	return total, runnable, nil
}

// statState is the state letter of a /proc stat line: the field after
// the command, which is in parentheses and may hold anything, spaces and
// parentheses included.
func statState(s string) byte {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) == 0 || len(f[0]) != 1 {
		return 0
	}
	return f[0][0]
}

// maxStarvedTasks bounds the processes one read walks: a container that
// forks thousands is read in part, not at the cost of the proxy.
const maxStarvedTasks = 256

// parseSchedstatWait reads the second field of a schedstat line ("on-CPU
// ns, run-queue wait ns, timeslices").
func parseSchedstatWait(s string) (time.Duration, bool) {
	f := strings.Fields(s)
	if len(f) < 2 {
		return 0, false
	}
	ns, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || ns < 0 {
		return 0, false
	}
	return time.Duration(ns), true
}

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
