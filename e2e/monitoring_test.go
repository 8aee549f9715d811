package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The Grafana dashboard in monitoring/ is only useful if its queries find
// series on a real daemon: a real Prometheus (Debian's) scrapes a
// startgated that has gated a pod, pulled an image and runs prefetch, and
// every query of every panel must return at least one series.
func TestDashboardQueriesReturnSeries(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("prometheus not found (apt-get install prometheus): %v", err)
		}
		t.Skipf("prometheus not found (apt-get install prometheus; CI=true makes this a failure): %v", err)
	}
	exprs := dashboardQueries(t, filepath.Join("..", "monitoring", "grafana-dashboard.json"))

	pn := startPrefetchNode(t, prefetchOptions{metrics: true})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ref := pn.front.Ref("app:1")
	base, _ := appImage(t, prefetchLayerSize, 31)
	pn.push(ctx, "app:1", base)
	pn.pull(ctx, ref)
	_, cID, err := pn.runPodOf(ctx, "default", "watched", ref, nil, "sleep", "300")
	if err != nil {
		t.Fatal(err)
	}
	pn.waitRunning(ctx, cID)

	prom := startPrometheus(t, promBin, pn.metricsAddr)
	// rate() needs two samples in its window: wait for a few scrapes.
	pn.eventually(30*time.Second, "three scrapes of startgated", func() (bool, string) {
		n, err := prom.query(`count_over_time(startgate_build_info[1m]) >= 3`)
		return err == nil && n > 0, fmt.Sprintf("%d series, %v", n, err)
	})
	for _, e := range exprs {
		n, err := prom.query(e)
		if err != nil {
			t.Errorf("dashboard query %s: %v", e, err)
			continue
		}
		if n == 0 {
			t.Errorf("dashboard query %s returns no series from a running startgated", e)
		}
	}
	t.Logf("%d dashboard queries, each with series", len(exprs))
}

// dashboardQueries reads every panel target's expr from a Grafana
// dashboard, with the dashboard's variables replaced as Grafana would for
// "all nodes, the last minute".
func dashboardQueries(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	r := strings.NewReplacer("$instance", ".+", "$__rate_interval", "1m", "$__range", "5m")
	var out []string
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			out = append(out, r.Replace(tg.Expr))
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s: no queries", path)
	}
	return out
}

type prometheus struct{ base string }

// startPrometheus runs a real Prometheus scraping target every second.
func startPrometheus(t *testing.T, bin, target string) *prometheus {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(
		"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: startgate\n    static_configs:\n      - targets: [%q]\n",
		target)), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeLoopbackAddr(t)
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr)
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("prometheus: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			t.Logf("prometheus log:\n%s", b)
		}
	})
	p := &prometheus{base: "http://" + addr}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(p.base + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready at %s within 30s: %v", addr, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// query runs an instant query and returns how many series it gave.
func (p *prometheus) query(expr string) (int, error) {
	resp, err := http.Get(p.base + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string            `json:"resultType"`
			Result     []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, err
	}
	if r.Status != "success" {
		return 0, fmt.Errorf("status %s: %s", r.Status, r.Error)
	}
	return len(r.Data.Result), nil
}
