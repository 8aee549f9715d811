package ctl

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/startgate/startgate/internal/kubelet"
)

// nodeFlags are the node commands' shared flags.
type nodeFlags struct {
	kubeletConfig string
	restart       bool
	// root and stateDir are for tests: another root for every path, and
	// another place for the backups and the record.
	root, stateDir string
}

func (a *app) nodeCommand() *cobra.Command {
	var f nodeFlags
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Point this node's kubelet at startgated, or back at containerd",
		Long: "Finds where this node sets kubelet's container runtime endpoint (a\n" +
			"--container-runtime-endpoint flag in kubeadm's kubeadm-flags.env, /etc/default/kubelet,\n" +
			"/etc/sysconfig/kubelet or a kubelet.service.d drop-in; else containerRuntimeEndpoint in\n" +
			"the KubeletConfiguration the running kubelet reads) and changes it there, keeping a\n" +
			"backup and a record in /var/lib/startgate/kubelet. kubelet reads it when it starts:\n" +
			"--restart-kubelet restarts it (systemctl restart kubelet); its pods keep running.",
	}
	cmd.PersistentFlags().StringVar(&f.kubeletConfig, "kubelet-config", "", "the KubeletConfiguration file (default: the running kubelet's --config, else /var/lib/kubelet/config.yaml)")
	cmd.PersistentFlags().StringVar(&f.root, "root", "", "look for kubelet's files under this directory (tests)")
	cmd.PersistentFlags().StringVar(&f.stateDir, "state-dir", "", "keep backups and the record here (tests; default /var/lib/startgate/kubelet)")
	_ = cmd.PersistentFlags().MarkHidden("root")
	_ = cmd.PersistentFlags().MarkHidden("state-dir")
	cmd.AddCommand(a.nodeStatusCommand(&f), a.nodeEnableCommand(&f), a.nodeDisableCommand(&f))
	return cmd
}

func (f *nodeFlags) node() *kubelet.Node {
	return &kubelet.Node{Root: f.root, ConfigFile: f.kubeletConfig, StateDir: f.stateDir}
}

func (a *app) nodeStatusCommand(f *nodeFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show where kubelet's runtime endpoint is set and whether it points at startgated",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			st, err := f.node().Status()
			if err != nil {
				return err
			}
			if a.output != "table" {
				return emit(a.streams.Out, a.output, st)
			}
			w := a.streams.Out
			eff := st.Effective
			if eff == "" {
				eff = "not set (kubelet's default, " + kubelet.ContainerdEndpoint + ")"
			}
			fmt.Fprintf(w, "runtime endpoint: %s\n", eff)
			switch {
			case st.Enabled && !st.Switched.IsZero():
				fmt.Fprintf(w, "startgate:        enabled (switched %s; startgatectl node disable undoes it)\n", st.Switched.Local().Format(time.RFC3339))
			case st.Enabled:
				fmt.Fprintf(w, "startgate:        enabled (by hand: no record of the switch)\n")
			default:
				fmt.Fprintf(w, "startgate:        not enabled\n")
			}
			for _, s := range st.Settings {
				fmt.Fprintf(w, "set in:           %s (%s) = %s\n", s.File, s.Kind, s.Value)
			}
			fmt.Fprintf(w, "kubelet config:   %s\n", st.ConfigFile)
			if st.ImageEndpoint != "" {
				fmt.Fprintf(w, "image endpoint:   %s (image pulls go there, not through startgated)\n", st.ImageEndpoint)
			}
			if st.Running.Pid == 0 {
				fmt.Fprintf(w, "kubelet:          not running\n")
			} else {
				running := st.Running.Endpoint
				if running == "" {
					running = "from its config file"
				}
				fmt.Fprintf(w, "kubelet:          pid %d, runtime endpoint %s\n", st.Running.Pid, running)
			}
			return nil
		},
	}
}

func (a *app) nodeEnableCommand(f *nodeFlags) *cobra.Command {
	var endpoint string
	var force bool
	cmd := &cobra.Command{
		Use:   "enable",
		Short: "Point kubelet at startgated's CRI socket (with a backup of each file changed)",
		Long: "Points kubelet at startgated's CRI socket. It first checks that startgated answers\n" +
			"there (a CRI Version call), so that kubelet is never pointed at nothing; --force skips\n" +
			"the check. Takes effect when kubelet restarts (--restart-kubelet).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !force {
				if err := criAnswers(cmd.Context(), endpoint); err != nil {
					return fmt.Errorf("startgated does not answer at %s (%v): start it first (systemctl start startgated), or --force", endpoint, err)
				}
			}
			changed, err := f.node().Enable(endpoint)
			if err != nil {
				return err
			}
			if len(changed) == 0 {
				fmt.Fprintf(a.streams.Out, "kubelet already points at %s\n", endpoint)
				return nil
			}
			for _, s := range changed {
				fmt.Fprintf(a.streams.Out, "%s: runtime endpoint set to %s (%s)\n", s.File, s.Value, s.Kind)
			}
			return a.restartKubelet(f.restart)
		},
	}
	cmd.Flags().StringVar(&endpoint, "endpoint", kubelet.StartgateEndpoint, "startgated's CRI socket")
	cmd.Flags().BoolVar(&force, "force", false, "switch even if startgated does not answer on the socket")
	cmd.Flags().BoolVar(&f.restart, "restart-kubelet", false, "restart kubelet (systemctl restart kubelet) so that it takes the change")
	return cmd
}

func (a *app) nodeDisableCommand(f *nodeFlags) *cobra.Command {
	var ifEnabled bool
	cmd := &cobra.Command{
		Use:   "disable",
		Short: "Point kubelet back at containerd: every change enable made, undone",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			restored, err := f.node().Disable()
			if errors.Is(err, kubelet.ErrNotSwitched) && ifEnabled {
				return nil
			}
			for _, s := range restored {
				fmt.Fprintf(a.streams.Out, "%s: runtime endpoint set back to %s (%s)\n", s.File, s.Value, s.Kind)
			}
			if err != nil {
				return err
			}
			return a.restartKubelet(f.restart)
		},
	}
	cmd.Flags().BoolVar(&ifEnabled, "if-enabled", false, "succeed without a change when kubelet is not switched (for package scripts)")
	cmd.Flags().BoolVar(&f.restart, "restart-kubelet", false, "restart kubelet (systemctl restart kubelet) so that it takes the change")
	return cmd
}

// restartKubelet runs systemctl restart kubelet when asked, else says
// what to run.
func (a *app) restartKubelet(restart bool) error {
	if !restart {
		fmt.Fprintln(a.streams.Out, "restart kubelet for it to take effect: systemctl restart kubelet")
		return nil
	}
	out, err := exec.Command("systemctl", "restart", "kubelet").CombinedOutput()
	if err != nil {
		return fmt.Errorf("systemctl restart kubelet: %v: %s", err, strings.TrimSpace(string(out)))
	}
	fmt.Fprintln(a.streams.Out, "kubelet restarted")
	return nil
}

// criAnswers makes one CRI Version call on endpoint (unix://PATH).
func criAnswers(ctx context.Context, endpoint string) error {
	if !strings.HasPrefix(endpoint, "unix://") {
		return fmt.Errorf("endpoint %q is not unix://PATH", endpoint)
	}
	conn, err := dialUnix(strings.TrimPrefix(endpoint, "unix://"))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = runtimeapi.NewRuntimeServiceClient(conn).Version(ctx, &runtimeapi.VersionRequest{}, grpc.WaitForReady(false))
	return err
}
