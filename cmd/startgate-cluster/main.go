// Command startgate-cluster runs a one-node Kubernetes cluster with
// startgated in kubelet's path until Ctrl-C; see internal/devcluster.
package main

import (
	"os"

	"github.com/startgate/startgate/internal/devcluster"
)

func main() { os.Exit(devcluster.Main(os.Args[1:])) }
