package kubebench

import (
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// One chart per scenario that ran, one line per mode that ran it, a pod
// never Ready counted but not drawn (the line stops short of 100%), and
// the warm-up round left out.
func TestWriteCharts(t *testing.T) {
	r := &Result{Pods: 2, Rounds: 1, Cores: 2, Workload: WorkCPU,
		Scenarios: []string{Recreate, Reboot, Rolling},
		Modes:     []string{"direct", "startgate"},
		Runs: []ScenarioRun{
			{Scenario: Recreate, Mode: "direct", Round: 1, Pods: []PodTime{{Ready: time.Second}, {Ready: 3 * time.Second}}},
			{Scenario: Recreate, Mode: "startgate", Round: 1, Pods: []PodTime{{Ready: 2 * time.Second}, {Ready: time.Minute, TimedOut: true}}},
			{Scenario: Reboot, Mode: "startgate", Round: 1, Pods: []PodTime{{Ready: time.Second}, {Ready: time.Second}}},
			{Scenario: Rolling, Mode: "startgate", Round: 0, Pods: []PodTime{{Ready: time.Second}}},
		},
	}
	dir := t.TempDir()
	paths, err := WriteCharts(dir, r)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(dir, "kube-recreate.svg"), filepath.Join(dir, "kube-reboot.svg")}
	if strings.Join(paths, " ") != strings.Join(want, " ") {
		t.Fatalf("charts %v, want %v (none for a scenario with no runs)", paths, want)
	}
	modes, texts := readChart(t, paths[0])
	if strings.Join(modes, ",") != "direct,startgate" {
		t.Errorf("recreate chart's lines %v, want direct,startgate", modes)
	}
	if !strings.Contains(texts, "startgate (1 failed)") {
		t.Errorf("recreate chart's legend does not say startgate's pod failed: %s", texts)
	}
	modes, texts = readChart(t, paths[1])
	if strings.Join(modes, ",") != "startgate" || !strings.Contains(texts, "kubelet start to Ready") {
		t.Errorf("reboot chart: lines %v, text %q; want startgate only, timed from kubelet's start", modes, texts)
	}
}

// readChart parses an SVG chart as XML and returns its lines' modes and
// all its text.
func readChart(t *testing.T, path string) ([]string, string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := xml.NewDecoder(f)
	var modes []string
	var text strings.Builder
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s is not well-formed XML: %v", path, err)
		}
		switch e := tok.(type) {
		case xml.StartElement:
			for _, a := range e.Attr {
				if e.Name.Local == "polyline" && a.Name.Local == "data-mode" {
					modes = append(modes, a.Value)
				}
			}
		case xml.CharData:
			text.Write(e)
			text.WriteString("\n")
		}
	}
	return modes, text.String()
}
