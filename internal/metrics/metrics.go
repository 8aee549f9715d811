package metrics

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/startgate/startgate/internal/admission"
	"github.com/startgate/startgate/internal/criproxy"
	"github.com/startgate/startgate/internal/pressure"
)

const namespace = "startgate"

// Metrics counts admission outcomes. Create it with New, pass it as the
// gate's Observer, then call WatchGate once the gate exists.
type Metrics struct {
	reg        prometheus.Registerer
	admitted   *prometheus.CounterVec
	refused    *prometheus.CounterVec
	cancelled  *prometheus.CounterVec
	released   *prometheus.CounterVec
	wait       *prometheus.HistogramVec
	criCalls   *prometheus.CounterVec
	criTime    *prometheus.HistogramVec
	failOpen   *prometheus.CounterVec
	podGone    *prometheus.CounterVec
	pullShared prometheus.Counter
	// waitBy holds the histogram child per class, resolved once: the
	// observer runs under the gate's lock.
	waitBy []prometheus.Observer
}

var (
	_ admission.Observer = (*Metrics)(nil)
	_ criproxy.Observer  = (*Metrics)(nil)
)

var classNames = func() []string {
	out := make([]string, len(admission.Classes))
	for i, c := range admission.Classes {
		out[i] = c.String()
	}
	return out
}()

// WaitBuckets run from 1ms to 120s, roughly doubling: starts wait from
// nothing (capacity free) to minutes (a drained node).
var WaitBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120}

// CRIBuckets are kubelet's for its runtime operations
// (kubelet_runtime_operations_duration_seconds: 5 ms to about 12 minutes,
// times 2.5), so the proxy's figures and kubelet's line up bucket for
// bucket.
var CRIBuckets = prometheus.ExponentialBuckets(0.005, 2.5, 14)

// New registers the outcome metrics with reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		reg: reg,
		admitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "admitted_total",
			Help: "Start slots granted, by class and reason (granted, bypass, deadline).",
		}, []string{"class", "reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "refused_total",
			Help: "Requests refused, by class and reason (queue-full, deadline, shutdown).",
		}, []string{"class", "reason"}),
		cancelled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "cancelled_total",
			Help: "Requests whose caller gave up while queued, by class.",
		}, []string{"class"}),
		released: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "released_total",
			Help: "Leases ended, by reason (released, expired, shutdown).",
		}, []string{"reason"}),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "wait_seconds",
			Help:    "Time from request to grant, by class.",
			Buckets: WaitBuckets,
		}, []string{"class"}),
		criCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "cri_calls_total",
			Help: "CRI calls the proxy forwarded to containerd, by gRPC method and containerd's status code.",
		}, []string{"method", "code"}),
		criTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "cri_call_duration_seconds",
			Help: "Time of the CRI calls the proxy handles, by gRPC method and phase: gate (waiting in admission, " +
				"gated calls only) and containerd (the forwarded call; unary calls only). Their sum per method is " +
				"what the proxy adds to kubelet's call and what containerd takes.",
			Buckets: CRIBuckets,
		}, []string{"method", "phase"}),
		failOpen: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "cri_fail_open_total",
			Help: "Gated CRI calls passed to containerd without a start slot, by method and reason (bypass, gate-stuck, gate-error, gate-panic).",
		}, []string{"method", "reason"}),
		podGone: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "cri_pod_gone_total",
			Help: "Gated CRI calls not forwarded because the API server says their pod is gone, by method and reason (deleted, terminating, finished).",
		}, []string{"method", "reason"}),
		pullShared: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "cri_pulls_shared_total",
			Help: "PullImage calls answered with a recent pull's resolution of the same reference, without asking the registry (cri.pulls.share_window).",
		}),
	}
	reg.MustRegister(m.admitted, m.refused, m.cancelled, m.released, m.wait, m.criCalls, m.criTime, m.failOpen, m.podGone, m.pullShared)
	m.waitBy = make([]prometheus.Observer, len(classNames))
	// Every series an alert or a panel reads exists from the start, at
	// zero: increase() and rate() need a series to compare against, and
	// an alert such as StartgateStuckWithWaiters ("waiters, and nothing
	// admitted for 5 minutes") must fire on a daemon that has admitted
	// nothing since it started, which a series born at the first
	// admission would hide. TestFreshRegistryHasEverySeriesTheRulesRead
	// holds the rules to it.
	for i, name := range classNames {
		m.waitBy[i] = m.wait.WithLabelValues(name)
		m.cancelled.WithLabelValues(name)
		for _, reason := range admitReasons {
			m.admitted.WithLabelValues(name, string(reason))
		}
		for _, reason := range refuseReasons {
			m.refused.WithLabelValues(name, reason)
		}
	}
	for _, reason := range releaseReasons {
		m.released.WithLabelValues(string(reason))
	}
	for _, method := range gatedMethods {
		for _, reason := range failOpenReasons {
			m.failOpen.WithLabelValues(method, reason)
		}
		for _, reason := range podGoneReasons {
			m.podGone.WithLabelValues(method, reason)
		}
		m.criTime.WithLabelValues(method, "gate")
	}
	return m
}

var admitReasons = []admission.AdmitReason{admission.AdmitGranted, admission.AdmitBypass, admission.AdmitDeadline, admission.AdmitRestored}

// refuseReasons are the reasons admission.Observer.Refused is called with.
var refuseReasons = []string{"queue-full", "deadline", "shutdown"}

