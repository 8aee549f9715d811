package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/pmezard/go-difflib/difflib"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/startgate/startgate/internal/config"
	"github.com/startgate/startgate/internal/kubelet"
	pb "github.com/startgate/startgate/proto/startgate/v1"
)

// nodeFlags are the node commands' shared flags.
type nodeFlags struct {
	kubeletConfig string
	restart       bool
	dryRun        bool
	timeout       time.Duration
	// startgatedConfig is startgated's configuration file, for the
	// runtime it forwards to.
	startgatedConfig string
	// root and stateDir are for tests: another root for every path, and
	// another place for the backups and the record.
	root, stateDir string
}

func (a *app) nodeCommand() *cobra.Command {
	var f nodeFlags
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Point this node's kubelet at startgated, or back at containerd",
		Long: "Finds where kubelet's next start takes its container runtime endpoint from, as kubelet\n" +
			"computes it: the command line systemd builds from kubelet.service (ExecStart=, Environment=,\n" +
			"EnvironmentFile= such as kubeadm-flags.env, /etc/default/kubelet or /etc/sysconfig/kubelet,\n" +
			"and drop-ins), then flags over --config-dir drop-ins over the --config file. enable changes\n" +
			"exactly the place that wins, in the file's own format, with a backup and a journal in\n" +
			"/var/lib/startgate/kubelet; disable puts every file back byte for byte. k3s and RKE2 are\n" +
			"refused (docs/kubelet.md says why).",
	}
	cmd.PersistentFlags().StringVar(&f.kubeletConfig, "kubelet-config", "", "the KubeletConfiguration file, when kubelet's --config is not where it reads it")
	cmd.PersistentFlags().StringVar(&f.startgatedConfig, "startgated-config", "/etc/startgate/config.toml", "startgated's configuration file (enable checks that startgated forwards to the runtime kubelet uses now)")
	cmd.PersistentFlags().StringVar(&f.root, "root", "", "look for kubelet's files under this directory (tests)")
	cmd.PersistentFlags().StringVar(&f.stateDir, "state-dir", "", "keep backups and the record here (tests; default /var/lib/startgate/kubelet)")
	_ = cmd.PersistentFlags().MarkHidden("root")
	_ = cmd.PersistentFlags().MarkHidden("state-dir")
	cmd.AddCommand(a.nodeStatusCommand(&f), a.nodeEnableCommand(&f), a.nodeDisableCommand(&f))
	for _, c := range cmd.Commands() {
		// A failure here is the node's, not a usage error: exit 1, no
		// usage hint.
		run := c.RunE
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if err := run(cmd, args); err != nil {
				return exitError{code: 1, msg: "startgatectl: " + err.Error()}
			}
			return nil
		}
	}
	return cmd
}

func (f *nodeFlags) node() *kubelet.Node {
	return &kubelet.Node{Root: f.root, ConfigFile: f.kubeletConfig, StateDir: f.stateDir}
}

// addSwitchFlags are enable's and disable's flags.
func (f *nodeFlags) addSwitchFlags(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.restart, "restart-kubelet", false, "restart kubelet when its endpoint changed (also after an earlier switch without a restart), wait for its /healthz and its Node to be Ready, and roll back if it does not come back")
	cmd.Flags().BoolVar(&f.dryRun, "dry-run", false, "show what would change, as a diff, and change nothing")
	cmd.Flags().DurationVar(&f.timeout, "timeout", 3*time.Minute, "with --restart-kubelet, how long kubelet has to come back healthy")
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
			printStatus(a.streams.Out, st)
			return nil
		},
	}
}

func printStatus(w io.Writer, st *kubelet.Status) {
	l := st.Layout
	set := ""
	if len(l.Settings) == 0 {
		set = " (set nowhere: kubelet's default)"
	}
	fmt.Fprintf(w, "runtime endpoint: %s%s\n", l.Effective, set)
	switch {
	case st.Phase == "enabling" || st.Phase == "disabling":
		fmt.Fprintf(w, "startgate:        an interrupted %s: the next node enable or disable undoes it first\n", strings.TrimSuffix(st.Phase, "ing")+"e")
	case st.Enabled && !st.Switched.IsZero():
		fmt.Fprintf(w, "startgate:        enabled (switched %s; startgatectl node disable undoes it)\n", st.Switched.Local().Format(time.RFC3339))
	case st.Enabled:
		fmt.Fprintf(w, "startgate:        enabled (by hand: no record of the switch)\n")
	case !st.Switched.IsZero():
		fmt.Fprintf(w, "startgate:        not enabled: switched %s, since changed by something else (node enable switches again)\n", st.Switched.Local().Format(time.RFC3339))
	default:
		fmt.Fprintf(w, "startgate:        not enabled\n")
	}
	for _, s := range l.Settings {
		fmt.Fprintf(w, "set in:           %s (%s, %s) = %s\n", s.File, s.Kind, s.Via, s.Value)
	}
	if l.Unit != "" {
		fmt.Fprintf(w, "kubelet unit:     %s\n", strings.Join(append([]string{l.Unit}, l.UnitDropIns...), ", "))
	}
	if l.ConfigFile != "" {
		fmt.Fprintf(w, "kubelet config:   %s\n", l.ConfigFile)
	}
	if l.ConfigDir != "" {
		fmt.Fprintf(w, "config drop-ins:  %s (%d files)\n", l.ConfigDir, len(l.ConfigDropIns))
	}
	if l.ImageEndpoint != "" {
		fmt.Fprintf(w, "image endpoint:   %s (image pulls go there, not through startgated)\n", l.ImageEndpoint)
	}
	switch r := st.Running; {
	case r == nil:
		fmt.Fprintf(w, "kubelet:          not running\n")
	case st.RestartNeeded:
		fmt.Fprintf(w, "kubelet:          pid %d, started %s, before the last switch: restart it (node enable --restart-kubelet)\n", r.Pid, r.Started.Local().Format(time.RFC3339))
	default:
		fmt.Fprintf(w, "kubelet:          pid %d, started %s\n", r.Pid, r.Started.Local().Format(time.RFC3339))
	}
	if st.RecordError != "" {
		fmt.Fprintf(w, "record:           %s\n", st.RecordError)
	}
}

