package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/startgate/startgate/internal/prefetch"
)

// Prefetch counts what the prefetch manager does; it is the Manager's
// Observer. Its methods are cheap and never block.
type Prefetch struct {
	bytes     prometheus.Counter
	completed prometheus.Counter
	layers    prometheus.Counter
	failures  prometheus.Counter
	hits      prometheus.Counter
}

// NewPrefetch registers the prefetch metrics with reg.
func NewPrefetch(reg prometheus.Registerer) *Prefetch {
	p := &Prefetch{
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "prefetch", Name: "bytes_total",
			Help: "Bytes prefetches read from registries, counted as they arrive.",
		}),
		completed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "prefetch", Name: "completed_total",
			Help: "Prefetches that ended with the new digest complete in containerd.",
		}),
		layers: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "prefetch", Name: "layers_total",
			Help: "Layers prefetches moved (layers containerd had already are not counted).",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "prefetch", Name: "failures_total",
			Help: "Resolves and fetches of watched tags that failed (each is retried with backoff).",
		}),
		hits: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "prefetch", Name: "hits_total",
			Help: "Image pulls served from prefetched content.",
		}),
	}
	reg.MustRegister(p.bytes, p.completed, p.layers, p.failures, p.hits)
	return p
}

var _ prefetch.Observer = (*Prefetch)(nil)

// PrefetchBytes counts n bytes read from a registry.
func (p *Prefetch) PrefetchBytes(n int64) { p.bytes.Add(float64(n)) }

// PrefetchDone counts a fetch that ended well and the layers it moved.
func (p *Prefetch) PrefetchDone(_ string, r prefetch.Result) {
	p.completed.Inc()
	p.layers.Add(float64(r.LayersFetched))
}

// PrefetchFailed counts a failed resolve or fetch.
func (p *Prefetch) PrefetchFailed(string, error) { p.failures.Inc() }

// PrefetchHit counts a pull served from prefetched content.
func (p *Prefetch) PrefetchHit(string) { p.hits.Inc() }
