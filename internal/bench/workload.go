package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"time"
)

// Workload is what each container does before it is ready. Issue 5 adds
// IO-bound and mixed kinds next to CPU.
type Workload struct {
	// Kind is "cpu": a busy shell loop of Loops iterations.
	Kind string
	// Loops is the loop count; Calibrate sizes it to a CPU time.
	Loops int
}

// Marker lines: the container prints them, containerd timestamps them in
// the CRI log, and the benchmark reads the times from there, so the client's
// own polling never enters a measurement.
const (
	lineStart = "start"
	lineReady = "ready"
)

// Command is the container's command: print "start", do the init work,
// print "ready", then keep running like a service.
func (w Workload) Command() []string {
	// busybox ash: `[` and $((...)) are builtins, so the loop is pure
	// shell CPU with no fork.
	script := fmt.Sprintf(`echo %s; i=0; while [ $i -lt %d ]; do i=$((i+1)); done; echo %s; exec sleep 3600`,
		lineStart, w.Loops, lineReady)
	return []string{"sh", "-c", script}
}

// markers are the CRI log times of a container's marker lines.
type markers struct {
	start, ready time.Time
}

// parseLog reads a CRI-format container log ("<RFC3339Nano> stdout F
// <line>") and returns the times of the first start and ready lines; a
// zero time means not (yet) seen. A line being written as it is read can
// only be missed, never mis-timed: its timestamp comes first.
func parseLog(b []byte) markers {
	var m markers
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		ts, rest, ok := bytes.Cut(sc.Bytes(), []byte(" "))
		if !ok {
			continue
		}
		stream, rest, ok := bytes.Cut(rest, []byte(" "))
		if !ok || string(stream) != "stdout" {
			continue
		}
		tag, msg, ok := bytes.Cut(rest, []byte(" "))
		if !ok || string(tag) != "F" {
			continue
		}
		var dst *time.Time
		switch string(msg) {
		case lineStart:
			dst = &m.start
		case lineReady:
			dst = &m.ready
		default:
			continue
		}
		if !dst.IsZero() {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, string(ts))
		if err != nil {
			continue
		}
		*dst = t
	}
	return m
}
