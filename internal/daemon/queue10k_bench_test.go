package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/procfs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	startgatev1 "github.com/startgate/startgate/proto/startgate/v1"
)

// Targets of BenchmarkQueue10kWaiters, reported rather than asserted
// (STYLE.md 10): with 10,000 waiters queued the daemon stays within
// 64 MiB RSS and `startgatectl queue -o json` lists them all within
// 100 ms.
const (
	queue10k       = 10000
	queue10kConns  = 8  // client connections the streams are spread over
	queue10kOpen   = 32 // streams being opened at once
	queue10kListed = 10 // timed `queue -o json` runs
)

// BenchmarkQueue10kWaiters runs the real startgated and startgatectl,
// built from this tree, with 10,000 waiters at a paused gate, in two
// modes, each on a daemon of its own (started afresh, so that one mode's
// heap does not flatter or burden the other's):
//
//	acquire-streams  10,000 Acquire streams, one per waiter
//	acquire-many     10,000 tags over 8 AcquireMany streams, one per connection
//
// and reports for each:
//
//	rss_idle_MiB        daemon VmRSS after start and pause, before any waiter
//	rss_MiB             daemon VmRSS once Status reports 10,000 queued
//	rss_per_waiter_KiB  (rss_MiB - rss_idle_MiB) / 10,000
//	rss_listed_MiB      daemon VmRSS after the timed queue listings
//	rss_peak_MiB        daemon VmHWM at the end
//	queue_json_ms_p50   one `startgatectl queue -o json` exec, start to exit
//	queue_json_ms_max
//	queue_json_MiB      size of that output
//
// One iteration is the whole scenario; ns/op is suppressed.
//
// An Acquire waiter costs the daemon about 18 KiB, most of it goroutine
// stacks: the Acquire handler's (8 KiB: grpc-go's call chain plus the
// gate's frames stay above the quarter that would let the GC halve it)
// and its reader's (4 KiB), then grpc-go's per-stream state (about
// 2.7 KiB) and two g structs. A handler that does nothing but block still
// costs about 7 KiB, so 10,000 waiters over grpc-go streams cannot fit in
// 64 MiB; an AcquireMany waiter is a queue entry and a tag.
//
//	go test -run '^$' -bench Queue10k -benchtime 1x -count 3 ./internal/daemon/
func BenchmarkQueue10kWaiters(b *testing.B) {
	bin := buildBinaries(b)
	for _, mode := range []struct {
		name string
		open func(ctx context.Context, conns []*grpc.ClientConn) error
	}{
		{"acquire-streams", openWaiters},
		{"acquire-many", openManyWaiters},
	} {
		b.Run(mode.name, func(b *testing.B) {
			for range b.N {
				queue10kOnce(b, bin, mode.open)
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}

type binaries struct{ daemon, ctl string }

// buildBinaries builds startgated and startgatectl the way `make build`
// does (minus the version stamp) into a temporary directory.
func buildBinaries(b *testing.B) binaries {
	b.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		b.Skipf("go tool not found: %v", err)
	}
	dir := b.TempDir()
	cmd := exec.Command(goTool, "build", "-o", dir+string(filepath.Separator),
		"github.com/startgate/startgate/cmd/startgated", "github.com/startgate/startgate/cmd/startgatectl")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	return binaries{daemon: filepath.Join(dir, "startgated"), ctl: filepath.Join(dir, "startgatectl")}
}

func queue10kOnce(b *testing.B, bin binaries, open func(ctx context.Context, conns []*grpc.ClientConn) error) {
	b.StopTimer()
	dir := b.TempDir()
	sock := filepath.Join(dir, "startgate.sock")
	d := startDaemon(b, bin.daemon, dir, sock)
	defer d.stop(b)

	ctl := func(args ...string) []byte {
		b.Helper()
		cmd := exec.Command(bin.ctl, append([]string{"--socket", sock}, args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("startgatectl %s: %v\n%s\ndaemon log:\n%s", strings.Join(args, " "), err, stderr.String(), d.log.String())
		}
		return out
	}
	ctl("pause")
	idle := d.rss(b, "VmRSS")

	ctx, cancel := context.WithCancel(context.Background())
	conns := make([]*grpc.ClientConn, queue10kConns)
	for i := range conns {
		c, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		conns[i] = c
	}
	// Cancelling ctx resets every stream; the daemon withdraws the waiters.
	defer func() {
		cancel()
		for _, c := range conns {
			c.Close()
		}
	}()
	if err := open(ctx, conns); err != nil {
		b.Fatalf("%v\ndaemon log:\n%s", err, d.log.String())
	}
	client := startgatev1.NewStartgateClient(conns[0])
	pollUntil(b, "Status to report 10,000 queued", func() bool {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		r, err := client.Status(cctx, &startgatev1.StatusRequest{})
		return err == nil && r.GetQueueLength() == queue10k
	})
	queued := d.rss(b, "VmRSS")

	took := make([]time.Duration, 0, queue10kListed)
	var out []byte
	for range queue10kListed {
		t0 := time.Now()
		b.StartTimer()
		out = ctl("queue", "-o", "json")
		b.StopTimer()
		took = append(took, time.Since(t0))
		checkQueueJSON(b, out)
	}
	listed := d.rss(b, "VmRSS")
	peak := d.rss(b, "VmHWM")

	slices.Sort(took)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(idle, "rss_idle_MiB")
	b.ReportMetric(queued, "rss_MiB")
	b.ReportMetric((queued-idle)*1024/queue10k, "rss_per_waiter_KiB")
	b.ReportMetric(listed, "rss_listed_MiB")
	b.ReportMetric(peak, "rss_peak_MiB")
	b.ReportMetric(ms(took[len(took)/2]), "queue_json_ms_p50")
	b.ReportMetric(ms(took[len(took)-1]), "queue_json_ms_max")
	b.ReportMetric(float64(len(out))/(1<<20), "queue_json_MiB")
}

// openWaiters opens queue10k Acquire streams over conns and returns once
// every one has been told it is queued. The streams live until ctx ends.
func openWaiters(ctx context.Context, conns []*grpc.ClientConn) error {
	classes := []startgatev1.Class{
		startgatev1.Class_CLASS_HIGH, startgatev1.Class_CLASS_NORMAL,
		startgatev1.Class_CLASS_LOW, startgatev1.Class_CLASS_BACKGROUND,
	}
	next := make(chan int)
	errs := make(chan error, queue10kOpen)
	var wg sync.WaitGroup
	for w := range queue10kOpen {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := startgatev1.NewStartgateClient(conns[w%len(conns)])
			for i := range next {
				start := &startgatev1.AcquireStart{
					Class:       classes[i%len(classes)],
					Tenant:      fmt.Sprintf("ns-%d", i%50),
					Description: fmt.Sprintf("create container ns-%d/web-%d/app", i%50, i%997),
				}
				if err := openWaiter(ctx, client, start); err != nil {
					errs <- fmt.Errorf("waiter %d: %w", i, err)
					return
				}
			}
		}()
	}
	var err error
feed:
	for i := range queue10k {
		select {
		case next <- i:
		case err = <-errs:
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	return err
}

func openWaiter(ctx context.Context, client startgatev1.StartgateClient, start *startgatev1.AcquireStart) error {
	stream, err := client.Acquire(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&startgatev1.AcquireRequest{Msg: &startgatev1.AcquireRequest_Start{Start: start}}); err != nil {
		return err
	}
	m, err := stream.Recv()
	if err != nil {
		return err
	}
	if m.GetQueued() == nil {
		return fmt.Errorf("first message %v, want queued", m)
	}
	return nil
}

// openManyWaiters queues queue10k tags over one AcquireMany stream per
// connection and returns once every tag has been told it is queued. The
// streams live until ctx ends.
func openManyWaiters(ctx context.Context, conns []*grpc.ClientConn) error {
	classes := []startgatev1.Class{
		startgatev1.Class_CLASS_HIGH, startgatev1.Class_CLASS_NORMAL,
		startgatev1.Class_CLASS_LOW, startgatev1.Class_CLASS_BACKGROUND,
	}
	errs := make(chan error, len(conns))
	for c, conn := range conns {
		go func() {
			stream, err := startgatev1.NewStartgateClient(conn).AcquireMany(ctx)
			if err != nil {
				errs <- err
				return
			}
			// Read while writing: the daemon stops reading while it
			// cannot send.
			queued := make(chan error, 1)
			go func() {
				for n := c; n < queue10k; n += len(conns) {
					m, err := stream.Recv()
					if err != nil {
						queued <- err
						return
					}
					if m.GetQueued() == nil {
						queued <- fmt.Errorf("tag %d: got %v, want queued", m.GetTag(), m)
						return
					}
				}
				queued <- nil
				// The rest of the stream's answers, if any, until ctx ends.
				for {
					if _, err := stream.Recv(); err != nil {
						return
					}
				}
			}()
			for i := c; i < queue10k; i += len(conns) {
				err := stream.Send(&startgatev1.AcquireManyRequest{Msg: &startgatev1.AcquireManyRequest_Start{Start: &startgatev1.AcquireManyStart{
					Tag:         uint64(i + 1),
					Class:       classes[i%len(classes)],
					Tenant:      fmt.Sprintf("ns-%d", i%50),
					Description: fmt.Sprintf("create container ns-%d/web-%d/app", i%50, i%997),
				}}})
				if err != nil {
					errs <- fmt.Errorf("stream %d, tag %d: %w", c, i+1, err)
					return
				}
			}
			errs <- <-queued
		}()
	}
	var first error
	for range conns {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// checkQueueJSON checks the listing is all 10,000 waiters in queue order.
func checkQueueJSON(b *testing.B, out []byte) {
	b.Helper()
	var ws []struct {
		Position int    `json:"position"`
		Class    string `json:"class"`
	}
	if err := json.Unmarshal(out, &ws); err != nil {
		b.Fatalf("queue -o json is not a JSON list of waiters: %v\n%.300s", err, out)
	}
	if len(ws) != queue10k {
		b.Fatalf("queue -o json listed %d waiters, want %d", len(ws), queue10k)
	}
	if ws[0].Class != "high" || ws[len(ws)-1].Class != "background" || ws[len(ws)-1].Position != queue10k {
		b.Fatalf("queue -o json order: first %+v, last %+v; want high first, background at %d last", ws[0], ws[len(ws)-1], queue10k)
	}
}

type daemonProc struct {
	cmd    *exec.Cmd
	log    *bytes.Buffer
	exited chan error
}

func startDaemon(b *testing.B, path, dir, sock string) *daemonProc {
	b.Helper()
	cfg := filepath.Join(dir, "startgated.toml")
	text := fmt.Sprintf(`version = 1
[daemon]
socket = %q
log_level = "warn"
log_format = "console"
shutdown_timeout = "10s"
max_waiters_per_peer = %d
[metrics]
listen = ""
[admission]
max_queue = %d
`, sock, queue10k, queue10k)
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		b.Fatal(err)
	}
	d := &daemonProc{cmd: exec.Command(path, "--config", cfg), log: &bytes.Buffer{}, exited: make(chan error, 1)}
	d.cmd.Stdout = d.log
	d.cmd.Stderr = d.log
	if err := d.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() { d.exited <- d.cmd.Wait() }()
	// The deferred stop covers the normal end; this covers a Fatal before
	// the defer is in place.
	b.Cleanup(func() {
		select {
		case err := <-d.exited:
			d.exited <- err
		default:
			d.cmd.Process.Kill()
			d.exited <- <-d.exited
		}
	})
	pollUntil(b, "the daemon's socket", func() bool {
		select {
		case err := <-d.exited:
			b.Fatalf("startgated exited early: %v\n%s", err, d.log.String())
		default:
		}
		_, err := os.Lstat(sock)
		return err == nil
	})
	return d
}

// stop sends SIGTERM and fails unless the daemon exits cleanly.
func (d *daemonProc) stop(b *testing.B) {
	b.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		b.Error(err)
	}
	select {
	case err := <-d.exited:
		d.exited <- err // for the cleanup
		if err != nil {
			b.Errorf("startgated after SIGTERM: %v, want exit 0\n%s", err, d.log.String())
		}
	case <-time.After(20 * time.Second):
		b.Errorf("startgated did not exit within 20s of SIGTERM\n%s", d.log.String())
	}
}

// rss reads VmRSS or VmHWM of /proc/PID/status, in MiB.
func (d *daemonProc) rss(b *testing.B, field string) float64 {
	b.Helper()
	p, err := procfs.NewProc(d.cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	st, err := p.NewStatus()
	if err != nil {
		b.Fatal(err)
	}
	var n uint64
	switch field {
	case "VmRSS":
		n = st.VmRSS
	case "VmHWM":
		n = st.VmHWM
	default:
		b.Fatalf("rss: no field %s", field)
	}
	return float64(n) / (1 << 20)
}

// pollUntil waits on a real process; there is no clock to advance.
func pollUntil(b *testing.B, what string, cond func() bool) {
	b.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
