package daemon

import (
	"context"
	"net/http"
	"time"

	"go.uber.org/zap"
)

// endpoint is the HTTP server on metrics.listen: /metrics and the
// health checks (health.go). It is never why the daemon does not serve
// kubelet: it listens in the background through a retryListener, after
// the CRI socket is served and READY=1 sent, and a server that stops
// serving is listened for again.
type endpoint struct {
	*retryListener
	handler http.Handler
}

func newEndpoint(addr string, h http.Handler, log *zap.Logger, failed func()) *endpoint {
	return &endpoint{retryListener: newRetryListener(addr, "metrics and health endpoint", log.Named("metrics"), failed), handler: h}
}

// run listens and serves until ctx ends. It returns nothing: no failure
// of the endpoint ends the daemon.
func (e *endpoint) run(ctx context.Context) {
	for {
		lis, err := e.listen(ctx)
		if err != nil {
			return // ctx ended
		}
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

// statusNote is the endpoint's part of STATUS=.
func (e *endpoint) statusNote() string { return e.note("metrics") }
