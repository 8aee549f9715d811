package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	dir := t.TempDir()
	if err := run(dir, "1.2.3", "2026-12-01T18:46:28Z"); err != nil {
		t.Fatalf("run: %v", err)
	}
	for _, tc := range []struct {
		page string
		want string // a line the page must have
	}{
		{"man1/startgatectl.1", `.TH "STARTGATECTL" "1" "Dec 2026" "startgate 1.2.3" "startgate manual"`},
		{"man1/startgatectl-node-disable.1", `.TH "STARTGATECTL-NODE-DISABLE" "1"`},
		{"man1/startgatectl-completion-bash.1", `.TH "STARTGATECTL-COMPLETION-BASH" "1"`},
		{"man8/startgated.8", `.TH "STARTGATED" "8" "Dec 2026" "startgate 1.2.3" "startgate manual"`},
		{"man8/startgated-config-check.8", `.TH "STARTGATED-CONFIG-CHECK" "8"`},
	} {
		b, err := os.ReadFile(filepath.Join(dir, tc.page))
		if err != nil {
			t.Errorf("%s: %v", tc.page, err)
			continue
		}
		if !strings.Contains(string(b), tc.want) {
			t.Errorf("%s: no %q in:\n%.300s", tc.page, tc.want, b)
		}
		if strings.Contains(string(b), "Auto generated") {
			t.Errorf("%s: has cobra's dated HISTORY section", tc.page)
		}
	}
	// The hidden test flags of startgatectl node stay out of the pages.
	b, _ := os.ReadFile(filepath.Join(dir, "man1/startgatectl-node-enable.1"))
	if strings.Contains(string(b), "state-dir") {
		t.Errorf("startgatectl-node-enable.1 shows the hidden --state-dir")
	}
}

func TestRunRefuses(t *testing.T) {
	for _, tc := range []struct{ out, ver, date string }{
		{"", "1.2.3", ""},
		{t.TempDir(), "", ""},
		{t.TempDir(), "1.2.3", "yesterday"},
	} {
		if err := run(tc.out, tc.ver, tc.date); err == nil {
			t.Errorf("run(%q, %q, %q) = nil, want an error", tc.out, tc.ver, tc.date)
		}
	}
}
