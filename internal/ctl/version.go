package ctl

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/startgate/startgate/internal/version"
	pb "github.com/startgate/startgate/proto/startgate/v1"
)

// versionOut is what version prints: this startgatectl's build and the
// daemon's, as kubectl version does.
type versionOut struct {
	Client version.Info  `json:"client"`
	Daemon *version.Info `json:"daemon,omitempty"`
}

func (a *app) versionCommand() *cobra.Command {
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Show this startgatectl's version and the daemon's",
		Long: "Shows the version, VCS revision and Go version of this startgatectl and of the\n" +
			"startgated on --socket. When the daemon cannot be reached the client's is\n" +
			"printed and the command fails.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := versionOut{Client: version.Get()}
			var callErr error
			if !clientOnly {
				r, err := unary(a, cmd, pb.StartgateClient.Version, &pb.VersionRequest{})
				if err == nil {
					out.Daemon = &version.Info{Version: r.Version, Revision: r.Revision, Modified: r.Modified, GoVersion: r.GoVersion}
				}
				callErr = err
			}
			if a.output == "table" {
				fmt.Fprintf(a.streams.Out, "client: %s\n", out.Client)
				if out.Daemon != nil {
					fmt.Fprintf(a.streams.Out, "daemon: %s\n", out.Daemon)
				}
			} else if err := emit(a.streams.Out, a.output, out); err != nil {
				return err
			}
			return callErr
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "show this startgatectl's version only; do not call the daemon")
	return cmd
}
