package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"time"
)

// Workload kinds: what a container does between its start and ready
// lines.
const (
	// WorkCPU is a busy shell loop of Workload.Loops iterations.
	WorkCPU = "cpu"
	// WorkIO writes Workload.IOBytes to a file in the container's
	// root filesystem, fsyncs it and reads it back bypassing the page
	// cache (O_DIRECT; a plain read where the filesystem refuses it).
	WorkIO = "io"
	// WorkMixed alternates the two by pod: even pods cpu, odd pods io.
	// A node rarely starts one kind of work only, and a limit that
	// suits CPU-bound starts need not suit IO-bound ones.
	WorkMixed = "mixed"
)

// ParseWorkload checks a --workload value.
func ParseWorkload(s string) (string, error) {
	switch s {
	case WorkCPU, WorkIO, WorkMixed:
		return s, nil
	}
	return "", fmt.Errorf("bench: workload %q: want cpu, io or mixed", s)
}

// Workload is what each container does before it is ready.
type Workload struct {
	// Kind is WorkCPU, WorkIO or WorkMixed.
	Kind string
	// Loops is the CPU loop's count; calibration sizes it to a CPU time.
	Loops int
	// IOBytes is the IO work's file size; calibration sizes it so that a
	// lone pod's init takes as long as the CPU loop's.
	IOBytes int64
}

// ioBlock is the IO work's block size: dd's bs, so IOBytes is rounded to
// it (at least one block).
const ioBlock = 64 << 10

// forPod is the work pod i does: the kind itself, or for mixed, cpu or io
// by the pod's parity.
func (w Workload) forPod(i int) Workload {
	if w.Kind != WorkMixed {
		return w
	}
	if i%2 == 0 {
		w.Kind = WorkCPU
	} else {
		w.Kind = WorkIO
	}
	return w
}

// Marker lines: the container prints them, containerd timestamps them in
// the CRI log, and the benchmark reads the times from there, so the client's
// own polling never enters a measurement.
const (
	lineStart = "start"
	lineReady = "ready"
)

// Command is the container's command: print "start", do the init work,
// print "ready", then keep running like a service. Mixed must be resolved
// with forPod first; it runs as cpu otherwise.
func (w Workload) Command() []string {
	var work string
	switch w.Kind {
	case WorkIO:
		// The file is in the container's writable layer (overlayfs
		// upper, on the node's disk), so the write and its fsync reach
		// the disk, and the read with iflag=direct comes back from it,
		// as an init that loads a cache or a database would.
		blocks := max(1, (w.IOBytes+ioBlock-1)/ioBlock)
		work = fmt.Sprintf(`dd if=/dev/zero of=/sgbench.io bs=%d count=%d conv=fsync 2>/dev/null; `+
			`dd if=/sgbench.io of=/dev/null bs=%d iflag=direct 2>/dev/null || cat /sgbench.io >/dev/null`,
			ioBlock, blocks, ioBlock)
	default:
		// busybox ash: `[` and $((...)) are builtins, so the loop is
		// pure shell CPU with no fork.
		work = fmt.Sprintf(`i=0; while [ $i -lt %d ]; do i=$((i+1)); done`, w.Loops)
	}
	script := fmt.Sprintf(`echo %s; %s; echo %s; exec sleep 3600`, lineStart, work, lineReady)
	return []string{"sh", "-c", script}
}

// describe says what the work is, for the report.
func (w Workload) describe(c Calibration) string {
	cpu := fmt.Sprintf("a CPU-bound shell loop of %d iterations, %.2f CPU-s (%s alone)", c.Loops, c.CPU.Seconds(), secs(c.Init))
	io := fmt.Sprintf("an IO-bound write, fsync and O_DIRECT read of %s in the container's root filesystem (%s alone)",
		mib(c.IOBytes), secs(c.IOInit))
	switch w.Kind {
	case WorkIO:
		return io
	case WorkMixed:
		return "even pods " + cpu + "; odd pods " + io
	}
	return cpu
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

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