func (a *app) nodeEnableCommand(f *nodeFlags) *cobra.Command {
	var endpoint string
	var force bool
	cmd := &cobra.Command{
		Use:   "enable",
		Short: "Point kubelet at startgated's CRI socket (journaled, with a backup of each file changed)",
		Long: "Points kubelet at startgated's CRI socket. On a systemd node it first enables and starts\n" +
			"startgated-cri.socket and startgated.service, and writes a kubelet.service drop-in so that\n" +
			"kubelet pulls them in and starts after them, also after a reboot. It checks that startgated\n" +
			"answers on the socket (a CRI Version call), so that kubelet is never pointed at nothing;\n" +
			"--force skips the check. Takes effect when kubelet restarts (--restart-kubelet).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			n := f.node()
			plan, err := n.PlanEnable(endpoint)
			if err != nil {
				return err
			}
			if err := a.checkUpstream(cmd.Context(), f, plan.Layout.Effective, endpoint); err != nil {
				return err
			}
			if f.dryRun {
				return a.printPlan(plan)
			}
			if n.SystemdRunning() {
				r := &kubelet.Restarter{Node: n}
				if err := r.EnableStartgate(cmd.Context()); err != nil {
					fmt.Fprintf(a.streams.Err, "warning: %v\n", err)
				}
			}
			if !force {
				if err := criAnswers(cmd.Context(), endpoint); err != nil {
					return fmt.Errorf("startgated does not answer at %s (%v): start it first (systemctl enable --now startgated-cri.socket startgated.service), or --force", endpoint, err)
				}
			}
			res, err := n.Enable(endpoint)
			a.printResult(res)
			if err != nil {
				return err
			}
			if !res.Changed() && !n.RestartNeeded() {
				fmt.Fprintf(a.streams.Out, "kubelet already points at %s\n", endpoint)
				return nil
			}
			if !f.restart {
				fmt.Fprintln(a.streams.Out, "restart kubelet for it to take effect: startgatectl node enable --restart-kubelet (or systemctl daemon-reload; systemctl restart kubelet)")
				return nil
			}
			l, err := n.Resolve()
			if err != nil {
				return err
			}
			rerr := a.restarter(n, f).Restart(cmd.Context(), l, res.DaemonReload || res.Changed())
			if rerr == nil {
				return nil
			}
			// kubelet did not come back on startgated: back to where it was.
			fmt.Fprintf(a.streams.Err, "%v\nrolling back: pointing kubelet at its old endpoint again\n", rerr)
			back, err := n.Disable()
			a.printResult(back)
			if err != nil {
				return fmt.Errorf("%v; the rollback failed too: %w", rerr, err)
			}
			// The same kubelet, credentials and health address; read again
			// when it can be (a kubelet without a unit that exited has no
			// command line to read).
			old := "its old endpoint"
			if back, err := n.Resolve(); err == nil {
				l, old = back, back.Effective
			}
			if err := a.restarter(n, f).Restart(cmd.Context(), l, true); err != nil {
				return fmt.Errorf("%v; rolled back, and kubelet is not healthy on its old endpoint either: %w", rerr, err)
			}
			return fmt.Errorf("%w; rolled back: kubelet runs on %s again", rerr, old)
		},
	}
	cmd.Flags().StringVar(&endpoint, "endpoint", kubelet.StartgateEndpoint, "startgated's CRI socket")
	cmd.Flags().BoolVar(&force, "force", false, "switch even if startgated does not answer on the socket")
	f.addSwitchFlags(cmd)
	return cmd
}

