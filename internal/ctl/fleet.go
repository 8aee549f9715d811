package ctl

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/startgate/startgate/internal/fleet"
)

// fleetCommand talks to the cluster's API, not to startgated: a CI step
// announces a patch from wherever it has credentials.
func (a *app) fleetCommand() *cobra.Command {
	var kubeconfig string
	cmd := &cobra.Command{
		Use:   "fleet",
		Short: "Announce a patch to every node of the cluster, and follow its prefetch",
		Long: "Talks to the Kubernetes API (deploy/fleet's resources installed; kubeconfig as\n" +
			"kubectl finds it, or --kubeconfig). Every node whose startgated runs [fleet] and\n" +
			"runs or watches the tag prefetches an announced digest, at most\n" +
			"fleet.upstream_slots nodes fetching from the registry at once.",
	}
	cmd.PersistentFlags().StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")
	client := func() (dynamic.Interface, error) {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		rules.ExplicitPath = kubeconfig
		cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("kubeconfig: %w", err)
		}
		cfg.UserAgent = "startgatectl"
		return dynamic.NewForConfig(cfg)
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "announce REFERENCE DIGEST",
		Short: "Announce a tag's new digest to the cluster (idempotent)",
		Example: "  startgatectl fleet announce registry.example.com/app:1 sha256:9f86d0...\n" +
			"  # in CI, after the push: the digest crane or docker push printed",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := fleet.NewAnnouncement(args[0], args[1]); err != nil {
				return usagef("%v", err)
			}
			c, err := client()
			if err != nil {
				return err
			}
			ctx, cancel := a.callCtx(cmd.Context())
			defer cancel()
			ann, err := fleet.Announce(ctx, c, args[0], args[1])
			if err != nil {
				return err
			}
			fmt.Fprintf(a.streams.Out, "announced %s@%s as %s\n", ann.Reference, ann.Digest, ann.Name)
			return nil
		},
	})
	var nodes bool
	status := &cobra.Command{
		Use:   "status [ANNOUNCEMENT|REFERENCE]",
		Short: "Show each announcement's progress: nodes done, fetching, waiting, failed",
		Long: "Without an argument, every announcement, newest first, with the progress the\n" +
			"elected startgated summed (fleet.leader_candidate). With one, that announcement\n" +
			"(its name, or the newest of a reference); --nodes lists each node's own report.",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			ctx, cancel := a.callCtx(cmd.Context())
			defer cancel()
			anns, err := fleet.List(ctx, c)
			if err != nil {
				return err
			}
			if len(args) == 1 {
				var pick []fleet.Announcement
				for _, an := range anns {
					if an.Name == args[0] || an.Reference == args[0] {
						pick = append(pick, an)
						break
					}
				}
				if len(pick) == 0 {
					return fmt.Errorf("no announcement named %s or of %s", args[0], args[0])
				}
				anns = pick
			}
			if nodes && len(anns) == 1 {
				st, err := fleet.NodeStates(ctx, c, anns[0].Name)
				if err != nil {
					return err
				}
				if a.output != "table" {
					return emit(a.streams.Out, a.output, st)
				}
				tw := tabwriter.NewWriter(a.streams.Out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NODE\tSTATE\tUPDATED\tMESSAGE")
				for _, s := range st {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Node, s.State, s.Updated.Local().Format(time.TimeOnly), s.Message)
				}
				return tw.Flush()
			}
			if a.output != "table" {
				return emit(a.streams.Out, a.output, anns)
			}
			tw := tabwriter.NewWriter(a.streams.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tREFERENCE\tDIGEST\tDONE\tFETCHING\tWAITING\tFAILED\tAGE")
			for _, an := range anns {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", an.Name, an.Reference, shortDigest(an.Digest),
					an.Status.Done, an.Status.Fetching, an.Status.Waiting, an.Status.Failed, time.Since(an.Created).Round(time.Second))
			}
			return tw.Flush()
		},
	}
	status.Flags().BoolVar(&nodes, "nodes", false, "list each node's report on the announcement given")
	cmd.AddCommand(status)
	return cmd
}
