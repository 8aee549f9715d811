package daemon

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/startgate/startgate/internal/config"
	startgatev1 "github.com/startgate/startgate/proto/startgate/v1"
)

// TestRunPrefetchWithoutContainerd: prefetch on, containerd down (no
// socket file, or a socket file nothing listens on). startgated starts,
// serves, the manager tries containerd and fails at once, and shutdown is
// clean (goleak in TestMain checks the containerd client's goroutines).
func TestRunPrefetchWithoutContainerd(t *testing.T) {
	for _, tt := range []struct {
		name  string
		setup func(t *testing.T, path string)
	}{
		{"no socket file", func(*testing.T, string) {}},
		{"nothing listening", func(t *testing.T, path string) {
			l, err := net.Listen("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			l.(*net.UnixListener).SetUnlinkOnClose(false)
			l.Close()
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			sock := filepath.Join(t.TempDir(), "containerd.sock")
			tt.setup(t, sock)
			cfg.Prefetch.Enabled = true
			cfg.Prefetch.ContainerdSocket = sock
			cfg.Prefetch.Registries = []string{"127.0.0.1:1"}
			cfg.Prefetch.Watch = []string{"127.0.0.3:5000/app:1"}
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			r := startRun(t, cfg)
			waitFor(t, "the API socket", func() bool { _, err := os.Lstat(cfg.Daemon.Socket); return err == nil })
			if _, err := status(context.Background(), cfg.Daemon.Socket); err != nil {
				t.Fatalf("Status with containerd down: %v", err)
			}
			lines := r.logs.FilterMessage("prefetch on").All()
			if len(lines) != 1 {
				t.Fatalf("got %d \"prefetch on\" lines, want 1", len(lines))
			}
			f := lines[0].ContextMap()
			if f["containerd_socket"] != sock || f["snapshotter"] != "overlayfs" || f["notifications"] != "off" || f["concurrency"] != int64(1) {
				t.Errorf("prefetch on line = %v", f)
			}
			// The API serves the Manager: add and list answer, not
			// FailedPrecondition.
			conn, err := grpc.NewClient("unix://"+cfg.Daemon.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			api := startgatev1.NewStartgateClient(conn)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := api.PrefetchAdd(ctx, &startgatev1.PrefetchAddRequest{Reference: "127.0.0.1:1/app:1"}); err != nil {
				t.Errorf("PrefetchAdd: %v", err)
			}
			// No image on the node (containerd is down) and not in
			// prefetch.registries: refused, naming the host and the key.
			_, err = api.PrefetchAdd(ctx, &startgatev1.PrefetchAddRequest{Reference: "127.0.0.1:2/app:1"})
			if grpcstatus.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "registry 127.0.0.1:2 is not allowed (prefetch.registries)") {
				t.Errorf("PrefetchAdd from an unlisted registry: %v, want PermissionDenied naming 127.0.0.1:2 and prefetch.registries", err)
			}
			// prefetch.watch is listed though containerd is down.
			waitFor(t, "prefetch.watch's entry", func() bool {
				r, err := api.PrefetchList(ctx, &startgatev1.PrefetchListRequest{})
				for _, e := range r.GetEntries() {
					if e.Reference == "127.0.0.3:5000/app:1" {
						return err == nil
					}
				}
				return false
			})
			// prefetch.watch's registry is allowed as if listed.
			if _, err := api.PrefetchAdd(ctx, &startgatev1.PrefetchAddRequest{Reference: "127.0.0.3:5000/other:1"}); err != nil {
				t.Errorf("PrefetchAdd from prefetch.watch's registry: %v", err)
			}
			if w, _ := f["watch"].([]any); len(w) != 1 || w[0] != "127.0.0.3:5000/app:1" {
				t.Errorf("prefetch on line: watch = %v, want [127.0.0.3:5000/app:1]", f["watch"])
			}
			if _, err := api.PrefetchList(ctx, &startgatev1.PrefetchListRequest{}); err != nil {
				t.Errorf("PrefetchList: %v", err)
			}
			// The manager's first cycle lists containerd's images and must
			// fail fast, not wait out containerd's 10 s dial timeout.
			waitFor(t, "the manager's failed image list", func() bool {
				return r.logs.FilterMessage("prefetch: list images").Len() > 0
			})
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("first image list failed after %v, want at once", d)
			}
			if err := r.stop(t); err != nil {
				t.Fatalf("Run = %v, want nil", err)
			}
			if r.logs.FilterMessage("prefetch: manager stopping").Len() != 1 {
				t.Error("the manager did not stop")
			}
		})
	}
}

