// Command startgate-bench measures pod bursts on a private containerd,
// direct, with client-side limits and through startgated; see
// internal/bench.
package main

import (
	"os"

	"github.com/startgate/startgate/internal/bench"
)

func main() { os.Exit(bench.Main(os.Args[1:])) }
