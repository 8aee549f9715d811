package daemon

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/startgate/startgate/internal/config"
)

// TestReload: SIGHUP applies the file's policy and log level at once,
// names the changes that need a restart without applying them, and a
// file that does not load changes nothing.
func TestReload(t *testing.T) {
	cfg := testConfig(t)
	// The proxy dials containerd lazily: none is needed here.
	cfg.CRI.Enabled = true
	cfg.CRI.Socket = filepath.Join(t.TempDir(), "cri.sock")
	cfg.CRI.ContainerdSocket = filepath.Join(t.TempDir(), "containerd.sock")
	path := filepath.Join(t.TempDir(), "config.toml")
	write := func(c *config.Config) {
		t.Helper()
		var b strings.Builder
		if err := c.WriteTOML(&b); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(cfg)
	hup := make(chan os.Signal, 1)
	level := zap.NewAtomicLevelAt(zapcore.InfoLevel)
	r := startRunReload(t, cfg, &Reload{
		Signals: hup,
		Load:    func() (*config.Config, error) { return config.Load(path, true) },
		Level:   level,
	})
	ctx := context.Background()
	st, err := status(ctx, cfg.Daemon.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if st.Policy.FixedInFlight != 0 {
		t.Fatalf("fixed in-flight before the reload = %d, want 0", st.Policy.FixedInFlight)
	}

	next := *cfg
	next.Admission.Limits.InFlight = 3
	next.Daemon.LogLevel = "debug"
	next.Metrics.Listen = "127.0.0.1:0"
	next.CRI.DefaultClass = "low"
	write(&next)
	hup <- syscall.SIGHUP
	waitFor(t, "the reload", func() bool { return r.logs.FilterMessage("config reloaded").Len() == 1 })
	if st, err = status(ctx, cfg.Daemon.Socket); err != nil {
		t.Fatal(err)
	}
	if st.Policy.FixedInFlight != 3 || st.InFlightLimit != 3 {
		t.Errorf("after the reload: fixed in-flight %d, limit %d, want 3 and 3", st.Policy.FixedInFlight, st.InFlightLimit)
	}
	if level.Level() != zapcore.DebugLevel {
		t.Errorf("log level after the reload = %v, want debug", level.Level())
	}
	applied := r.logs.FilterMessage("config reloaded").All()[0].ContextMap()["applied"]
	if got := applied.([]any); len(got) != 3 {
		t.Errorf("applied = %v, want the in-flight limit, the log level and the default class", got)
	}
	restart := r.logs.FilterMessageSnippet("take effect only at a restart").All()
	if len(restart) != 1 {
		t.Fatalf("%d lines about changes needing a restart, want 1", len(restart))
	}
	if got := restart[0].ContextMap()["not_applied"].([]any); !slices.Equal(got, []any{`metrics.listen:  -> 127.0.0.1:0`}) {
		t.Errorf("not_applied = %q, want metrics.listen only", got)
	}

	if err := os.WriteFile(path, []byte("version = 1\n[admission.limits]\ninflight = -1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hup <- syscall.SIGHUP
	waitFor(t, "the failed reload", func() bool { return r.logs.FilterMessageSnippet("config reload failed").Len() == 1 })
	failed := r.logs.FilterMessageSnippet("config reload failed").All()[0]
	if e := failed.ContextMap()["error"]; !strings.Contains(e.(string), "admission.limits.inflight") {
		t.Errorf("failed reload's error = %q, want it to name admission.limits.inflight", e)
	}
	if st, err = status(ctx, cfg.Daemon.Socket); err != nil {
		t.Fatal(err)
	}
	if st.Policy.FixedInFlight != 3 || level.Level() != zapcore.DebugLevel {
		t.Errorf("a bad file changed the daemon: fixed in-flight %d, level %v; want 3 and debug", st.Policy.FixedInFlight, level.Level())
	}
}
