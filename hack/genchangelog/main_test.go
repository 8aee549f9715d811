package main

import (
	"strings"
	"testing"
	"time"
)

func TestWrap(t *testing.T) {
	for _, tc := range []struct {
		in    string
		width int
		want  string
	}{
		{"short", 80, "  * short\n"},
		{"aaa bbb ccc", 11, "  * aaa bbb\n    ccc\n"},
		{"aaa   bbb\tccc", 13, "  * aaa bbb\n    ccc\n"},
		// A word longer than the width stays whole, on a line of its own.
		{"a " + strings.Repeat("x", 12) + " b", 10, "  * a\n    " + strings.Repeat("x", 12) + "\n    b\n"},
	} {
		if got := wrap(tc.in, "  * ", "    ", tc.width); got != tc.want {
			t.Errorf("wrap(%q, %d) = %q, want %q", tc.in, tc.width, got, tc.want)
		}
	}
}

func TestDebianChangelog(t *testing.T) {
	date := time.Date(2026, 12, 1, 18, 46, 28, 0, time.UTC)
	got := debianChangelog("startgate", "M <m@example.com>", []entry{
		{Version: "0.0.3+gabc", Date: date, Changes: []string{"two", "one"}, More: 5},
		{Version: "0.0.1", Date: date, Changes: []string{"first"}},
	})
	want := `startgate (0.0.3+gabc) stable; urgency=medium

  * two
  * one
  * And 5 earlier commits (git log).

 -- M <m@example.com>  Tue, 01 Dec 2026 18:46:28 +0000

startgate (0.0.1) stable; urgency=medium

  * first

 -- M <m@example.com>  Tue, 01 Dec 2026 18:46:28 +0000
`
	if got != want {
		t.Errorf("debianChangelog:\n%s\nwant:\n%s", got, want)
	}
}

func TestChglogYAML(t *testing.T) {
	date := time.Date(2026, 12, 1, 18, 46, 28, 0, time.UTC)
	got := chglogYAML("M <m@example.com>", []entry{{Version: "0.0.3+gabc", Date: date, Changes: []string{`a "quoted": note`}}})
	want := `- semver: "0.0.3+gabc"
  date: 2026-12-01T18:46:28Z
  packager: "M <m@example.com>"
  changes:
    - note: "a \"quoted\": note"
`
	if got != want {
		t.Errorf("chglogYAML:\n%s\nwant:\n%s", got, want)
	}
}
