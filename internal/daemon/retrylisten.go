package daemon

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/util/wait"
)

// retryListener takes a TCP address for a server that must never be why
// the daemon does not serve kubelet: the metrics and health endpoint,
// prefetch's webhook listener. An address it cannot take (another
// process holds the port; the node's address is not up yet) is logged
// and tried again with a backoff until it can, for as long as the daemon
// runs, and the CRI socket and READY=1 never wait for it. Its owner
// listens again the same way when its server stops serving.
type retryListener struct {
	addr string
	// what names the server in the log: "metrics and health endpoint".
	what string
	log  *zap.Logger
	// retry spaces the attempts.
	retry wait.Backoff
	// failed, when set, counts a failed attempt.
	failed func()

	mu struct {
		sync.Mutex
		// err is the last failure while not listening; nil once
		// listening.
		err error
	}
}

// listenRetry starts at a second, so that a port freed by a process
// restarting beside startgated is taken at once, and backs off to half a
// minute, well within a scrape or two: the attempts cost nothing, and the
// server is back soon after its port is free.
var listenRetry = wait.Backoff{
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

func newRetryListener(addr, what string, log *zap.Logger, failed func()) *retryListener {
	return &retryListener{addr: addr, what: what, log: log, retry: listenRetry, failed: failed}
}

// listen takes l.addr, trying again on l.retry until it can or ctx ends
// (then it returns ctx's error).
func (l *retryListener) listen(ctx context.Context) (net.Listener, error) {
	var lis net.Listener
	failures := 0
	var lc net.ListenConfig
	err := l.retry.DelayFunc().Until(ctx, true, true, func(ctx context.Context) (bool, error) {
		got, err := lc.Listen(ctx, "tcp", l.addr)
		if err != nil {
			failures++
			l.setErr(err)
			if l.failed != nil {
				l.failed()
			}
			lvl := zap.DebugLevel
			if failures%warnEvery == 1 {
				lvl = zap.WarnLevel
			}
			l.log.Log(lvl, l.what+" cannot listen; trying again with a backoff (the CRI socket does not wait for it)",
				zap.String("address", l.addr), zap.Int("attempts", failures), zap.Error(err))
			return false, nil
		}
		lis = got
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	l.setErr(nil)
	if failures > 0 {
		l.log.Info(l.what+" took its address after failed attempts",
			zap.String("address", l.addr), zap.Int("failed_attempts", failures))
	}
	l.log.Info(l.what+" listening", zap.String("address", lis.Addr().String()))
	return lis, nil
}

func (l *retryListener) setErr(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mu.err = err
}

// note is what `systemctl status` says of the listener, naming it by
// key: "" while it listens (or has not tried yet).
func (l *retryListener) note(key string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.err == nil {
		return ""
	}
	var opErr *net.OpError
	reason := l.mu.err
	if errors.As(l.mu.err, &opErr) && opErr.Err != nil {
		// "bind: address already in use", not the whole "listen tcp
		// 127.0.0.1:10366: ..." that repeats the address.
		reason = opErr.Err
	}
	return fmt.Sprintf("%s: not listening on %s (%v), retrying", key, l.addr, reason)
}
