package daemon

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/util/wait"
)

// endpoint is the HTTP listener on metrics.listen: /metrics and the
// health checks. It is never why the daemon does not serve kubelet: it
// listens in the background, after the CRI socket is served and READY=1
// sent, and an address it cannot take (another process holds the port;
// the node's address is not up yet) is logged and tried again with a
// backoff until it can, for as long as the daemon runs. A server that
// stops serving is listened for again the same way.
type endpoint struct {
	addr    string
	handler http.Handler
	log     *zap.Logger
	// retry spaces the attempts to listen.
	retry wait.Backoff
	// failed, when set, counts a failed attempt
	// (startgate_metrics_listen_failures_total).
	failed func()

	mu struct {
		sync.Mutex
		// err is the last failure while not listening; nil once
		// listening.
		err error
	}
}

// endpointRetry starts at a second, so that a port freed by a process
// restarting beside startgated is taken at once, and backs off to half a
// minute, well within a scrape or two: the attempts cost nothing, and the
// endpoint is back soon after its port is free.
var endpointRetry = wait.Backoff{
	Duration: time.Second,
	Factor:   2,
	Jitter:   0.1,
	// Past the cap the delay stays at Cap (wait's Steps run out there);
	// Steps only has to be large enough to get there.
	Steps: math.MaxInt32,
	Cap:   30 * time.Second,
}

// warnEvery: of the failed attempts in a row, the first and every
// warnEvery-th after it are warnings, the others debug lines, so a port
// held for days leaves a line every few minutes, not every half minute.
const warnEvery = 10

func newEndpoint(addr string, h http.Handler, log *zap.Logger, failed func()) *endpoint {
	return &endpoint{addr: addr, handler: h, log: log.Named("metrics"), retry: endpointRetry, failed: failed}
}

// run listens and serves until ctx ends. It returns nothing: no failure
// of the endpoint ends the daemon.
func (e *endpoint) run(ctx context.Context) {
	for {
		lis, err := e.listen(ctx)
		if err != nil {
			return // ctx ended
		}
		e.log.Info("metrics and health endpoint listening", zap.String("address", lis.Addr().String()),
			zap.Strings("paths", []string{"/metrics", "/healthz", "/livez", "/readyz"}))
		srv := &http.Server{Handler: e.handler, ReadHeaderTimeout: 10 * time.Second}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(lis) }()
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			if err := srv.Shutdown(sctx); err != nil {
				_ = srv.Close()
			}
			cancel()
			<-served
			return
		case err := <-served:
			e.setErr(err)
			e.log.Error("metrics and health endpoint stopped serving; listening again", zap.String("address", e.addr), zap.Error(err))
		}
	}
}

// listen takes e.addr, trying again on e.retry until it can or ctx ends.
func (e *endpoint) listen(ctx context.Context) (net.Listener, error) {
	var lis net.Listener
	failures := 0
	var lc net.ListenConfig
	err := e.retry.DelayFunc().Until(ctx, true, true, func(ctx context.Context) (bool, error) {
		l, err := lc.Listen(ctx, "tcp", e.addr)
		if err != nil {
			failures++
			e.setErr(err)
			if e.failed != nil {
				e.failed()
			}
			lvl := zap.DebugLevel
			if failures%warnEvery == 1 {
				lvl = zap.WarnLevel
			}
			e.log.Log(lvl, "metrics and health endpoint cannot listen; trying again with a backoff (the CRI socket does not wait for it)",
				zap.String("address", e.addr), zap.Int("attempts", failures), zap.Error(err))
			return false, nil
		}
		lis = l
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	e.setErr(nil)
	if failures > 0 {
		e.log.Info("metrics and health endpoint took its address after failed attempts",
			zap.String("address", e.addr), zap.Int("failed_attempts", failures))
	}
	return lis, nil
}

func (e *endpoint) setErr(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.mu.err = err
}

// note is what `systemctl status` says of the endpoint: "" while it
// listens (or has not tried yet).
func (e *endpoint) note() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.mu.err == nil {
		return ""
	}
	var opErr *net.OpError
	reason := e.mu.err
	if errors.As(e.mu.err, &opErr) && opErr.Err != nil {
		// "bind: address already in use", not the whole "listen tcp
		// 127.0.0.1:10366: ..." that repeats the address.
		reason = opErr.Err
	}
	return fmt.Sprintf("metrics: not listening on %s (%v), retrying", e.addr, reason)
}
