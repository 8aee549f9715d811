package bench

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// progress writes what the benchmark is doing: on a terminal, one status
// line redrawn in place plus permanent lines; elsewhere (CI logs, make
// output piped) the permanent lines and a status line at most every 5 s.
type progress struct {
	w   io.Writer
	tty bool

	mu struct {
		sync.Mutex
		drawn     bool      // a status line is on screen
		lastPlain time.Time // last status line written without a tty
	}
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok {
		_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
		p.tty = err == nil
	}
	return p
}

func (p *progress) line(format string, args ...any) {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.drawn {
		fmt.Fprint(p.w, "\r\033[K")
		p.mu.drawn = false
	}
	fmt.Fprintf(p.w, "startgate-bench: "+format+"\n", args...)
}

func (p *progress) status(format string, args ...any) {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K  "+format, args...)
		p.mu.drawn = true
		return
	}
	if now := time.Now(); now.Sub(p.mu.lastPlain) >= 5*time.Second {
		p.mu.lastPlain = now
		fmt.Fprintf(p.w, "  "+format+"\n", args...)
	}
}
