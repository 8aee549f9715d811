package fleetbench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/startgate/startgate/harness/testbed/cluster"
)

// Main is `startgate-bench fleet`; it returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("startgate-bench fleet", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	var o Options
	nodes := fs.IntSlice("nodes", []int{1000}, "simulated nodes; a list runs one simulation per value")
	fs.IntVar(&o.Slots, "slots", 10, "K, the upstream budget: most nodes fetching from the registry at once")
	fs.DurationVar(&o.FetchTime, "fetch-time", 2*time.Second, "T, how long each node's fetch takes")
	fs.DurationVar(&o.LeaseDuration, "lease-duration", 15*time.Second, "an upstream slot's lease (fleet.lease_duration)")
	fs.DurationVar(&o.RetryMin, "retry-min", time.Second, "first wait for a slot when all are held (fleet.retry_min)")
	fs.DurationVar(&o.RetryMax, "retry-max", 30*time.Second, "longest wait for a slot when all are held (fleet.retry_max)")
	fs.DurationVar(&o.StartJitter, "start-jitter", 5*time.Second, "spread of the nodes' first tries (fleet.start_jitter)")
	fs.DurationVar(&o.ReportEvery, "report-every", 2*time.Second, "most often a node writes its report (fleet.report_every)")
	fs.DurationVar(&o.StatusEvery, "status-every", 15*time.Second, "the elected node's summing interval (fleet.status_every)")
	fs.BoolVar(&o.Kill, "kill", false, "kill the first node to start fetching, mid-fetch")
	fs.BoolVar(&o.Mirror, "mirror", false, "every node has a mirror: once one node is done, the others fetch without a slot")
	fs.IntVar(&o.Candidates, "candidates", 3, "nodes standing for election (the elected one sums the reports)")
	fs.StringVar(&o.KubeBin, "kube-bin", os.Getenv("STARTGATE_KUBE_BIN"), "directory of the Kubernetes binaries (default $STARTGATE_KUBE_BIN, else build.sh's cache)")
	jsonOut := fs.String("json", "", "also write the results as JSON to this file")
	verbose := fs.Bool("v", false, "log the nodes' warnings")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: startgate-bench fleet [flags]\n\n"+
			"Starts a Kubernetes control plane here (etcd, kube-apiserver), installs\n"+
			"deploy/fleet, runs N simulated nodes (each the real fleet coordination with its\n"+
			"own API client and a fetch that takes T) and announces one patch. Prints, per\n"+
			"N: the most fetches at once against K, the time until all are done against\n"+
			"N*T/K, and each node's API requests per second.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return 2
	}
	if o.KubeBin == "" {
		bin, err := cluster.CachedBinaries()
		if err != nil {
			fmt.Fprintln(stderr, "startgate-bench fleet:", err)
			return 1
		}
		o.KubeBin = bin
	}
	if *verbose {
		l, _ := zap.NewDevelopment(zap.IncreaseLevel(zap.WarnLevel))
		o.Logger = l
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var results []*Result
	for _, n := range *nodes {
		o.Nodes = n
		fmt.Fprintf(stderr, "fleet: %d nodes, K %d, T %v ...\n", n, o.Slots, o.FetchTime)
		r, err := Run(ctx, o)
		if err != nil {
			fmt.Fprintln(stderr, "startgate-bench fleet:", err)
			return 1
		}
		results = append(results, r)
	}
	fmt.Fprint(stdout, Table(results))
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(results, "", "  ")
		if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
			fmt.Fprintln(stderr, "startgate-bench fleet:", err)
			return 1
		}
	}
	return 0
}

// Table is the results as a markdown table.
func Table(rs []*Result) string {
	var b strings.Builder
	b.WriteString("| nodes | K | T | peak fetching | peak upstream (fetches) | done | completion | N×T/K | completion / ideal | requests / node / s | by verb and resource | watches / node | API server requests | killed: slot taken over after |\n")
	b.WriteString("| --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --- | --: | --: | --: |\n")
	for _, r := range rs {
		verbs := slices.Sorted(maps.Keys(r.Requests))
		var by []string
		for _, v := range verbs {
			by = append(by, fmt.Sprintf("%s %d", v, r.Requests[v]))
		}
		kill := "-"
		if r.KillTakeoverS > 0 {
			kill = fmt.Sprintf("%.1f s", r.KillTakeoverS)
		}
		fmt.Fprintf(&b, "| %d | %d | %.1f s | %d | %d (%d) | %d | %.1f s | %.1f s | %.2f | %.3f | %s | %.2f | %d | %s |\n",
			r.Nodes, r.Slots, r.FetchTimeS, r.PeakFetching, r.PeakUpstream, r.Upstream, r.Done, r.CompletionS, r.IdealS, r.CompletionS/r.IdealS,
			r.PerNodePerSecond, strings.Join(by, ", "), r.WatchesPerNode, r.ServerRequests, kill)
	}
	return b.String()
}
