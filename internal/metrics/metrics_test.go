package metrics

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/startgate/startgate/internal/admission"
	"github.com/startgate/startgate/internal/prefetch"
	"github.com/startgate/startgate/internal/pressure"
)

func TestObserverCounts(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := New(reg)
	m.Admitted(admission.High, admission.AdmitGranted, 3*time.Millisecond)
	m.Admitted(admission.High, admission.AdmitGranted, 2*time.Second)
	m.Admitted(admission.Critical, admission.AdmitBypass, 0)
	m.Refused(admission.Low, "queue-full")
	m.Cancelled(admission.Background, time.Second)
	m.Released(admission.High, admission.ReleaseExpired, time.Minute)
	m.Released(admission.High, admission.ReleaseByHolder, time.Second)

	for _, tc := range []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"admitted high granted", m.admitted.WithLabelValues("high", "granted"), 2},
		{"admitted critical bypass", m.admitted.WithLabelValues("critical", "bypass"), 1},
		{"refused low queue-full", m.refused.WithLabelValues("low", "queue-full"), 1},
		{"cancelled background", m.cancelled.WithLabelValues("background"), 1},
		{"cancelled normal (pre-created zero)", m.cancelled.WithLabelValues("normal"), 0},
		{"released expired", m.released.WithLabelValues("expired"), 1},
		{"released released", m.released.WithLabelValues("released"), 1},
	} {
		if got := testutil.ToFloat64(tc.c); got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, got, tc.want)
		}
	}

	// The histogram: two high waits, 3ms (in the 5ms bucket) and 2s.
	want := `
# HELP startgate_wait_seconds Time from request to grant, by class.
# TYPE startgate_wait_seconds histogram
startgate_wait_seconds_bucket{class="high",le="0.001"} 0
startgate_wait_seconds_bucket{class="high",le="0.0025"} 0
startgate_wait_seconds_bucket{class="high",le="0.005"} 1
startgate_wait_seconds_bucket{class="high",le="0.01"} 1
startgate_wait_seconds_bucket{class="high",le="0.025"} 1
startgate_wait_seconds_bucket{class="high",le="0.05"} 1
startgate_wait_seconds_bucket{class="high",le="0.1"} 1
startgate_wait_seconds_bucket{class="high",le="0.25"} 1
startgate_wait_seconds_bucket{class="high",le="0.5"} 1
startgate_wait_seconds_bucket{class="high",le="1"} 1
startgate_wait_seconds_bucket{class="high",le="2.5"} 2
startgate_wait_seconds_bucket{class="high",le="5"} 2
startgate_wait_seconds_bucket{class="high",le="10"} 2
startgate_wait_seconds_bucket{class="high",le="20"} 2
startgate_wait_seconds_bucket{class="high",le="30"} 2
startgate_wait_seconds_bucket{class="high",le="60"} 2
startgate_wait_seconds_bucket{class="high",le="120"} 2
startgate_wait_seconds_bucket{class="high",le="+Inf"} 2
startgate_wait_seconds_sum{class="high"} 2.003
startgate_wait_seconds_count{class="high"} 2
`
	if err := testutil.CollectAndCompare(onlyClass{m.wait, "high"}, strings.NewReader(want), "startgate_wait_seconds"); err != nil {
		t.Errorf("wait histogram: %v", err)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n == 0 {
		t.Errorf("pedantic gather = %d series, %v", n, err)
	}
}

// onlyClass filters a histogram vec to one class's series.
type onlyClass struct {
	v     *prometheus.HistogramVec
	class string
}

func (o onlyClass) Describe(ch chan<- *prometheus.Desc) { o.v.Describe(ch) }
func (o onlyClass) Collect(ch chan<- prometheus.Metric) {
	o.v.WithLabelValues(o.class).(prometheus.Histogram).Collect(ch)
}

type fakeStatus admission.Status

func (f fakeStatus) Status() admission.Status { return admission.Status(f) }

