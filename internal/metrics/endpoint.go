package metrics

import "github.com/prometheus/client_golang/prometheus"

// Endpoint counts what happens to the HTTP listener that serves
// /metrics itself (metrics.listen). While it cannot listen nothing of
// this is scraped, so what it says is history: the count read once the
// listener is up tells that it came up late, and how many tries it took.
// The daemon's log says the same as it happens, and `systemctl status`
// shows the listener retrying.
type Endpoint struct {
	listenFailures prometheus.Counter
}

// NewEndpoint registers the listener's metrics with reg.
func NewEndpoint(reg prometheus.Registerer) *Endpoint {
	e := &Endpoint{
		listenFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "metrics_listen_failures_total",
			Help: "Attempts to listen on metrics.listen that failed (the port taken by another process, the " +
				"address not on the node yet); each is retried with a backoff, and the CRI socket never waits for it.",
		}),
	}
	reg.MustRegister(e.listenFailures)
	return e
}

// ListenFailed counts one failed attempt.
func (e *Endpoint) ListenFailed() { e.listenFailures.Inc() }