var releaseReasons = []admission.ReleaseReason{admission.ReleaseByHolder, admission.ReleaseExpired, admission.ReleaseShutdown}

// gatedMethods are the CRI calls that ask the gate for a slot (criproxy's
// start family; StartContainer runs on the slot its CreateContainer took).
var gatedMethods = []string{
	"/runtime.v1.RuntimeService/RunPodSandbox",
	"/runtime.v1.RuntimeService/CreateContainer",
}

var failOpenReasons = []string{"bypass", "gate-stuck", "gate-error", "gate-panic"}

var podGoneReasons = []string{"deleted", "terminating", "finished"}

// criMethod bounds the method label. The proxy forwards any method a
// caller names (a newer kubelet's included), so the label keeps names in
// the CRI's two services and folds anything else into "other".
func criMethod(method string) string {
	if strings.HasPrefix(method, "/runtime.v1.RuntimeService/") || strings.HasPrefix(method, "/runtime.v1.ImageService/") {
		return method
	}
	return "other"
}

// Forwarded implements criproxy.Observer.
func (m *Metrics) Forwarded(method, code string, took time.Duration) {
	method = criMethod(method)
	m.criCalls.WithLabelValues(method, code).Inc()
	if took >= 0 {
		m.criTime.WithLabelValues(method, "containerd").Observe(took.Seconds())
	}
}

// GateWait implements criproxy.Observer.
func (m *Metrics) GateWait(method string, took time.Duration) {
	m.criTime.WithLabelValues(criMethod(method), "gate").Observe(took.Seconds())
}

// PodGone implements criproxy.Observer.
func (m *Metrics) PodGone(method, reason string) {
	m.podGone.WithLabelValues(criMethod(method), reason).Inc()
}

// PullShared implements criproxy.Observer.
func (m *Metrics) PullShared(string) { m.pullShared.Inc() }

// FailOpen implements criproxy.Observer.
func (m *Metrics) FailOpen(method, reason string) {
	m.failOpen.WithLabelValues(criMethod(method), reason).Inc()
}

// Admitted implements admission.Observer.
func (m *Metrics) Admitted(c admission.Class, reason admission.AdmitReason, waited time.Duration) {
	m.admitted.WithLabelValues(c.String(), string(reason)).Inc()
	if c.Valid() && int(c) < len(m.waitBy) {
		m.waitBy[c].Observe(waited.Seconds())
	}
}

// Refused implements admission.Observer.
func (m *Metrics) Refused(c admission.Class, reason string) {
	m.refused.WithLabelValues(c.String(), reason).Inc()
}

// Cancelled implements admission.Observer.
func (m *Metrics) Cancelled(c admission.Class, _ time.Duration) {
	m.cancelled.WithLabelValues(c.String()).Inc()
}

// Released implements admission.Observer.
func (m *Metrics) Released(_ admission.Class, reason admission.ReleaseReason, _ time.Duration) {
	m.released.WithLabelValues(string(reason)).Inc()
}

// statusSource is what the level collector needs of a gate.
type statusSource interface {
	Status() admission.Status
}

var _ statusSource = (*admission.Gate)(nil)

// WatchGate registers the level gauges, read from g at scrape time.
func (m *Metrics) WatchGate(g *admission.Gate) {
	m.reg.MustRegister(newGateCollector(g))
}

type gateCollector struct {
	src                                         statusSource
	queue, inFlight, limit, rate, burst, tokens *prometheus.Desc
	pressure, paused, bypassed                  *prometheus.Desc
}

func newGateCollector(src statusSource) *gateCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
	}
	return &gateCollector{
		src:      src,
		queue:    d("queue_length", "Requests waiting, by class.", "class"),
		inFlight: d("in_flight", "Start slots held."),
		limit:    d("in_flight_limit", "Most start slots held at once (critical and deadline admissions may exceed it)."),
		rate:     d("rate_per_second", "Token refill rate, starts per second."),
		burst:    d("burst", "Token bucket depth."),
		tokens:   d("tokens", "Tokens in the bucket."),
		pressure: d("pressure_ratio", "Smoothed PSI some stall fraction (0..1), by resource; absent when not measured.", "resource"),
		paused:   d("paused", "1 when granting is paused (pause or drain)."),
		bypassed: d("bypassed", "1 when an operator bypassed the gate (startgatectl bypass on): starts pass without a slot."),
	}
}

func (c *gateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.queue, c.inFlight, c.limit, c.rate, c.burst, c.tokens, c.pressure, c.paused, c.bypassed} {
		ch <- d
	}
}

func (c *gateCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Status()
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for i, name := range classNames {
		g(c.queue, float64(st.QueuedByClass[admission.Classes[i]]), name)
	}
	g(c.inFlight, float64(st.InFlight))
	g(c.limit, float64(st.Limits.InFlight))
	g(c.rate, st.Limits.Rate)
	g(c.burst, float64(st.Limits.Burst))
	g(c.tokens, st.Tokens)
	for _, r := range pressure.Resources {
		if st.Pressure.Present[r] {
			g(c.pressure, st.Pressure.Some[r], r.String())
		}
	}
	paused := 0.0
	if st.Paused {
		paused = 1
	}
	g(c.paused, paused)
	bypassed := 0.0
	if st.Bypassed {
		bypassed = 1
	}
	g(c.bypassed, bypassed)
}
