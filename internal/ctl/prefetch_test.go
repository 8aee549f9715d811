package ctl

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/startgate/startgate/internal/admission"
	"github.com/startgate/startgate/internal/prefetch"
	"github.com/startgate/startgate/internal/server"
)

type fakePrefetcher struct {
	mu      sync.Mutex
	added   []string
	removed []string
	entries []prefetch.Entry
}

func (f *fakePrefetcher) Add(ref string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.added = append(f.added, ref)
	return nil
}

func (f *fakePrefetcher) Remove(ref string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed = append(f.removed, ref)
	return nil
}

func (f *fakePrefetcher) List() []prefetch.Entry {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]prefetch.Entry(nil), f.entries...)
}

// startPrefetchDaemon serves a real gate and p (nil: prefetch off) on a
// real unix socket.
func startPrefetchDaemon(t *testing.T, p server.Prefetcher) *daemon {
	t.Helper()
	return serveDaemon(t, admission.DefaultPolicy(), p)
}

const (
	runDigest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	newDigest = "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
)

func TestPrefetchLs(t *testing.T) {
	f := &fakePrefetcher{entries: []prefetch.Entry{
		{Ref: "docker.io/library/app:1", Running: runDigest, New: newDigest, State: prefetch.StateFetching,
			BytesDone: 10_200_000, BytesTotal: 20_500_000, LayersFetched: 1, Updated: time.Now().Add(-90 * time.Second)},
		{Ref: "example.com/b:2", State: prefetch.StateFailed, Error: "resolve:\nHTTP 500", Updated: time.Now()},
	}}
	d := startPrefetchDaemon(t, f)

	r := d.run(t, "prefetch", "ls", "-o", "json")
	if r.code != 0 {
		t.Fatalf("prefetch ls -o json: exit %d, stderr %q", r.code, r.stderr)
	}
	var got []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("prefetch ls -o json is not a JSON list: %v\n%s", err, r.stdout)
	}
	if len(got) != 2 {
		t.Fatalf("prefetch ls -o json: %d entries, want 2:\n%s", len(got), r.stdout)
	}
	for i, e := range got {
		for _, k := range []string{"reference", "running_digest", "new_digest", "state", "bytes_done", "bytes_total", "layers_fetched",
			"fetched_layers", "config_digest", "error", "updated", "lease", "expires", "previous_digest", "previous_until", "hits"} {
			if _, ok := e[k]; !ok {
				t.Errorf("entry %d lacks key %q: %v", i, k, e)
			}
		}
	}
	if e := got[0]; e["reference"] != "docker.io/library/app:1" || e["running_digest"] != runDigest || e["new_digest"] != newDigest ||
		e["state"] != "fetching" || e["bytes_done"] != 10.2e6 || e["bytes_total"] != 20.5e6 || e["layers_fetched"] != 1.0 {
		t.Errorf("entry 0 = %v", e)
	}
	if e := got[1]; e["state"] != "failed" || e["error"] != "resolve:\nHTTP 500" || e["running_digest"] != "" {
		t.Errorf("entry 1 = %v", e)
	}

	r = d.run(t, "prefetch", "ls")
	if r.code != 0 {
		t.Fatalf("prefetch ls: exit %d, stderr %q", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("prefetch ls: %d lines, want header and 2:\n%s", len(lines), r.stdout)
	}
	for _, h := range []string{"REFERENCE", "RUNNING", "NEW", "STATE", "PROGRESS", "AGE", "HITS", "ERROR"} {
		if !strings.Contains(lines[0], h) {
			t.Errorf("header %q lacks %s", lines[0], h)
		}
	}
	for _, want := range []string{"docker.io/library/app:1", "0123456789ab ", "fedcba987654 ", "fetching", "[####......] 10.2/20.5 MB", "1m"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("row %q lacks %q", lines[1], want)
		}
	}
	if strings.Contains(lines[1], "sha256:") || strings.Contains(lines[1], "0123456789abc") {
		t.Errorf("row %q shows more than 12 hex characters of a digest", lines[1])
	}
	for _, want := range []string{"example.com/b:2", "failed", "resolve: HTTP 500"} {
		if !strings.Contains(lines[2], want) {
			t.Errorf("row %q lacks %q", lines[2], want)
		}
	}

	r = d.run(t, "prefetch", "ls", "-o", "yaml")
	if r.code != 0 || !strings.Contains(r.stdout, "reference: docker.io/library/app:1") || !strings.HasPrefix(r.stdout, "- ") {
		t.Errorf("prefetch ls -o yaml: exit %d, got %q", r.code, r.stdout)
	}
}

func TestPrefetchLsEmptyIsList(t *testing.T) {
	d := startPrefetchDaemon(t, &fakePrefetcher{})
	r := d.run(t, "prefetch", "ls", "-o", "json")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("prefetch ls -o json with nothing watched: exit %d, got %q, want []", r.code, r.stdout)
	}
}

