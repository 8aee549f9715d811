// Command startgate-cluster runs a one-node Kubernetes cluster with
// startgated in kubelet's path until Ctrl-C; see harness/devcluster.
package main

import (
	"os"

	"github.com/startgate/startgate/harness/devcluster"
)

func main() { os.Exit(devcluster.Main(os.Args[1:])) }
