package ctl

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// writeWaitersJSON must write what the generic encoder writes, byte for
// byte: scripts parse `queue -o json`.
func TestWriteWaitersJSON(t *testing.T) {
	enq := time.Date(2026, 11, 24, 0, 16, 49, 767194605, time.UTC)
	berlin := time.FixedZone("CET", 3600)
	dl := time.Date(2026, 11, 24, 1, 0, 0, 0, berlin)
	whole := time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("", -(9*3600+30*60)))
	w := func(id uint64, desc string, deadline *time.Time) Waiter {
		return Waiter{ID: id, Class: "normal", Tenant: "ns-1", Description: desc, Enqueued: enq, Waited: "1.5s", Deadline: deadline, Position: int(id)}
	}
	tests := []struct {
		name string
		ws   []Waiter
	}{
		{"empty", []Waiter{}},
		{"one", []Waiter{w(1, "create container ns-17/web-3/app", nil)}},
		{"deadline and zones", []Waiter{w(1, "a", &dl), {ID: 2, Class: "low", Enqueued: whole, Waited: "0s", Deadline: &whole, Position: 2}}},
		{"zero values", []Waiter{{}}},
		{"escapes", []Waiter{
			w(1, `say "hi" \ there`, nil),
			w(2, "<script>&amp;</script>", nil),
			w(3, "tab\tnewline\ncr\rbell\x07del\x7f", nil),
			w(4, "ünïcödé ☃ \u2028 \u2029", nil),
			w(5, "bad utf-8 \xff\xfe", nil),
			{ID: 6, Class: "x\"", Tenant: "<t>", Waited: "&", Position: 6},
		}},
		{"many", func() []Waiter {
			ws := make([]Waiter, 1000)
			for i := range ws {
				ws[i] = w(uint64(i+1)<<40, fmt.Sprintf("create container ns-%d/web-%d/app", i%50, i), nil)
				ws[i].Enqueued = enq.Add(time.Duration(i) * 1001 * time.Microsecond)
			}
			return ws
		}()},
	}
	for _, tt := range tests {
		var got, want bytes.Buffer
		if err := writeWaitersJSON(&got, tt.ws); err != nil {
			t.Errorf("%s: writeWaitersJSON: %v", tt.name, err)
			continue
		}
		if err := emit(&want, "json", tt.ws); err != nil {
			t.Fatalf("%s: emit: %v", tt.name, err)
		}
		if got.String() != want.String() {
			t.Errorf("%s: writeWaitersJSON wrote\n%s\nwant (emit)\n%s", tt.name, clip(got.String()), clip(want.String()))
		}
	}
}

func TestWriteWaitersJSONYearOutOfRange(t *testing.T) {
	ws := []Waiter{{ID: 1, Enqueued: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}}
	var got bytes.Buffer
	if err := writeWaitersJSON(&got, ws); err == nil || !strings.Contains(err.Error(), "year") {
		t.Errorf("writeWaitersJSON(year 10000) = %v, want an error naming the year", err)
	}
}

func clip(s string) string {
	if len(s) > 2000 {
		return s[:2000] + "..."
	}
	return s
}

// BenchmarkWriteWaitersJSON compares the two encoders on 10,000 waiters.
//
//	go test -run '^$' -bench WaitersJSON ./internal/ctl/
func BenchmarkWriteWaitersJSON(b *testing.B) {
	ws := make([]Waiter, 10000)
	now := time.Now()
	for i := range ws {
		ws[i] = Waiter{ID: uint64(i + 1), Class: "normal", Tenant: fmt.Sprintf("ns-%d", i%50),
			Description: fmt.Sprintf("create container ns-%d/web-%d/app", i%50, i), Enqueued: now, Waited: "1.234s", Position: i + 1}
	}
	var buf bytes.Buffer
	b.Run("writeWaitersJSON", func(b *testing.B) {
		for b.Loop() {
			buf.Reset()
			if err := writeWaitersJSON(&buf, ws); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("emit", func(b *testing.B) {
		for b.Loop() {
			buf.Reset()
			if err := emit(&buf, "json", ws); err != nil {
				b.Fatal(err)
			}
		}
	})
}
