// Package metrics exports the gate to Prometheus.
//
// Two kinds of figure, two mechanisms. Outcomes (admitted, refused,
// cancelled, released, wait times) are events: Metrics implements
// admission.Observer and counts them as they happen, so no outcome is lost
// between scrapes. Levels (queue length, in flight, limits, tokens,
// pressure, paused) are state: a collector reads one gate.Status()
// snapshot per scrape, so every level in a scrape is from the same
// instant and nothing polls the gate between scrapes.
//
// The Observer is called with the gate's lock held; its methods only
// touch pre-resolved client_golang children, which are lock-free atomics.
package metrics