func TestGateCollector(t *testing.T) {
	st := admission.Status{
		Limits:   admission.Limits{InFlight: 6, Rate: 12.5, Burst: 4},
		Tokens:   2.5,
		InFlight: 3,
		Queued:   5,
		Paused:   true,
		Bypassed: true,
		Pressure: pressure.Sample{Some: pressure.Values{0.25, 0.1, 0}, Present: [3]bool{true, true, false}},
	}
	st.QueuedByClass[admission.High] = 2
	st.QueuedByClass[admission.Low] = 3
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(newGateCollector(fakeStatus(st)))
	want := `
# HELP startgate_burst Token bucket depth.
# TYPE startgate_burst gauge
startgate_burst 4
# HELP startgate_bypassed 1 when an operator bypassed the gate (startgatectl bypass on): starts pass without a slot.
# TYPE startgate_bypassed gauge
startgate_bypassed 1
# HELP startgate_in_flight Start slots held.
# TYPE startgate_in_flight gauge
startgate_in_flight 3
# HELP startgate_in_flight_limit Most start slots held at once (critical and deadline admissions may exceed it).
# TYPE startgate_in_flight_limit gauge
startgate_in_flight_limit 6
# HELP startgate_paused 1 when granting is paused (pause or drain).
# TYPE startgate_paused gauge
startgate_paused 1
# HELP startgate_pressure_ratio Smoothed PSI some stall fraction (0..1), by resource; absent when not measured.
# TYPE startgate_pressure_ratio gauge
startgate_pressure_ratio{resource="cpu"} 0.25
startgate_pressure_ratio{resource="io"} 0.1
# HELP startgate_queue_length Requests waiting, by class.
# TYPE startgate_queue_length gauge
startgate_queue_length{class="background"} 0
startgate_queue_length{class="critical"} 0
startgate_queue_length{class="high"} 2
startgate_queue_length{class="low"} 3
startgate_queue_length{class="normal"} 0
# HELP startgate_rate_per_second Token refill rate, starts per second.
# TYPE startgate_rate_per_second gauge
startgate_rate_per_second 12.5
# HELP startgate_tokens Tokens in the bucket.
# TYPE startgate_tokens gauge
startgate_tokens 2.5
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Errorf("gate gauges: %v", err)
	}
}

// TestWithRealGate wires Metrics as a real gate's observer and checks
// that a grant and a release show up in both kinds of metric.
func TestWithRealGate(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	p := admission.DefaultPolicy()
	p.FixedInFlight, p.FixedRate = 2, 100
	g, err := admission.New(admission.Config{Clock: testingclock.NewFakeClock(time.Unix(1000, 0)), Policy: p, Observer: m, Cores: 1})
	if err != nil {
		t.Fatalf("admission.New: %v", err)
	}
	defer g.Close()
	m.WatchGate(g)
	l, err := g.Acquire(context.Background(), admission.Request{Class: admission.Normal})
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if got := testutil.ToFloat64(m.admitted.WithLabelValues("normal", "granted")); got != 1 {
		t.Errorf("admitted{normal,granted} = %v, want 1", got)
	}
	want := "# HELP startgate_in_flight Start slots held.\n# TYPE startgate_in_flight gauge\nstartgate_in_flight 1\n" +
		"# HELP startgate_in_flight_limit Most start slots held at once (critical and deadline admissions may exceed it).\n# TYPE startgate_in_flight_limit gauge\nstartgate_in_flight_limit 2\n"
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "startgate_in_flight", "startgate_in_flight_limit"); err != nil {
		t.Errorf("while held: %v", err)
	}
	l.Release()
	if got := testutil.ToFloat64(m.released.WithLabelValues("released")); got != 1 {
		t.Errorf("released{released} = %v, want 1", got)
	}
}

func TestPrefetchCounters(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	p := NewPrefetch(reg)
	p.PrefetchBytes(1000)
	p.PrefetchBytes(24)
	p.PrefetchDone("localhost/app:1", prefetch.Result{LayersFetched: 2})
	p.PrefetchFailed("localhost/app:1", errors.New("500"))
	p.PrefetchHit("localhost/app:1")
	p.PrefetchHit("localhost/app:1")
	for name, want := range map[string]float64{
		"startgate_prefetch_bytes_total":     1024,
		"startgate_prefetch_completed_total": 1,
		"startgate_prefetch_layers_total":    2,
		"startgate_prefetch_failures_total":  1,
		"startgate_prefetch_hits_total":      2,
	} {
		if got := testutil.ToFloat64(counterOf(t, reg, name)); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

// counterOf finds a registered metric by name, as a collector ToFloat64
// can read.
func counterOf(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: "copy"},
				func() float64 { return mf.GetMetric()[0].GetCounter().GetValue() })
		}
	}
	t.Fatalf("metric %s not registered", name)
	return nil
}
