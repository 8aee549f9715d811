package kubebench

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/procfs"
)

// TestLoad: the busy loops run and burn CPU until stopped, and are gone
// (reaped) after.
func TestLoad(t *testing.T) {
	l, err := startLoad(2, "")
	if err != nil {
		t.Fatal(err)
	}
	defer l.stop()
	if len(l.cmds) != 2 {
		t.Fatalf("%d loops, want 2", len(l.cmds))
	}
	p, err := procfs.NewProc(l.cmds[0].Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	for {
		st, err := p.Stat()
		if err != nil {
			t.Fatal(err)
		}
		if st.CPUTime() >= 0.05 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	l.stop()
	l.stop()
	for _, c := range l.cmds {
		if c.ProcessState == nil {
			t.Fatalf("loop %d not reaped", c.Process.Pid)
		}
		if _, err := os.Stat("/proc/" + strconv.Itoa(c.Process.Pid)); err == nil {
			t.Errorf("loop %d still in /proc", c.Process.Pid)
		}
	}
	if _, err := startLoad(1, "not-a-cpu-list"); err == nil {
		t.Error("a bad CPU list started a loop")
	}
}
