package metrics

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"sigs.k8s.io/yaml"

	"github.com/startgate/startgate/internal/admission"
)

// An alert that reads a series the daemon exports only after the first
// event cannot fire before that event: "waiters and nothing admitted"
// stays silent on a daemon that has admitted nothing since it started.
// Every series a rule in monitoring/prometheus-rules.yaml reads, with the
// label values it matches on, must exist on the registry of a daemon
// that has just started (everything on: prefetch, the CRI proxy).
func TestFreshRegistryHasEverySeriesTheRulesRead(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	RegisterProcess(reg)
	m := New(reg)
	g, err := admission.New(admission.Config{Policy: admission.DefaultPolicy(), Cores: 1, Observer: m})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	m.WatchGate(g)
	NewPrefetch(reg)
	NewEndpoint(reg)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range families {
		byName[f.GetName()] = f
	}

	alerts := readAlerts(t, filepath.Join("..", "..", "monitoring", "prometheus-rules.yaml"))
	for _, want := range []string{"StartgateDown", "StartgateStuckWithWaiters"} {
		if _, ok := alerts[want]; !ok {
			t.Errorf("alert %s not in the rules", want)
		}
	}
	for alert, expr := range alerts {
		sels := selectors(expr)
		if len(sels) == 0 && !strings.Contains(expr, "up{") {
			t.Errorf("%s: no series found in %q", alert, expr)
		}
		for _, s := range sels {
			f := family(byName, s.name)
			if f == nil {
				t.Errorf("%s reads %s, which a fresh daemon does not export", alert, s.name)
				continue
			}
			if !slices.ContainsFunc(f.GetMetric(), s.matches) {
				t.Errorf("%s reads %s%s; a fresh daemon exports %s with no series matching it", alert, s.name, s.matchers, s.name)
			}
		}
	}
}

// readAlerts returns each alert's expression by name.
func readAlerts(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Rules []struct {
				Alert string `json:"alert"`
				Expr  string `json:"expr"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(b, &file); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	out := map[string]string{}
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				out[r.Alert] = r.Expr
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s: no alerts", path)
	}
	return out
}

// selector is a series selector of the daemon's metrics in a rule, with
// its = and != label matchers (the rules use no others on them).
type selector struct {
	name, matchers string
	eq, ne         map[string]string
}

var (
	selectorRE = regexp.MustCompile(`\b((?:startgate|process|go)_[a-z0-9_]+)(\{[^}]*\})?`)
	matcherRE  = regexp.MustCompile(`([a-z_]+)\s*(=|!=)\s*"([^"]*)"`)
)

func selectors(expr string) []selector {
	var out []selector
	for _, m := range selectorRE.FindAllStringSubmatch(expr, -1) {
		s := selector{name: m[1], matchers: m[2], eq: map[string]string{}, ne: map[string]string{}}
		for _, lm := range matcherRE.FindAllStringSubmatch(m[2], -1) {
			if lm[2] == "=" {
				s.eq[lm[1]] = lm[3]
			} else {
				s.ne[lm[1]] = lm[3]
			}
		}
		out = append(out, s)
	}
	return out
}

func (s selector) matches(m *dto.Metric) bool {
	labels := map[string]string{}
	for _, lp := range m.GetLabel() {
		labels[lp.GetName()] = lp.GetValue()
	}
	for k, v := range s.eq {
		if labels[k] != v {
			return false
		}
	}
	for k, v := range s.ne {
		if labels[k] == v {
			return false
		}
	}
	return true
}

// family finds a metric's family, a histogram's by its _bucket, _sum or
// _count series.
func family(byName map[string]*dto.MetricFamily, name string) *dto.MetricFamily {
	if f, ok := byName[name]; ok {
		return f
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if f, ok := byName[strings.TrimSuffix(name, suffix)]; ok && strings.HasSuffix(name, suffix) && f.GetType() == dto.MetricType_HISTOGRAM {
			return f
		}
	}
	return nil
}
