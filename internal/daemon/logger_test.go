package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"
)

// Under systemd, with stderr the journal's stream ($JOURNAL_STREAM), each
// line starts with its syslog priority for journald to keep; anywhere
// else lines are plain JSON.
func TestLoggerPriorityPrefixForJournal(t *testing.T) {
	for _, journal := range []bool{true, false} {
		t.Run(fmt.Sprint("journal=", journal), func(t *testing.T) {
			f, err := os.Create(filepath.Join(t.TempDir(), "log"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var st unix.Stat_t
			if err := unix.Fstat(int(f.Fd()), &st); err != nil {
				t.Fatal(err)
			}
			if journal {
				t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
			} else {
				t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino+1)) // another stream
			}
			log, _, err := NewLogger("debug", "json", f)
			if err != nil {
				t.Fatal(err)
			}
			log.Debug("d")
			log.Info("i")
			log.Named("x").Warn("w")
			log.Error("e")
			_ = log.Sync()
			b, err := os.ReadFile(f.Name())
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			if len(lines) != 4 {
				t.Fatalf("%d lines, want 4:\n%s", len(lines), b)
			}
			for i, p := range []string{"<7>", "<6>", "<4>", "<3>"} {
				if !journal {
					p = ""
				}
				if !strings.HasPrefix(lines[i], p+"{") {
					t.Errorf("line %d %q, want it to start with %q then the JSON", i, lines[i], p+"{")
				}
			}
		})
	}
}

// TestContainerdLogsRouted: lines containerd's libraries log through
// logrus reach the daemon's logger, info as debug, errors as errors, with
// their fields, and nothing is written as plain text.
func TestContainerdLogsRouted(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	routeContainerdLogs(zap.New(core))
	t.Cleanup(func() {
		logrus.StandardLogger().ReplaceHooks(logrus.LevelHooks{})
		logrus.SetOutput(os.Stderr)
	})
	logrus.WithField("host", "mirror.lan").Info("trying next host")
	logrus.Error("boom")
	got := logs.All()
	if len(got) != 2 {
		t.Fatalf("%d lines routed, want 2", len(got))
	}
	if got[0].Level != zap.DebugLevel || got[0].LoggerName != "containerd" || got[0].ContextMap()["host"] != "mirror.lan" {
		t.Errorf("info line routed as %v %q %v, want debug on logger containerd with host", got[0].Level, got[0].LoggerName, got[0].ContextMap())
	}
	if got[1].Level != zap.ErrorLevel || got[1].Message != "boom" {
		t.Errorf("error line routed as %v %q", got[1].Level, got[1].Message)
	}
}

// Durations read as people write them ("1.5s"), in both formats and in
// the lines containerd's libraries log through logrus, never as
// nanoseconds or float seconds.
func TestLoggerDurationsInHumanUnits(t *testing.T) {
	t.Cleanup(func() {
		logrus.StandardLogger().ReplaceHooks(logrus.LevelHooks{})
		logrus.SetOutput(os.Stderr)
	})
	for _, format := range []string{"json", "console"} {
		f, err := os.Create(filepath.Join(t.TempDir(), "log"))
		if err != nil {
			t.Fatal(err)
		}
		log, _, err := NewLogger("debug", format, f)
		if err != nil {
			t.Fatal(err)
		}
		log.Info("restored", zap.Duration("took", 1500*time.Millisecond))
		routeContainerdLogs(log)
		logrus.WithField("backoff", 250*time.Millisecond).Warn("retrying")
		_ = log.Sync()
		f.Close()
		b, err := os.ReadFile(f.Name())
		if err != nil {
			t.Fatal(err)
		}
		out := string(b)
		for _, want := range []string{"1.5s", "250ms"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s log lacks %q:\n%s", format, want, out)
			}
		}
		for _, bad := range []string{"1500000000", "1.5,", "1.5}", "250000000", "0.25"} {
			if strings.Contains(out, bad) {
				t.Errorf("%s log has a duration as a number (%q):\n%s", format, bad, out)
			}
		}
	}
}
