package daemon

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/startgate/startgate/internal/config"
	"github.com/startgate/startgate/internal/version"
)

// Main runs the startgated command line and returns the exit code.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	cmd := NewCommand()
	cmd.SetArgs(args)
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "startgated:", err)
		return 1
	}
	return 0
}

// flags are the command line's overrides of the config file.
type flags struct {
	config           string
	socket           string
	criSocket        string
	containerdSocket string
	metricsListen    string
	logLevel         string
}

// NewCommand returns the startgated command tree.
func NewCommand() *cobra.Command {
	var f flags
	root := &cobra.Command{
		Use:   "startgated",
		Short: "Admit container starts at the rate the node can take them",
		Long: "startgated gates container starts on this node through a token bucket and an\n" +
			"in-flight limit sized from Linux pressure stall information, and serves the\n" +
			"startgate gRPC API on a unix socket.\n\n" +
			"With the CRI proxy on (cri.enabled, or --cri-socket or --containerd-socket given),\n" +
			"it also serves the CRI on its own socket for kubelet and forwards every call to\n" +
			"containerd, gating the ones that start containers. containerd need not be up:\n" +
			"calls get Unavailable until it is, and the proxy reconnects by itself.",
		Example: "  startgated --socket /run/startgate/startgate.sock \\\n" +
			"    --cri-socket /run/startgate/cri.sock --containerd-socket /run/containerd/containerd.sock",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.Get().String(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, found, err := loadConfig(cmd, f)
			if err != nil {
				return err
			}
			log, level, err := NewLogger(cfg.Daemon.LogLevel, cfg.Daemon.LogFormat, os.Stderr)
			if err != nil {
				return err
			}
			defer log.Sync() //nolint:errcheck // stderr sync fails on some terminals; nothing to do about it.
			if !found {
				warnMissing(log, f.config)
			}
			routeContainerdLogs(log)
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			return Run(cmd.Context(), cfg, log, &Reload{
				Signals: hup,
				Load: func() (*config.Config, error) {
					cfg, found, err := loadConfig(cmd, f)
					if err == nil && !found {
						warnMissing(log, f.config)
					}
					return cfg, err
				},
				Level: level,
			})
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&f.config, "config", config.DefaultPath, "config file; a missing file at the default path means defaults")
	overrideFlags(root.Flags(), &f)

	cfgCmd := &cobra.Command{
		Use:   "config",
		Short: "Print or check the configuration",
		Args:  cobra.NoArgs,
	}
	cfgCmd.AddCommand(&cobra.Command{
		Use:   "default",
		Short: "Print the default configuration as TOML",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return config.DefaultConfig().WriteTOML(cmd.OutOrStdout())
		},
	})
	var quiet bool
	check := &cobra.Command{
		Use:   "check",
		Short: "Validate a config file and print the effective configuration",
		Long: "Validate a config file and print the effective configuration. It refuses\n" +
			"exactly what startgated refuses at start, by the same code: every key and value,\n" +
			"the command-line overrides, and the files the config names (prefetch's token\n" +
			"and docker config, pressure.proc_root). The exit status is 1 when the daemon\n" +
			"would refuse to start; the error names the key.\n\n" +
			"A missing file at the default path is not refused, as the daemon starts on the\n" +
			"defaults then, but it is said on stderr, even with --quiet.\n\n" +
			"The unit's ExecReload runs it (--quiet) before signalling the daemon, so that\n" +
			"`systemctl reload startgated` fails on a bad edit and changes nothing.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, found, err := loadConfig(cmd, f)
			if err != nil {
				return err
			}
			if _, err := readStartInputs(cfg); err != nil {
				return err
			}
			if !found {
				fmt.Fprintf(stderr(cmd), "startgated: WARNING: %s does not exist: startgated runs on the built-in defaults"+
					" (`startgated config default` prints them)\n", f.config)
			}
			if quiet {
				return nil
			}
			out := cmd.OutOrStdout()
			if found {
				fmt.Fprintf(out, "# %s: ok\n", f.config)
			} else {
				fmt.Fprintf(out, "# %s: does not exist; these are the defaults startgated runs on\n", f.config)
			}
			return cfg.WriteTOML(out)
		},
	}
	check.Flags().BoolVarP(&quiet, "quiet", "q", false, "print nothing when the file is valid")
	// The daemon's overrides, so that a command line can be checked
	// whole: `startgated config check --metrics-listen X` refuses what
	// `startgated --metrics-listen X` would.
	overrideFlags(check.Flags(), &f)
	cfgCmd.AddCommand(check)
	root.AddCommand(cfgCmd)
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetOut(os.Stdout)
	root.SetErr(io.Discard) // Main prints the one error line itself.
	return root
}

