// Command startgated is the startgate node daemon; see internal/daemon.
package main

import (
	"os"

	"github.com/startgate/startgate/internal/daemon"
)

func main() { os.Exit(daemon.Main(os.Args[1:])) }
