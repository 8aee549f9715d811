// Command startgatectl inspects and steers startgated; see internal/ctl.
package main

import (
	"os"

	"github.com/startgate/startgate/internal/ctl"
)

func main() { os.Exit(ctl.Main()) }