// overrideFlags adds the command line's overrides of the file to fs.
func overrideFlags(fs *pflag.FlagSet, f *flags) {
	fs.StringVar(&f.socket, "socket", "", "API socket path (overrides daemon.socket)")
	fs.StringVar(&f.criSocket, "cri-socket", "", "CRI proxy socket path for kubelet (overrides cri.socket; turns the proxy on)")
	fs.StringVar(&f.containerdSocket, "containerd-socket", "", "containerd's CRI socket the proxy forwards to (overrides cri.containerd_socket; turns the proxy on)")
	fs.StringVar(&f.metricsListen, "metrics-listen", "", `IP:port of /metrics, /healthz, /livez and /readyz (overrides metrics.listen, default `+config.DefaultMetricsListen+`; "" turns it off)`)
	fs.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error (overrides daemon.log_level)")
}

// warnMissing says, at start and at each reload, that the daemon runs
// on the defaults because its file is not there.
func warnMissing(log *zap.Logger, path string) {
	log.Warn("config file not found: running on the built-in defaults (startgated config default prints them)",
		zap.String("config", path))
}

// stderr is where config check's warnings go: cobra's error writer when
// a caller (a test) set one, else the process's stderr, which Main
// leaves to its own error line.
func stderr(cmd *cobra.Command) io.Writer {
	if w := cmd.ErrOrStderr(); w != io.Discard {
		return w
	}
	return os.Stderr
}

// loadConfig reads the file and applies the flags the operator set.
// found is false when the file was not there and the defaults apply.
func loadConfig(cmd *cobra.Command, f flags) (cfg *config.Config, found bool, err error) {
	// The default path may be absent even when named, so that the unit's
	// ExecStart can spell it out and a node without a file still starts.
	explicit := cmd.Flags().Changed("config") && f.config != config.DefaultPath
	cfg, found, err = config.LoadFound(f.config, explicit)
	if err != nil {
		return nil, found, err
	}
	fl := cmd.Flags()
	// A path on the command line is the caller's, relative to where it
	// runs; the config's are checked to be absolute.
	for _, p := range []*string{&f.socket, &f.criSocket, &f.containerdSocket} {
		if *p != "" && !filepath.IsAbs(*p) {
			abs, err := filepath.Abs(*p)
			if err != nil {
				return nil, found, fmt.Errorf("config: %s: %w", *p, err)
			}
			*p = abs
		}
	}
	if fl.Lookup("socket") != nil && fl.Changed("socket") {
		cfg.Daemon.Socket = f.socket
	}
	// Naming either CRI socket asks for the proxy: a flag that silently
	// did nothing without cri.enabled = true in a file would be a trap.
	if fl.Lookup("cri-socket") != nil && fl.Changed("cri-socket") {
		cfg.CRI.Socket = f.criSocket
		cfg.CRI.Enabled = true
	}
	if fl.Lookup("containerd-socket") != nil && fl.Changed("containerd-socket") {
		cfg.CRI.ContainerdSocket = f.containerdSocket
		cfg.CRI.Enabled = true
	}
	if fl.Lookup("metrics-listen") != nil && fl.Changed("metrics-listen") {
		cfg.Metrics.Listen = f.metricsListen
	}
	if fl.Lookup("log-level") != nil && fl.Changed("log-level") {
		cfg.Daemon.LogLevel = f.logLevel
	}
	if err := cfg.Validate(); err != nil {
		return nil, found, fmt.Errorf("config: after command-line overrides: %w", err)
	}
	return cfg, found, nil
}
