package criproxy

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestRunQueue: the waits of every thread of a process and of its
// descendants are summed, and one runnable among them is found; a garbled
// schedstat counts nothing; a missing root process is an error.
func TestRunQueue(t *testing.T) {
	root := t.TempDir()
	task := func(pid, tid, schedstat, children string, state ...string) {
		dir := filepath.Join(root, pid, "task", tid)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "schedstat"), []byte(schedstat), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "children"), []byte(children), 0o644); err != nil {
			t.Fatal(err)
		}
		st := "S"
		if len(state) > 0 {
			st = state[0]
		}
		// A whole stat line, as the kernel writes it: procfs reads every
		// field.
		stat := tid + " (sh (x) y) " + st + " 1 1 1 0 -1 4194560 100 0 0 0 1 1 0 0 20 0 1 0 100 1000000 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
		if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	task("10", "10", "5000 1000 7\n", "11 12 ")
	task("10", "13", "5000 2000 7\n", "")
	task("11", "11", "1 4000 1\n", "14")
	task("12", "12", "garbled\n", "")
	task("14", "14", "1 8000 1\n", "10") // a loop in the tree is read once
	got, runnable, err := runQueue(root, 10)
	if err != nil {
		t.Fatal(err)
	}
	if want := 15000 * time.Nanosecond; got != want || runnable {
		t.Fatalf("runQueue = %v, %v; want %v, none runnable", got, runnable, want)
	}
	task("14", "15", "0 0 0\n", "", "R") // a runnable thread of a descendant
	if _, runnable, _ := runQueue(root, 10); !runnable {
		t.Fatal("runQueue found no runnable task, want the descendant's thread")
	}
	if _, _, err := runQueue(root, 99); err == nil {
		t.Fatal("runQueue of a missing pid succeeded, want an error")
	}
	if pid, ok := containerPID(map[string]string{"info": `{"sandboxID":"x","pid":4242}`}); !ok || pid != 4242 {
		t.Fatalf("containerPID = %d, %v; want 4242", pid, ok)
	}
	for _, info := range []map[string]string{nil, {"info": "{"}, {"info": `{"pid":0}`}} {
		if _, ok := containerPID(info); ok {
			t.Fatalf("containerPID(%v) found a pid", info)
		}
	}
}

// TestRunQueueWaitOfThisProcess: the real /proc is read (this test's own
// process, its threads and its children).
func TestRunQueueWaitOfThisProcess(t *testing.T) {
	if _, _, err := runQueue("/proc", os.Getpid()); err != nil {
		t.Fatal(err)
	}
}
