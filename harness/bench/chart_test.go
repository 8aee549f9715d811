package bench

import (
	"encoding/xml"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"
)

// svgLine is a polyline of the chart, as XML reads it.
type svgLine struct {
	mode   string
	dashed bool
	points [][2]float64
}

// parseSVG decodes the chart as XML (so it is well-formed) and returns
// its polylines and its text.
func parseSVG(t *testing.T, svg string) ([]svgLine, []string) {
	t.Helper()
	dec := xml.NewDecoder(strings.NewReader(svg))
	var lines []svgLine
	var texts []string
	inText := false
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("chart is not well-formed XML: %v\n%s", err, svg)
		}
		switch e := tok.(type) {
		case xml.StartElement:
			inText = e.Name.Local == "text"
			if e.Name.Local != "polyline" {
				continue
			}
			var l svgLine
			for _, a := range e.Attr {
				switch a.Name.Local {
				case "data-mode":
					l.mode = a.Value
				case "stroke-dasharray":
					l.dashed = true
				case "points":
					for _, p := range strings.Fields(a.Value) {
						xs, ys, _ := strings.Cut(p, ",")
						x, err1 := strconv.ParseFloat(xs, 64)
						y, err2 := strconv.ParseFloat(ys, 64)
						if err1 != nil || err2 != nil {
							t.Fatalf("polyline %s: bad point %q", l.mode, p)
						}
						l.points = append(l.points, [2]float64{x, y})
					}
				}
			}
			lines = append(lines, l)
		case xml.CharData:
			if inText {
				texts = append(texts, string(e))
			}
		case xml.EndElement:
			inText = false
		}
	}
	return lines, texts
}

func TestWriteChart(t *testing.T) {
	r := &Result{
		Workload: WorkCPU, PatchSize: 20 << 20, Pods: 4, Cores: 2,
		Calibration: Calibration{Single: time.Second},
		Modes:       []ModeResult{{Mode: "direct"}, {Mode: "startgate-prefetch"}},
		Bursts: []Burst{
			{Mode: "direct", Pods: podsReady(4, 3, 2, 1)},
			{Mode: "startgate-prefetch", Pods: append(podsReady(1, 2, 3), Pod{FailReason: "deadline"})},
		},
	}
	var b strings.Builder
	if err := WriteChart(&b, r); err != nil {
		t.Fatal(err)
	}
	lines, texts := parseSVG(t, b.String())
	if len(lines) != 3 {
		t.Fatalf("got %d lines, want 3 (two modes and the ideal): %+v", len(lines), lines)
	}
	for i, want := range []string{"direct", "startgate-prefetch", "ideal (FIFO, 2 at a time)"} {
		if lines[i].mode != want || lines[i].dashed != (i == 2) {
			t.Errorf("line %d: got %q dashed %v, want %q dashed %v", i, lines[i].mode, lines[i].dashed, want, i == 2)
		}
	}
	// The x axis ends at the slowest pod, 4 s; the y axis spans the plot.
	x := func(sec float64) float64 { return plotL + sec/4*(plotR-plotL) }
	y := func(frac float64) float64 { return plotB - frac*(plotB-plotT) }
	near := func(a, b float64) bool { return a-b < 0.1 && b-a < 0.1 }
	for _, tc := range []struct {
		line      int
		last      [2]float64
		numPoints int
	}{
		// From the origin, two points per ready pod; direct (sorted)
		// ends at 4 s and 100%.
		{0, [2]float64{x(4), y(1)}, 9},
		// One of four failed: it tops out at 75%, at 3 s.
		{1, [2]float64{x(3), y(0.75)}, 7},
		// Ideal: 1 s, 1 s, 2 s, 2 s.
		{2, [2]float64{x(2), y(1)}, 9},
	} {
		l := lines[tc.line]
		if len(l.points) != tc.numPoints {
			t.Errorf("%s: got %d points, want %d: %v", l.mode, len(l.points), tc.numPoints, l.points)
			continue
		}
		if p := l.points[0]; !near(p[0], x(0)) || !near(p[1], y(0)) {
			t.Errorf("%s: got first point %v, want the origin %v", l.mode, p, [2]float64{x(0), y(0)})
		}
		if p := l.points[len(l.points)-1]; !near(p[0], tc.last[0]) || !near(p[1], tc.last[1]) {
			t.Errorf("%s: got last point %v, want %v", l.mode, p, tc.last)
		}
		for i := 1; i < len(l.points); i++ {
			if l.points[i][0] < l.points[i-1][0] || l.points[i][1] > l.points[i-1][1] {
				t.Errorf("%s: got points %v, want a CDF (x and the fraction never decreasing)", l.mode, l.points)
				break
			}
		}
	}
	all := strings.Join(texts, "\n")
	for _, want := range []string{"4 pods at once, cpu workload, 20.0 MiB patch", "startgate-prefetch (1 failed)", "100%", "time to ready (s)"} {
		if !strings.Contains(all, want) {
			t.Errorf("chart text: got\n%s\nwant %q in it", all, want)
		}
	}
}

func TestWriteChartEscapesAndEmpty(t *testing.T) {
	r := &Result{Modes: []ModeResult{{Mode: `a<b&"c"`}}}
	var b strings.Builder
	if err := WriteChart(&b, r); err != nil {
		t.Fatal(err)
	}
	lines, _ := parseSVG(t, b.String())
	if len(lines) != 1 || lines[0].mode != `a<b&"c"` || len(lines[0].points) != 1 {
		t.Errorf("got %+v, want one line for the odd name, at the origin only (no pods, no ideal)", lines)
	}
}

func TestNiceStep(t *testing.T) {
	for _, tc := range []struct{ raw, want float64 }{
		{0, 0.1}, {0.05, 0.1}, {0.3, 0.5}, {0.9, 1}, {1.2, 2}, {2.5, 5}, {7, 10}, {12, 20},
	} {
		if got := niceStep(tc.raw); got != tc.want {
			t.Errorf("niceStep(%v): got %v, want %v", tc.raw, got, tc.want)
		}
	}
}

func TestRenderBar(t *testing.T) {
	for _, tc := range []struct {
		ready, failed, total int
		want                 string
	}{
		{0, 0, 10, "[          ]"},
		{5, 0, 10, "[=====     ]"},
		{5, 2, 10, "[=====xx   ]"},
		{10, 0, 10, "[==========]"},
		{39, 0, 40, "[========= ]"}, // full only when every pod is
		{3, 0, 0, "[          ]"},
		{12, 5, 10, "[==========]"}, // clamped
	} {
		if got := renderBar(tc.ready, tc.failed, tc.total, 10); got != tc.want {
			t.Errorf("renderBar(%d, %d, %d): got %q, want %q", tc.ready, tc.failed, tc.total, got, tc.want)
		}
	}
}

func TestProgressPlainWithoutTerminal(t *testing.T) {
	var b strings.Builder
	p := newProgress(&b)
	p.line("calibrated")
	p.bar("burst 1/2", 3, 1, 10, 1500*time.Millisecond)
	p.bar("burst 1/2", 4, 1, 10, 1750*time.Millisecond) // within 5 s: dropped
	got := b.String()
	want := "startgate-bench: calibrated\n  burst 1/2 [=========xxx                  ] 3/10 ready, 1 failed, 1.50 s\n"
	if got != want {
		t.Errorf("got %q, want %q (no control characters, status at most every 5 s)", got, want)
	}
}
