package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
