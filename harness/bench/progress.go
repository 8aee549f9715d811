package bench

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// progress writes what the benchmark is doing to stderr. On a terminal:
// permanent lines, and below them one status line redrawn in place, a
// progress bar while a burst runs. Elsewhere (CI logs, make output piped
// to a file): the permanent lines and a plain status line at most every
// 5 s, no control characters.
//
// Hand-written rather than a progress bar library: one bar at a time,
// redrawn from the burst's own 250 ms ticker, is a dozen lines, and the
// fallback for a non-terminal is the part that matters in CI.
type progress struct {
	w     io.Writer
	tty   bool
	width int // the terminal's columns; 0 when unknown

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
		if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil {
			p.width = int(ws.Col)
		}
	}
	return p
}

// line writes a permanent line (erasing the status line first).
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

// status replaces the status line.
func (p *progress) status(format string, args ...any) {
	if p.w == nil {
		return
	}
	s := fmt.Sprintf(format, args...)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		if p.width > 3 && len(s)+2 >= p.width {
			// A wrapped line cannot be redrawn with \r.
			s = s[:p.width-3]
		}
		fmt.Fprint(p.w, "\r\033[K  "+s)
		p.mu.drawn = true
		return
	}
	if now := time.Now(); now.Sub(p.mu.lastPlain) >= 5*time.Second {
		p.mu.lastPlain = now
		fmt.Fprint(p.w, "  "+s+"\n")
	}
}

// bar shows a burst's progress: a bar of ready (=) and failed (x) pods.
func (p *progress) bar(label string, ready, failed, total int, elapsed time.Duration) {
	p.status("%s %s %d/%d ready, %d failed, %s", label, renderBar(ready, failed, total, 30), ready, total, failed, secs(elapsed))
}

// renderBar draws [====xx      ]: width cells, ready pods first, then
// failed ones, each rounded down so a cell fills only when its share is
// complete (a full bar means every pod).
func renderBar(ready, failed, total, width int) string {
	if total <= 0 {
		return "[" + strings.Repeat(" ", width) + "]"
	}
	ready = min(max(ready, 0), total)
	failed = min(max(failed, 0), total-ready)
	r := ready * width / total
	f := (ready+failed)*width/total - r
	return "[" + strings.Repeat("=", r) + strings.Repeat("x", f) + strings.Repeat(" ", width-r-f) + "]"
}
