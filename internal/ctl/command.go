package ctl

import (
	"os"

	"github.com/spf13/cobra"
)

// NewCommand returns startgatectl's command tree on the process's
// streams, for tools that read the commands without running them (the
// man pages: hack/genman). Run is how startgatectl runs.
func NewCommand() *cobra.Command {
	a := &app{streams: Streams{In: os.Stdin, Out: os.Stdout, Err: os.Stderr}}
	return a.rootCommand()
}
