package ctl

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// hold runs its command ungated only when there is no gate to wait for:
// nothing listens on the socket, or the daemon is shutting down. Every
// other failure reaching it exits 1 without running the command. Each
// case is a real path: a missing one, a stale socket, a file, a listener
// that is not startgated.
func TestHoldRunsUngatedOnlyWithoutAGate(t *testing.T) {
	const ran = "ran\n"
	for _, tc := range []struct {
		name string
		// socket returns the --socket argument.
		socket func(t *testing.T) string
		// runs: the command ran ungated (exit 4) with a warning; otherwise
		// hold exits 1 without running it.
		runs   bool
		stderr []string
	}{
		{"no such socket", func(t *testing.T) string { return filepath.Join(t.TempDir(), "missing.sock") },
			true, []string{"warning: cannot reach startgated at", "is it running?", "without a start slot"}},
		{"no such directory", func(t *testing.T) string { return filepath.Join(t.TempDir(), "run", "startgate", "sg.sock") },
			true, []string{"warning: cannot reach startgated at", "is it running?"}},
		{"stale socket, nothing listens", staleSocket,
			true, []string{"warning: cannot reach startgated at", "is it running?"}},
		{"daemon shutting down", func(t *testing.T) string {
			d := startDaemon(t)
			d.gate.Close()
			return d.sock
		}, true, []string{"warning: admission: gate is shutting down; running the command without a start slot"}},
		{"regular file", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "sg.sock")
			if err := os.WriteFile(p, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}, false, []string{"cannot reach startgated at", "not a socket", "not running the command"}},
		{"file where a directory should be", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "run")
			if err := os.WriteFile(p, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(p, "sg.sock")
		}, false, []string{"cannot reach startgated at", "not a directory", "not running the command"}},
		{"permission denied", func(t *testing.T) string {
			if os.Geteuid() == 0 {
				t.Skip("root is never denied a socket")
			}
			d := startDaemon(t)
			dir := filepath.Dir(d.sock)
			if err := os.Chmod(dir, 0); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = os.Chmod(dir, 0o700) })
			return d.sock
		}, false, []string{"cannot reach startgated at", "permission denied", "not running the command"}},
		{"listener that is not gRPC", notGRPC,
			false, []string{"no answer from startgated at", "not running the command"}},
		{"gRPC server that is not startgated", otherGRPCServer,
			false, []string{"is not startgated", "unknown service startgate.v1.Startgate", "not running the command"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := tc.socket(t)
			r := runCtl(t, "--socket", sock, "hold", "--", "sh", "-c", "echo ran; exit 4")
			switch {
			case tc.runs && (r.code != 4 || r.stdout != ran):
				t.Errorf("hold at %s: exit %d, stdout %q, stderr %q; want the command run: 4, %q", sock, r.code, r.stdout, r.stderr, ran)
			case !tc.runs && (r.code != 1 || r.stdout != ""):
				t.Errorf("hold at %s: exit %d, stdout %q, stderr %q; want 1 and the command not run", sock, r.code, r.stdout, r.stderr)
			}
			for _, w := range tc.stderr {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("hold at %s: stderr %q, want it to contain %q", sock, r.stderr, w)
				}
			}
		})
	}
}

// A paused gate stays in force whatever else goes wrong: with the daemon
// paused, a hold through a socket path that is wrong does not start its
// command, and one through the right path waits (it is not granted).
func TestHoldDoesNotBypassAPausedGate(t *testing.T) {
	d := startDaemon(t)
	d.gate.Pause()
	file := filepath.Join(t.TempDir(), "sg.sock")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r := runCtl(t, "--socket", file, "hold", "--", "echo", "ran")
	if r.code != 1 || r.stdout != "" {
		t.Errorf("hold through a regular file while paused: exit %d, stdout %q, stderr %q; want 1 and the command not run", r.code, r.stdout, r.stderr)
	}
	if got := d.gate.Status().Counters.Admitted; got != 0 {
		t.Errorf("admitted = %d while paused, want 0", got)
	}
}

// A relative --socket (or STARTGATE_SOCKET) is a path from the working
// directory, not a URL authority.
func TestRelativeSocket(t *testing.T) {
	d := startDaemon(t)
	t.Chdir(filepath.Dir(d.sock))
	rel := filepath.Base(d.sock)
	for _, tc := range []struct {
		name string
		env  string
		args []string
		out  string
	}{
		{"status", "", []string{"--socket", rel, "status"}, "in flight:"},
		{"status ./", "", []string{"--socket", "./" + rel, "status", "-o", "json"}, `"in_flight_limit": 4`},
		{"env", rel, []string{"status"}, "in flight:"},
		{"hold", "", []string{"--socket", rel, "hold", "-v", "--", "echo", "gated"}, "gated\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("STARTGATE_SOCKET", tc.env)
			r := runCtl(t, tc.args...)
			if r.code != 0 || !strings.Contains(r.stdout, tc.out) {
				t.Errorf("%v: exit %d, stdout %q, stderr %q; want 0 and %q", tc.args, r.code, r.stdout, r.stderr, tc.out)
			}
			if strings.Contains(r.stderr, "warning") {
				t.Errorf("%v: stderr %q, want no warning", tc.args, r.stderr)
			}
		})
	}
	if got := d.gate.Status().Counters.Admitted; got != 1 {
		t.Errorf("admitted = %d, want 1: hold through a relative socket took a slot", got)
	}
	r := runCtl(t, "--socket", "", "status")
	if r.code != 2 || !strings.Contains(r.stderr, "--socket: must not be empty") {
		t.Errorf("--socket \"\": exit %d, stderr %q; want 2 and a usage error", r.code, r.stderr)
	}
}

// staleSocket is a socket file nobody listens on: connection refused.
func staleSocket(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("unix", filepath.Join(t.TempDir(), "stale.sock"))
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	lis.(*net.UnixListener).SetUnlinkOnClose(false)
	lis.Close()
	return lis.Addr().String()
}

// notGRPC listens on a unix socket and answers every connection with an
// HTTP/1 error, as some other daemon's socket would.
func notGRPC(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("unix", filepath.Join(t.TempDir(), "other.sock"))
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n"))
			c.Close()
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		wg.Wait()
	})
	return lis.Addr().String()
}

// otherGRPCServer serves gRPC health on a unix socket, and nothing of
// startgated's API.
func otherGRPCServer(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("unix", filepath.Join(t.TempDir(), "grpc.sock"))
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	return lis.Addr().String()
}
