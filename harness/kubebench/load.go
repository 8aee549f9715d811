package kubebench

import (
	"fmt"
	"os/exec"
	"sync"
	"syscall"

	"github.com/startgate/startgate/harness/testbed"
)

// load is other work on the node (Options.Load): busy loops, a core each.
type load struct {
	cmds []*exec.Cmd
	once sync.Once
}

// startLoad starts n busy loops pinned to cpus ("" for any).
func startLoad(n int, cpus string) (*load, error) {
	l := &load{}
	for i := range n {
		bin, args, err := testbed.Pinned(cpus, "sh", []string{"-c", "while :; do :; done"})
		if err != nil {
			l.stop()
			return nil, err
		}
		c := exec.Command(bin, args...)
		if err := c.Start(); err != nil {
			l.stop()
			return nil, fmt.Errorf("kubebench: start busy loop %d of %d: %w", i+1, n, err)
		}
		l.cmds = append(l.cmds, c)
	}
	return l, nil
}

// stop kills and reaps the loops; it may be called more than once.
func (l *load) stop() {
	l.once.Do(func() {
		for _, c := range l.cmds {
			_ = c.Process.Signal(syscall.SIGKILL)
			_ = c.Wait() // killed: its error says only that
		}
	})
}
