package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/startgate/startgate/proto/startgate/v1"
)

// floodEnv, when set, makes the test binary a flood client (floodMain) on
// that socket instead of running tests.
const floodEnv = "STARTGATE_E2E_FLOOD_SOCK"

// floodResult is what the flood client reports once it has opened all it
// could.
type floodResult struct {
	Streams     int            `json:"streams"`     // Watch streams open
	Refused     map[string]int `json:"refused"`     // by gRPC code
	Conns       int            `json:"conns"`       // connections that carried a stream
	ConnsFailed int            `json:"connsFailed"` // connections that carried none
	Message     string         `json:"message"`     // a ResourceExhausted message
}

// floodMain opens floodConns connections with floodStreams Watch streams
// on each, as a user who may only read would, reports what it got on
// stdout, and holds everything open until stdin closes.
func floodMain(sock string) {
	const floodConns, floodStreams = 200, 100 // 20,000 streams asked for
	res := floodResult{Refused: map[string]int{}}
	ctx := context.Background()
	var keep []*grpc.ClientConn
	for range floodConns {
		conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			res.ConnsFailed++
			continue
		}
		keep = append(keep, conn)
		c := pb.NewStartgateClient(conn)
		opened := 0
		for range floodStreams {
			err := openWatch(ctx, c)
			if err != nil {
				res.Refused[status.Code(err).String()]++
				if status.Code(err) == codes.ResourceExhausted {
					res.Message = status.Convert(err).Message()
				}
				if status.Code(err) == codes.Unavailable {
					break // the connection was closed
				}
				continue
			}
			opened++
		}
		res.Streams += opened
		if opened > 0 {
			res.Conns++
		} else {
			res.ConnsFailed++
		}
	}
	_ = json.NewEncoder(os.Stdout).Encode(res)
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range keep {
		c.Close()
	}
}

// openWatch opens a Watch stream and reports whether the server kept it:
// a refused one ends at once with its status; one still open after a
// moment was accepted (its reader is left blocked, holding it open).
func openWatch(ctx context.Context, c pb.StartgateClient) error {
	w, err := c.Watch(ctx, &pb.WatchRequest{})
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { _, err := w.Recv(); done <- err }()
	select {
	case err := <-done:
		return err
	case <-time.After(50 * time.Millisecond):
		return nil
	}
}

// A user who may only read opens 20,000 Watch streams over 200
// connections: it gets its caps (128 streams, 128 connections, each
// refusal naming its key), the daemon's memory stays bounded, and root is
// still served. Before the caps the same flood took the daemon from 68 to
// 744 MB and never gave it back.
func TestReadOnlyFloodIsBounded(t *testing.T) {
	n := startNode(t, nodeOptions{config: "socket_mode = \"0666\"\n"})
	f := flood(t, n)

	if f.res.Streams != 128 {
		t.Errorf("the user holds %d streams, want its cap of 128", f.res.Streams)
	}
	if f.res.Refused["ResourceExhausted"] == 0 || !strings.Contains(f.res.Message, "daemon.max_streams_per_peer") {
		t.Errorf("refusals %v (%q), want ResourceExhausted naming daemon.max_streams_per_peer", f.res.Refused, f.res.Message)
	}
	if f.res.Conns+f.res.ConnsFailed != 200 || f.res.ConnsFailed == 0 {
		t.Errorf("%d connections carried streams and %d none, want the ones past the caps refused", f.res.Conns, f.res.ConnsFailed)
	}
	if grew := f.rssDuring - f.rssBefore; grew > 64<<20 {
		t.Errorf("daemon RSS grew by %d MB under the flood, want at most 64", grew>>20)
	}
}

// The same flood with the per-caller caps raised out of the way (as if
// it came from many uids): past daemon.memory_high the daemon refuses
// the newcomers itself, says so in its log, keeps what is open and still
// serves root, instead of growing until the kernel kills it.
func TestMemoryHighShedsTheFlood(t *testing.T) {
	n := startNode(t, nodeOptions{config: "socket_mode = \"0666\"\nmax_connections_per_peer = 1000\n" +
		"max_streams_per_peer = 100000\nmax_streams = 1000000\nmemory_high = \"32MiB\"\n"})
	f := flood(t, n)

	if f.res.Refused["ResourceExhausted"] == 0 || !strings.Contains(f.res.Message, "daemon.memory_high") {
		t.Errorf("refusals %v (%q), want ResourceExhausted naming daemon.memory_high", f.res.Refused, f.res.Message)
	}
	if f.res.Streams == 0 || f.res.Streams >= 20000 {
		t.Errorf("the user holds %d streams, want some, and not all 20,000 it asked for", f.res.Streams)
	}
	if grew := f.rssDuring - f.rssBefore; grew > 64<<20 {
		t.Errorf("daemon RSS grew by %d MB under the flood, want at most 64 (memory_high 32 MiB)", grew>>20)
	}
	if n.logLines("over daemon.memory_high", 1) == "" {
		t.Errorf("the daemon's log does not say it began shedding; log:\n%s", n.logTail())
	}
}

// flooded is what flood measured.
type flooded struct {
	res                  floodResult
	rssBefore, rssDuring int64
}

// flood runs the flood client as nobody against n's API socket (which
// must be mode 0666) and returns what it got, with the daemon's RSS and
// root's Acquire round trip before and during (logged; root's Acquire
// failing fails the test). The client holds its streams until the test
// ends.
func flood(t *testing.T, n *node) flooded {
	t.Helper()
	// The node's directory is the test's (0700): let the user reach the
	// socket, and run a copy of this binary it may execute.
	if err := os.Chmod(n.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(n.dir, "flood")
	if err := copyFile(self, bin, 0o755); err != nil {
		t.Fatal(err)
	}

	f := flooded{rssBefore: rssOf(t, n.daemon.Process.Pid)}
	latBefore := grantLatency(t, n.api)

	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), floodEnv+"="+n.api)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("flood client: %v\n%s", err, stderr.String())
	}
	if err := json.Unmarshal([]byte(line), &f.res); err != nil {
		t.Fatalf("flood client said %q: %v", line, err)
	}
	f.rssDuring = rssOf(t, n.daemon.Process.Pid)
	latDuring := grantLatency(t, n.api)
	t.Logf("flood: %+v; daemon RSS %d -> %d MB; root's Acquire round trip, median of 20: %v -> %v",
		f.res, f.rssBefore>>20, f.rssDuring>>20, latBefore, latDuring)
	return f
}

// rssOf reads a process's resident set size, in bytes.
func rssOf(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// grantLatency is the median of 20 Acquire round trips (start to granted,
// then release) by root on the API socket: reported, not asserted.
func grantLatency(t *testing.T, sock string) time.Duration {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := pb.NewStartgateClient(conn)
	var ds []time.Duration
	for range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		start := time.Now()
		s, err := c.Acquire(ctx)
		if err == nil {
			err = s.Send(&pb.AcquireRequest{Msg: &pb.AcquireRequest_Start{Start: &pb.AcquireStart{Class: pb.Class_CLASS_CRITICAL}}})
		}
		var m *pb.AcquireResponse
		if err == nil {
			m, err = s.Recv()
		}
		if err == nil && m.GetGranted() == nil {
			err = fmt.Errorf("answer %v, want granted", m)
		}
		if err != nil {
			cancel()
			t.Fatalf("root's Acquire: %v", err)
		}
		ds = append(ds, time.Since(start))
		_ = s.CloseSend()
		cancel()
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
