// Command startgate-bench measures pod bursts: on a private containerd
// with an emulated kubelet (harness/bench), or with `startgate-bench
// kube`, on a real one-node Kubernetes cluster (harness/kubebench);
// direct, with a constant limit and through startgated. `startgate-bench
// fleet` simulates a fleet's coordination on a real API server
// (harness/fleetbench).
package main

import (
	"os"

	"github.com/startgate/startgate/harness/bench"
	"github.com/startgate/startgate/harness/fleetbench"
	"github.com/startgate/startgate/harness/kubebench"
)

func main() {
	// The startgated child either command re-executes first.
	if code, ok := bench.RunChild(); ok {
		os.Exit(code)
	}
	if len(os.Args) > 1 && os.Args[1] == "kube" {
		os.Exit(kubebench.Main(os.Args[2:], os.Stdout, os.Stderr))
	}
	if len(os.Args) > 1 && os.Args[1] == "fleet" {
		os.Exit(fleetbench.Main(os.Args[2:], os.Stdout, os.Stderr))
	}
	os.Exit(bench.Main(os.Args[1:]))
}