func TestPrefetchAddRm(t *testing.T) {
	f := &fakePrefetcher{}
	d := startPrefetchDaemon(t, f)
	r := d.run(t, "prefetch", "add", "registry.example.com/app:1")
	if r.code != 0 || !strings.Contains(r.stdout, "watching registry.example.com/app:1") {
		t.Errorf("prefetch add: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = d.run(t, "prefetch", "rm", "registry.example.com/app:1", "-o", "json")
	var res map[string]string
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &res) != nil || !strings.Contains(res["result"], "stopped watching") {
		t.Errorf("prefetch rm -o json: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.added) != 1 || f.added[0] != "registry.example.com/app:1" || len(f.removed) != 1 || f.removed[0] != "registry.example.com/app:1" {
		t.Errorf("added %q, removed %q", f.added, f.removed)
	}
}

func TestPrefetchAddDigestRefused(t *testing.T) {
	f := &fakePrefetcher{}
	d := startPrefetchDaemon(t, f)
	r := d.run(t, "prefetch", "add", "registry.example.com/app@"+newDigest)
	if r.code != 1 || !strings.Contains(r.stderr, "a tag, not a digest") || !strings.Contains(r.stderr, "reference") {
		t.Errorf("prefetch add of a digest: exit %d, stderr %q; want 1 and a tag, not a digest", r.code, r.stderr)
	}
	if len(f.added) != 0 {
		t.Errorf("a digest reference reached the Prefetcher: %q", f.added)
	}
}

func TestPrefetchOff(t *testing.T) {
	d := startPrefetchDaemon(t, nil)
	for _, args := range [][]string{{"prefetch", "ls"}, {"prefetch", "ls", "-o", "json"}, {"prefetch", "add", "app:1"}, {"prefetch", "rm", "app:1"}} {
		r := d.run(t, args...)
		if r.code != 1 || strings.TrimSpace(r.stderr) != "startgatectl: server: prefetch is off (prefetch.enabled in the config)" || r.stdout != "" {
			t.Errorf("%v with prefetch off: exit %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
	}
}

func TestPrefetchUsage(t *testing.T) {
	d := startPrefetchDaemon(t, nil)
	for _, args := range [][]string{{"prefetch"}, {"prefetch", "add"}, {"prefetch", "rm", "a:1", "b:1"}} {
		if r := d.run(t, args...); r.code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage); stderr %q", args, r.code, r.stderr)
		}
	}
}

func TestProgress(t *testing.T) {
	for _, tc := range []struct {
		done, total int64
		want        string
	}{
		{0, 0, "-"},
		{5, 0, "-"},
		{0, 20_500_000, "[..........] 0.0/20.5 MB"},
		{10_200_000, 20_500_000, "[####......] 10.2/20.5 MB"},
		{20_500_000, 20_500_000, "[##########] 20.5/20.5 MB"},
		{30, 20, "[##########] 20/20 B"},
		{1500, 3000, "[#####.....] 1.5/3.0 kB"},
		{2e9, 4e9, "[#####.....] 2.0/4.0 GB"},
	} {
		if got := progress(tc.done, tc.total); got != tc.want {
			t.Errorf("progress(%d, %d) = %q, want %q", tc.done, tc.total, got, tc.want)
		}
	}
	if got := shortDigest(runDigest); got != "0123456789ab" {
		t.Errorf("shortDigest = %q", got)
	}
	for d, want := range map[time.Duration]string{-time.Second: "0s", 42 * time.Second: "42s", 5 * time.Minute: "5m", 3 * time.Hour: "3h", 72 * time.Hour: "3d"} {
		if got := ageStr(d); got != want {
			t.Errorf("ageStr(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestPrefetchEventLine(t *testing.T) {
	at := time.Date(2026, 11, 24, 3, 4, 5, 0, time.UTC)
	e := Event{Time: at, Type: "prefetch", Reason: "state", Prefetch: &PrefetchEntry{
		Reference: "localhost:5000/app:1", RunningDigest: runDigest, NewDigest: newDigest, State: "fetching",
		BytesDone: 5e6, BytesTotal: 20e6,
	}}
	got := eventLine(e)
	for _, want := range []string{"03:04:05.000 prefetch", "state", "ref=localhost:5000/app:1", "state=fetching",
		"running=0123456789ab", "new=fedcba987654", `progress="[##........] 5.0/20.0 MB"`} {
		if !strings.Contains(got, want) {
			t.Errorf("eventLine = %q, lacks %q", got, want)
		}
	}
	if strings.Contains(got, "in_flight=") {
		t.Errorf("eventLine = %q: a prefetch event shows the gate's fields", got)
	}
}