func (a *app) nodeDisableCommand(f *nodeFlags) *cobra.Command {
	var ifEnabled bool
	cmd := &cobra.Command{
		Use:   "disable",
		Short: "Point kubelet back at containerd: every change enable made, undone byte for byte",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			n := f.node()
			if f.dryRun {
				st, err := n.Status()
				if err != nil {
					return err
				}
				printStatus(a.streams.Out, st)
				fmt.Fprintln(a.streams.Out, "disable would put back every file the record names (startgatectl node status -o json shows them) and remove the record")
				return nil
			}
			res, err := n.Disable()
			if errors.Is(err, kubelet.ErrNotSwitched) || errors.Is(err, kubelet.ErrNoKubelet) {
				if ifEnabled {
					return nil
				}
				return err
			}
			a.printResult(res)
			if err != nil {
				return err
			}
			if !f.restart {
				if res.Changed() || n.RestartNeeded() {
					fmt.Fprintln(a.streams.Out, "restart kubelet for it to take effect: systemctl daemon-reload; systemctl restart kubelet")
				}
				return nil
			}
			if !res.Changed() && !n.RestartNeeded() {
				return nil
			}
			l, err := n.Resolve()
			if err != nil {
				return err
			}
			return a.restarter(n, f).Restart(cmd.Context(), l, true)
		},
	}
	cmd.Flags().BoolVar(&ifEnabled, "if-enabled", false, "succeed without a change when kubelet is not switched (for package scripts)")
	f.addSwitchFlags(cmd)
	return cmd
}

func (a *app) restarter(n *kubelet.Node, f *nodeFlags) *kubelet.Restarter {
	return &kubelet.Restarter{Node: n, Timeout: f.timeout, Logf: func(format string, args ...any) {
		fmt.Fprintf(a.streams.Out, format+"\n", args...)
	}}
}

func (a *app) printResult(res *kubelet.Result) {
	if res == nil {
		return
	}
	for _, n := range res.Notes {
		fmt.Fprintf(a.streams.Out, "note: %s\n", n)
	}
	for _, e := range res.Edits {
		switch {
		case e.Setting.Kind == "" && e.After == nil:
			fmt.Fprintf(a.streams.Out, "%s: removed\n", e.Path)
		case e.Setting.Kind == "":
			fmt.Fprintf(a.streams.Out, "%s: written (kubelet starts after startgated)\n", e.Path)
		case e.After == nil:
			fmt.Fprintf(a.streams.Out, "%s: removed\n", e.Path)
		default:
			fmt.Fprintf(a.streams.Out, "%s: runtime endpoint %s (%s)\n", e.Path, e.Setting.Value, e.Setting.Kind)
		}
	}
}

// printPlan shows a plan as unified diffs (or JSON).
func (a *app) printPlan(p *kubelet.Plan) error {
	if a.output != "table" {
		return emit(a.streams.Out, a.output, p)
	}
	if len(p.Edits) == 0 {
		fmt.Fprintf(a.streams.Out, "kubelet already points at %s: nothing to change\n", p.Endpoint)
		return nil
	}
	for _, e := range p.Edits {
		from := e.Path
		if !e.Existed {
			from = "/dev/null"
		}
		d, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
			A: difflib.SplitLines(string(e.Before)), B: difflib.SplitLines(string(e.After)),
			FromFile: from, ToFile: e.Path, Context: 2,
		})
		if err != nil {
			return err
		}
		fmt.Fprint(a.streams.Out, d)
	}
	return nil
}

// checkUpstream refuses to point kubelet at startgated when startgated
// forwards to another runtime than the one kubelet uses now (CRI-O at
// /var/run/crio/crio.sock, a containerd elsewhere): kubelet would come
// back on another runtime, without its containers. The running daemon
// says where it forwards (Version's cri_upstream); when it does not
// answer, its configuration file does.
func (a *app) checkUpstream(ctx context.Context, f *nodeFlags, current, endpoint string) error {
	if current == endpoint || isStartgate(current) {
		return nil
	}
	upstream, from := "", ""
	if c, err := a.client(); err == nil {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		v, err := c.Version(cctx, &pb.VersionRequest{})
		cancel()
		if err == nil && v.CriUpstream != "" {
			upstream, from = v.CriUpstream, "the running startgated"
		}
	}
	if upstream == "" {
		path := f.startgatedConfig
		if f.root != "" {
			path = filepath.Join(f.root, path)
		}
		cfg, err := config.Load(path, false)
		if err != nil {
			return fmt.Errorf("startgated's configuration: %w", err)
		}
		upstream, from = cfg.CRI.ContainerdSocket, f.startgatedConfig
	}
	if socketPath(current) != socketPath("unix://"+upstream) {
		return fmt.Errorf("kubelet uses %s, but startgated forwards to %s (%s): set cri.containerd_socket = %q in %s, restart startgated, and run this again", current, upstream, from, socketPath(current), f.startgatedConfig)
	}
	return nil
}

// socketPath is an endpoint's socket path, /var/run read as /run.
func socketPath(ep string) string {
	p := filepath.Clean(strings.TrimPrefix(ep, "unix://"))
	if rest, ok := strings.CutPrefix(p, "/var/run/"); ok {
		p = "/run/" + rest
	}
	return p
}

func isStartgate(ep string) bool {
	return strings.HasPrefix(socketPath(ep), "/run/startgate/")
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
