// Package metrics exports the gate to Prometheus.
//
// Two kinds of figure, two mechanisms. Outcomes (admitted, refused,
// cancelled, released, wait times; CRI calls forwarded and gated calls
// passed without a slot) are events: Metrics implements
// admission.Observer and criproxy.Observer and counts them as they
// happen, so no outcome is lost between scrapes. Levels (queue length, in
// flight, limits, tokens, pressure, paused, bypassed) are state: a
// collector reads one gate.Status() snapshot per scrape, so every level in
// a scrape is from the same instant and nothing polls the gate between
// scrapes.
//
// Every labelled series an alert or a dashboard panel reads is created
// at zero when the collectors are registered (each class with each
// admit, refuse and release reason, each gated method with each
// fail-open reason and its gate-wait histogram), so that a rule such as
// "waiters and nothing admitted for 5 minutes" fires on a daemon that
// has just started; TestFreshRegistryHasEverySeriesTheRulesRead reads
// monitoring/prometheus-rules.yaml and holds every rule to it.
//
// Endpoint counts the failed attempts to listen on metrics.listen (the
// daemon retries with a backoff), readable once the listener is up.
//
// The admission Observer is called with the gate's lock held; its methods
// only touch client_golang counters and histograms, which are lock-free
// atomics once the labelled child is resolved. The criproxy Observer is
// called on every forwarded CRI call, outside any lock; its method label
// is bounded (criMethod) because the proxy forwards whatever method a
// caller names.
package metrics
