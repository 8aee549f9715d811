package bench

import (
	"fmt"
	"html"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// The chart: the distribution of time to ready as a CDF, one step line per
// mode (every round's pods pooled) and the ideal bound dashed. A pod that
// never became ready is in the denominator but never on the line, so a
// mode with failures tops out below 100%.
//
// Hand-written SVG rather than a plotting library (gonum.org/v1/plot is
// on the module proxy): a CDF is a few polylines, axes and a legend, and
// the library would bring fonts, PDF and LaTeX modules to draw them. The
// SVG has no script or external reference; tests read it as XML.

// Chart geometry, in SVG user units.
const (
	chartW, chartH = 860, 480
	plotL, plotT   = 70, 50   // plot area's left and top
	plotR, plotB   = 650, 420 // its right and bottom; the legend is right of it
)

// palette: the first modes in DefaultModes order get distinct hues (direct
// red, fixed-K blues and orange, startgate green and purple).
var palette = []string{"#d62728", "#1f77b4", "#ff7f0e", "#17becf", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"}

// CDFSeries is one line of a chart: a name, the ready times (sorted) and
// the total number of pods, failed ones included.
type CDFSeries struct {
	Name   string
	Ready  []time.Duration
	Total  int
	Dashed bool
}

// WriteChart writes r's chart as SVG.
func WriteChart(w io.Writer, r *Result) error {
	var series []CDFSeries
	for _, m := range r.Modes {
		s := CDFSeries{Name: m.Mode}
		for _, b := range r.Bursts {
			if b.Mode != m.Mode {
				continue
			}
			for _, p := range b.Pods {
				s.Total++
				if !p.Failed() {
					s.Ready = append(s.Ready, p.Ready)
				}
			}
		}
		slices.Sort(s.Ready)
		series = append(series, s)
	}
	if r.Calibration.Single > 0 && r.Pods > 0 && r.Cores > 0 {
		s := CDFSeries{Name: fmt.Sprintf("ideal (FIFO, %d at a time)", r.Cores), Total: r.Pods, Dashed: true}
		for i := range r.Pods {
			s.Ready = append(s.Ready, time.Duration(i/r.Cores+1)*r.Calibration.Single)
		}
		series = append(series, s)
	}
	title := fmt.Sprintf("Time to ready: %d pods at once, %s workload, %s patch pulled", r.Pods, orUnknown(r.Workload), mib(int64(r.PatchSize)))
	_, err := io.WriteString(w, RenderCDF(title, "time to ready (s), from the burst's start", series))
	return err
}

// RenderCDF draws series as step lines of the fraction of pods ready
// against time, titled, with xlabel under the time axis.
func RenderCDF(title, xlabel string, series []CDFSeries) string {
	var xmax time.Duration
	for _, s := range series {
		if n := len(s.Ready); n > 0 {
			xmax = max(xmax, s.Ready[n-1])
		}
	}
	step := niceStep(xmax.Seconds() / 8)
	top := math.Max(step, math.Ceil(xmax.Seconds()/step)*step)
	x := func(sec float64) float64 { return plotL + sec/top*(plotR-plotL) }
	y := func(frac float64) float64 { return plotB - frac*(plotB-plotT) }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		chartW, chartH, chartW, chartH)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", chartW, chartH)
	fmt.Fprintf(&b, `<text x="%d" y="25" font-size="15">%s</text>`+"\n", plotL, html.EscapeString(title))
	// Grid and ticks.
	for i := 0; i <= 4; i++ {
		f := float64(i) / 4
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", plotL, y(f), plotR, y(f))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%d%%</text>`+"\n", plotL-6, y(f)+4, i*25)
	}
	for t := 0.0; t <= top+step/2; t += step {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", x(t), plotT, x(t), plotB)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x(t), plotB+16, trimFloat(t))
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>`+"\n", plotL, plotT, plotR-plotL, plotB-plotT)
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", (plotL+plotR)/2, plotB+38, html.EscapeString(xlabel))
	fmt.Fprintf(&b, `<text x="20" y="%d" text-anchor="middle" transform="rotate(-90 20 %d)">pods ready</text>`+"\n", (plotT+plotB)/2, (plotT+plotB)/2)

	for i, s := range series {
		color := palette[i%len(palette)]
		if s.Dashed {
			color = "#555"
		}
		dash := ""
		if s.Dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		// A step line: flat until a pod is ready, then up by one pod.
		pts := []string{fmt.Sprintf("%.1f,%.1f", x(0), y(0))}
		for j, d := range s.Ready {
			sec := d.Seconds()
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(sec), y(float64(j)/float64(s.Total))),
				fmt.Sprintf("%.1f,%.1f", x(sec), y(float64(j+1)/float64(s.Total))))
		}
		fmt.Fprintf(&b, `<polyline data-mode="%s" fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`+"\n",
			html.EscapeString(s.Name), color, dash, strings.Join(pts, " "))
		ly := plotT + 10 + i*22
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>`+"\n", plotR+15, ly, plotR+45, ly, color, dash)
		label := s.Name
		if failed := s.Total - len(s.Ready); failed > 0 {
			label += fmt.Sprintf(" (%d failed)", failed)
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", plotR+52, ly+4, html.EscapeString(label))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// niceStep rounds raw up to 1, 2 or 5 times a power of ten (at least
// 0.1 s, so an empty chart still has an axis).
func niceStep(raw float64) float64 {
	if raw <= 0.1 {
		return 0.1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func trimFloat(f float64) string {
	s := fmt.Sprintf("%.1f", f)
	return strings.TrimSuffix(s, ".0")
}