// TestRunPrefetchNotifications: the webhook listener answers 401 without
// the token and 200 with it, and a push reaches the Manager as a Trigger.
// Its port held by another process at start does not stop the daemon:
// the listener takes it once it is free.
func TestRunPrefetchNotifications(t *testing.T) {
	holder, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	addr := holder.Addr().String()
	cfg := testConfig(t)
	dir := t.TempDir()
	token := filepath.Join(dir, "notify.token")
	if err := os.WriteFile(token, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Prefetch.Enabled = true
	cfg.Prefetch.ContainerdSocket = filepath.Join(dir, "containerd.sock")
	cfg.Prefetch.Notifications.Listen = addr
	cfg.Prefetch.Notifications.TokenFile = token
	cfg.Prefetch.Registries = []string{"reg.example"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	r := startRun(t, cfg)
	waitFor(t, "a failed attempt on the held port", func() bool {
		return r.logs.FilterMessageSnippet("prefetch notifications listener cannot listen").Len() > 0
	})
	if _, err := status(context.Background(), cfg.Daemon.Socket); err != nil {
		t.Fatalf("Status while the notifications port is held: %v", err)
	}
	lines := r.logs.FilterMessage("prefetch on").All()
	if len(lines) != 1 || lines[0].ContextMap()["notifications"] != addr {
		t.Fatalf("\"prefetch on\" lines %v, want one naming notifications %s", lines, addr)
	}
	holder.Close()
	waitFor(t, "the notifications listener", func() bool {
		return r.logs.FilterMessage("prefetch notifications listener listening").Len() == 1
	})

	var postBody func(auth, body string) int
	const body = `{"events":[{"id":"1","action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json",` +
		`"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1,"repository":"app","tag":"1"},` +
		`"request":{"host":"reg.example:5000"}}]}`
	post := func(auth string) int {
		return postBody(auth, body)
	}
	postBody = func(auth, body string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/vnd.docker.distribution.events.v1+json")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("POST: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(""); code != http.StatusUnauthorized {
		t.Errorf("POST without a token = %d, want 401", code)
	}
	if code := post("Bearer wrong"); code != http.StatusUnauthorized {
		t.Errorf("POST with a wrong token = %d, want 401", code)
	}
	if code := post("Bearer s3cret"); code != http.StatusOK {
		t.Errorf("POST with the token = %d, want 200", code)
	}
	// The push reached Manager.Trigger: the manager's loop took the ref
	// (not watched, as containerd is down and nothing was added).
	waitFor(t, "the triggered ref in the manager", func() bool {
		for _, e := range r.logs.FilterMessage("prefetch: trigger for a ref not watched").All() {
			if e.ContextMap()["ref"] == "reg.example:5000/app:1" {
				return true
			}
		}
		return false
	})
	// A push from a registry outside prefetch.registries (and no image
	// on the node) is refused at Trigger and logged.
	if code := postBody("Bearer s3cret", strings.ReplaceAll(body, "reg.example:5000", "evil.example")); code != http.StatusOK {
		t.Errorf("POST from another registry = %d, want 200", code)
	}
	waitFor(t, "the refused notification", func() bool {
		for _, e := range r.logs.FilterMessage("prefetch: notification refused").All() {
			if e.ContextMap()["ref"] == "evil.example/app:1" {
				return true
			}
		}
		return false
	})
	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	// The listener is gone after shutdown.
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("notifications listener %s still accepts after shutdown", addr)
	}
}

// TestRunPrefetchRefusesBadToken: a token file others can read fails the
// start, naming the key.
func TestRunPrefetchRefusesBadToken(t *testing.T) {
	cfg := testConfig(t)
	dir := t.TempDir()
	token := filepath.Join(dir, "notify.token")
	if err := os.WriteFile(token, []byte("s3cret"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(token, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.Prefetch.Enabled = true
	cfg.Prefetch.ContainerdSocket = filepath.Join(dir, "containerd.sock")
	cfg.Prefetch.Notifications = config.Notifications{Listen: "127.0.0.1:0", TokenFile: token}
	r := startRun(t, cfg)
	select {
	case err := <-r.done:
		r.done <- err
		if err == nil || !strings.Contains(err.Error(), "prefetch.notifications.token_file") {
			t.Errorf("Run = %v, want an error naming prefetch.notifications.token_file", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not fail")
	}
	if _, err := os.Lstat(cfg.Daemon.Socket); err == nil {
		t.Errorf("API socket %s left behind", cfg.Daemon.Socket)
	}
}

// TestRunPrefetchDockerConfig: a docker config.json's hosts are logged on
// the "prefetch on" line and its secrets nowhere; a bad one fails the
// start, naming the key and not quoting the file.
func TestRunPrefetchDockerConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "config.json")
	if err := os.WriteFile(good, []byte(`{"auths":{"reg.example:5000":{"username":"u","password":"pw-s3cret"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"auths":{"reg.example":{"auth":"pw-s3cret"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Run("good", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Prefetch.Enabled = true
		cfg.Prefetch.ContainerdSocket = filepath.Join(dir, "containerd.sock")
		cfg.Prefetch.DockerConfig = good
		r := startRun(t, cfg)
		waitFor(t, "the API socket", func() bool { _, err := os.Lstat(cfg.Daemon.Socket); return err == nil })
		lines := r.logs.FilterMessage("prefetch on").All()
		if len(lines) != 1 {
			t.Fatalf("got %d \"prefetch on\" lines, want 1", len(lines))
		}
		if got := fmt.Sprint(lines[0].ContextMap()["credentials_for"]); got != "[reg.example:5000]" {
			t.Errorf("credentials_for = %s, want [reg.example:5000]", got)
		}
		if err := r.stop(t); err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
		for _, e := range r.logs.All() {
			if strings.Contains(fmt.Sprint(e.Message, e.ContextMap()), "pw-s3cret") {
				t.Errorf("a log line shows the secret: %s %v", e.Message, e.ContextMap())
			}
		}
	})
	t.Run("bad", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Prefetch.Enabled = true
		cfg.Prefetch.ContainerdSocket = filepath.Join(dir, "containerd.sock")
		cfg.Prefetch.DockerConfig = bad
		r := startRun(t, cfg)
		select {
		case err := <-r.done:
			r.done <- err
			if err == nil || !strings.Contains(err.Error(), "prefetch.docker_config") || strings.Contains(err.Error(), "pw-s3cret") {
				t.Errorf("Run = %v, want an error naming prefetch.docker_config without the secret", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("Run did not fail")
		}
	})
}
