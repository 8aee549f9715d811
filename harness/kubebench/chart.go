package kubebench

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/startgate/startgate/harness/bench"
)

// WriteCharts writes one chart per scenario of r into dir, as
// kube-SCENARIO.svg, and returns their paths: the distribution of the
// pods' time to Ready (a CDF), one line per mode with every round's pods
// pooled; a pod never Ready counts in the total but never on the line.
func WriteCharts(dir string, r *Result) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var paths []string
	for _, sc := range r.Scenarios {
		var series []bench.CDFSeries
		for _, mode := range r.Modes {
			s := bench.CDFSeries{Name: mode}
			for _, run := range r.Runs {
				if run.Scenario != sc || run.Mode != mode || run.Round == 0 {
					continue
				}
				for _, p := range run.Pods {
					s.Total++
					if !p.TimedOut {
						s.Ready = append(s.Ready, p.Ready)
					}
				}
			}
			if s.Total == 0 {
				continue
			}
			slices.Sort(s.Ready)
			series = append(series, s)
		}
		if len(series) == 0 {
			continue
		}
		title := fmt.Sprintf("%s: %d pods, %s init, one real node (%d cores), %d rounds", sc, r.Pods, r.Workload, r.Cores, r.Rounds)
		xlabel := "pod creation to Ready (s), the API's timestamps"
		if sc == Reboot {
			xlabel = "kubelet start to Ready (s)"
		}
		path := filepath.Join(dir, "kube-"+sc+".svg")
		if err := os.WriteFile(path, []byte(bench.RenderCDF(title, xlabel, series)), 0o644); err != nil {
			return paths, err
		}
		paths = append(paths, path)
	}
	return paths, nil
}
