package daemon

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"k8s.io/apimachinery/pkg/util/wait"
)

// A port held by another process is retried until it is free, counted,
// and told to `systemctl status`; then the endpoint serves. The backoff
// is shortened; nothing here depends on how fast it goes.
func TestEndpointRetriesATakenPort(t *testing.T) {
	holder, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := holder.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	core, logs := observer.New(zap.DebugLevel)
	var failures atomic.Int64
	e := newEndpoint(addr, mux, zap.New(core), func() { failures.Add(1) })
	e.retry = wait.Backoff{Duration: time.Millisecond, Factor: 2, Steps: 1 << 30, Cap: 5 * time.Millisecond}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.run(ctx) }()
	defer func() { cancel(); <-done }()

	waitFor(t, "more failed attempts than warnEvery", func() bool { return failures.Load() > warnEvery })
	if note := e.statusNote(); !strings.Contains(note, "not listening on "+addr) || !strings.Contains(note, "address already in use") {
		t.Errorf("note while the port is held = %q, want it to name %s and the address in use", note, addr)
	}
	// The first failure and every warnEvery-th are warnings, the rest
	// debug lines.
	attempts := logs.FilterMessageSnippet("cannot listen").All()
	var warns int
	for _, l := range attempts {
		if l.Level == zap.WarnLevel {
			warns++
		}
	}
	if want := (len(attempts) + warnEvery - 1) / warnEvery; warns != want {
		t.Errorf("%d warnings for %d failed attempts, want %d", warns, len(attempts), want)
	}
	if attempts[0].Level != zap.WarnLevel || attempts[0].ContextMap()["address"] != addr {
		t.Errorf("first failed attempt logged as %v %v, want a warning naming %s", attempts[0].Level, attempts[0].ContextMap(), addr)
	}

	holder.Close()
	waitFor(t, "the endpoint to listen", func() bool { return logs.FilterMessage("metrics and health endpoint listening").Len() == 1 })
	if got := httpGet(t, "http://"+addr+"/healthz"); got != "ok" {
		t.Errorf("GET /healthz once the port is free = %q, want ok", got)
	}
	if note := e.statusNote(); note != "" {
		t.Errorf("note once listening = %q, want none", note)
	}
	took := logs.FilterMessageSnippet("took its address after failed attempts").All()
	if len(took) != 1 || took[0].ContextMap()["failed_attempts"].(int64) < 3 {
		t.Errorf("the line saying the address was taken late = %v, want one with at least 3 failed attempts", took)
	}
}

// Stopping while the port is still taken ends run at once.
func TestEndpointStopsWhileRetrying(t *testing.T) {
	holder, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	var failures atomic.Int64
	e := newEndpoint(holder.Addr().String(), http.NewServeMux(), zap.NewNop(), func() { failures.Add(1) })
	// A backoff longer than any test: run must not wait it out.
	e.retry = wait.Backoff{Duration: time.Hour, Steps: 1}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.run(ctx) }()
	waitFor(t, "the first failed attempt", func() bool { return failures.Load() == 1 })
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel while waiting to retry")
	}
}
