package kubebench

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"sort"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/client-go/kubernetes"
)

// Kubelet's own pod start metrics (pkg/kubelet/metrics): the SLI one
// excludes image pulls and init containers, the total one does not; both
// run from the pod's creation as the kubelet sees it to its containers
// running (not to Ready).
const (
	metricSLI   = "kubelet_pod_start_sli_duration_seconds"
	metricTotal = "kubelet_pod_start_total_duration_seconds"
)

// histogram is a cumulative Prometheus histogram: upper bounds ascending,
// counts cumulative.
type histogram struct {
	Bounds []float64
	Counts []uint64
	Count  uint64
	Sum    float64
}

// sub is h minus an earlier reading of the same histogram; a kubelet
// restarted in between (reset counters) makes the earlier reading zero.
func (h histogram) sub(before histogram) histogram {
	if before.Count > h.Count || len(before.Counts) != len(h.Counts) {
		return h
	}
	out := histogram{Bounds: h.Bounds, Counts: make([]uint64, len(h.Counts)), Count: h.Count - before.Count, Sum: h.Sum - before.Sum}
	for i := range h.Counts {
		out.Counts[i] = h.Counts[i] - before.Counts[i]
	}
	return out
}

// quantile interpolates linearly within the bucket holding rank q·Count,
// as Prometheus's histogram_quantile does; 0 with no observations.
func (h histogram) quantile(q float64) time.Duration {
	if h.Count == 0 {
		return 0
	}
	rank := q * float64(h.Count)
	lower, prev := 0.0, uint64(0)
	for i, b := range h.Bounds {
		c := h.Counts[i]
		if float64(c) >= rank {
			if math.IsInf(b, 1) {
				return seconds(lower)
			}
			in := float64(c - prev)
			if in == 0 {
				return seconds(b)
			}
			return seconds(lower + (b-lower)*(rank-float64(prev))/in)
		}
		lower, prev = b, c
	}
	return seconds(lower)
}

func (h histogram) mean() time.Duration {
	if h.Count == 0 {
		return 0
	}
	return seconds(h.Sum / float64(h.Count))
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// kubeletStarts reads the kubelet's two pod start histograms through the
// API server's node proxy (the kubelet's port wants a client certificate
// the API server has).
func kubeletStarts(ctx context.Context, client kubernetes.Interface, node string) (sli, total histogram, err error) {
	raw, err := client.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes", node, "proxy", "metrics").DoRaw(ctx)
	if err != nil {
		return sli, total, fmt.Errorf("kubebench: kubelet metrics: %w", err)
	}
	fams, err := parseMetrics(raw)
	if err != nil {
		return sli, total, err
	}
	return fromFamily(fams[metricSLI]), fromFamily(fams[metricTotal]), nil
}

func parseMetrics(raw []byte) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("kubebench: kubelet metrics: %w", err)
	}
	return fams, nil
}

// fromFamily sums a histogram family's series (the SLI one has none
// labelled; this keeps a labelled one whole).
func fromFamily(f *dto.MetricFamily) histogram {
	var h histogram
	if f == nil {
		return h
	}
	byBound := map[float64]uint64{}
	for _, m := range f.GetMetric() {
		hm := m.GetHistogram()
		if hm == nil {
			continue
		}
		h.Count += hm.GetSampleCount()
		h.Sum += hm.GetSampleSum()
		for _, b := range hm.GetBucket() {
			byBound[b.GetUpperBound()] += b.GetCumulativeCount()
		}
	}
	for b := range byBound {
		h.Bounds = append(h.Bounds, b)
	}
	sort.Float64s(h.Bounds)
	if n := len(h.Bounds); n == 0 || !math.IsInf(h.Bounds[n-1], 1) {
		h.Bounds = append(h.Bounds, math.Inf(1))
		byBound[math.Inf(1)] = h.Count
	}
	for _, b := range h.Bounds {
		h.Counts = append(h.Counts, byBound[b])
	}
	return h
}
