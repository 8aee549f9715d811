package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"strconv"
	"time"

	"github.com/startgate/startgate/internal/server"
)

// Daemon is the [daemon] section.
type Daemon struct {
	// Socket is the gRPC API's unix socket, used when systemd does not
	// pass one in.
	Socket string `toml:"socket"`
	// SocketMode is an octal permission string such as "0660".
	SocketMode string `toml:"socket_mode"`
	// SocketGroup owns the socket and may call the mutating RPCs; a name
	// or a numeric gid, "" for the daemon's primary group.
	SocketGroup string `toml:"socket_group"`
	// LogLevel is a zap level: debug, info, warn or error.
	LogLevel string `toml:"log_level"`
	// LogFormat is auto (JSON unless stderr is a terminal), json or
	// console.
	LogFormat       string   `toml:"log_format"`
	ShutdownTimeout Duration `toml:"shutdown_timeout"`
	// The caps of what one caller (a uid) and all callers may hold open
	// on the API socket (server.Limits).
	MaxConnectionsPerPeer int `toml:"max_connections_per_peer"`
	MaxStreamsPerPeer     int `toml:"max_streams_per_peer"`
	MaxStreams            int `toml:"max_streams"`
	MaxWaitersPerPeer     int `toml:"max_waiters_per_peer"`
	// MemoryHigh: past this much heap and goroutine stacks the API sheds
	// load (server.Limits.MemoryHigh); 0 is off.
	MemoryHigh Size `toml:"memory_high"`
}

// Limits maps the caps onto the API server's.
func (d Daemon) Limits() server.Limits {
	return server.Limits{ConnectionsPerPeer: d.MaxConnectionsPerPeer, StreamsPerPeer: d.MaxStreamsPerPeer,
		Streams: d.MaxStreams, WaitersPerPeer: d.MaxWaitersPerPeer, MemoryHigh: int64(d.MemoryHigh)}
}

// Metrics is the [metrics] section.
type Metrics struct {
	// Listen is the TCP address of the HTTP endpoint serving /metrics,
	// /healthz, /livez and /readyz; "" turns it off.
	Listen string `toml:"listen"`
}

// DefaultMetricsListen is metrics.listen when the file says nothing.
//
// On by default, as kubelet's healthz (127.0.0.1:10248) and kube-proxy's
// metrics (127.0.0.1:10249) are: a node agent whose health nobody can
// read is one nobody notices failing. Loopback only, so that nothing is
// exposed beyond the node without the operator choosing it; a node-local
// agent (Prometheus agent, Alloy, the OpenTelemetry collector) scrapes
// it, or the operator sets the node's address.
//
// The port is fixed, because a scrape target's instance label includes
// it, and chosen clear of what else listens on a Kubernetes node:
// kubelet 10248/10250/10255, kube-proxy 10249/10256, the control plane's
// 10257/10259/2379/2380/6443, node_exporter 9100, CRI-O 9090, Docker
// 9323, containerd's usual metrics 1338, Calico 9091/9099, Cilium
// 9876/9879/9890/9962-9965, the OpenTelemetry Prometheus exporter 9464
// (the Prometheus exporter range 9100-9999 is fully allocated), and
// below Linux's ephemeral range (32768-60999), so an outgoing connection
// never holds it. A port taken anyway is not fatal: startgated logs it
// and retries with a backoff, and the CRI socket never waits for it.
const DefaultMetricsListen = "127.0.0.1:10366"

func defaultDaemon() Daemon {
	l := server.DefaultLimits()
	return Daemon{
		Socket:                "/run/startgate/startgate.sock",
		SocketMode:            "0660",
		SocketGroup:           "",
		LogLevel:              "info",
		LogFormat:             "auto",
		ShutdownTimeout:       Duration(10 * time.Second),
		MaxConnectionsPerPeer: l.ConnectionsPerPeer,
		MaxStreamsPerPeer:     l.StreamsPerPeer,
		MaxStreams:            l.Streams,
		MaxWaitersPerPeer:     l.WaitersPerPeer,
		MemoryHigh:            Size(l.MemoryHigh),
	}
}

func defaultMetrics() Metrics { return Metrics{Listen: DefaultMetricsListen} }

var daemonDocs = map[string]string{
	"daemon":                          "The daemon process and its API socket.",
	"daemon.socket":                   "gRPC API socket, used when systemd does not pass one in (socket activation).",
	"daemon.socket_mode":              "Octal permissions of the socket this daemon creates.",
	"daemon.socket_group":             "Group owning the socket and allowed to call mutating RPCs besides root:\na name or a numeric gid; \"\" is the daemon's primary group.",
	"daemon.log_level":                "debug, info, warn or error.",
	"daemon.log_format":               "auto (JSON unless stderr is a terminal), json or console.",
	"daemon.shutdown_timeout":         "How long shutdown waits for in-flight calls before cutting them.",
	"daemon.max_connections_per_peer": "Most API connections one caller (a uid) may hold open; more are closed.",
	"daemon.max_streams_per_peer": "Most streams (watch, acquire) one caller may hold open; more are refused\n" +
		"(ResourceExhausted, naming this key).",
	"daemon.max_streams":          "Most streams all callers but root may hold open together.",
	"daemon.max_waiters_per_peer": "Most slots one caller may have asked for and not yet ended, over all its\nstreams (admission.max_queue caps all callers together).",
	"daemon.memory_high": "Past this much Go heap and goroutine stacks the daemon sheds load: new API\n" +
		"streams and waiters of every caller but root are refused (ResourceExhausted)\n" +
		"until it falls back; open ones and the CRI proxy are untouched. \"0\" is off.\n" +
		"Why not a cgroup MemoryMax: the kernel would kill the daemon at it.",
}

var metricsDocs = map[string]string{
	"metrics": "Prometheus metrics and the health endpoints.",
	"metrics.listen": "IP:port of the HTTP endpoint serving /metrics, /healthz, /livez and /readyz;\n" +
		"\"\" is off. The loopback default keeps it on the node. A port in use is logged\n" +
		"and retried with a backoff; the CRI socket never waits for it.",
}

// validate checks the [metrics] section; prefetch.notifications checks
// that it does not share its address.
func (m Metrics) validate() []error {
	var errs problems
	if m.Listen != "" {
		errs.listenAddr("metrics.listen", m.Listen)
	}
	return errs
}

// validate checks the [daemon] section.
func (d Daemon) validate() []error {
	var errs problems
	if d.Socket == "" {
		errs.add("daemon.socket", "must not be empty")
	}
	if _, err := parseMode(d.SocketMode); err != nil {
		errs.add("daemon.socket_mode", "%q %v", d.SocketMode, err)
	}
	if _, err := lookupGroup(d.SocketGroup); err != nil {
		errs.add("daemon.socket_group", "%q %v", d.SocketGroup, err)
	}
	switch d.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs.add("daemon.log_level", "%q not one of debug, info, warn, error", d.LogLevel)
	}
	switch d.LogFormat {
	case "auto", "json", "console":
	default:
		errs.add("daemon.log_format", "%q not one of auto, json, console", d.LogFormat)
	}
	errs.duration("daemon.shutdown_timeout", d.ShutdownTimeout, 100*time.Millisecond, 10*time.Minute)
	errs.count("daemon.max_connections_per_peer", d.MaxConnectionsPerPeer, 1, 100_000)
	errs.count("daemon.max_streams_per_peer", d.MaxStreamsPerPeer, 1, 100_000)
	errs.count("daemon.max_streams", d.MaxStreams, 1, 1_000_000)
	errs.count("daemon.max_waiters_per_peer", d.MaxWaitersPerPeer, 1, 1_000_000)
	if d.MemoryHigh != 0 && (d.MemoryHigh < 16<<20 || d.MemoryHigh > 1<<40) {
		errs.add("daemon.memory_high", "%s out of range: \"0\" (off) or [16MiB, 1TiB]", d.MemoryHigh)
	}
	return errs
}

// SocketFileMode parses daemon.socket_mode; call after Validate.
func (c *Config) SocketFileMode() (fs.FileMode, error) {
	m, err := parseMode(c.Daemon.SocketMode)
	if err != nil {
		return 0, fmt.Errorf("config: daemon.socket_mode: %q %w", c.Daemon.SocketMode, err)
	}
	return m, nil
}

// SocketGID resolves daemon.socket_group to a gid: the daemon's primary
// group when empty.
func (c *Config) SocketGID() (int, error) {
	gid, err := lookupGroup(c.Daemon.SocketGroup)
	if err != nil {
		return 0, fmt.Errorf("config: daemon.socket_group: %q %w", c.Daemon.SocketGroup, err)
	}
	return gid, nil
}

func parseMode(s string) (fs.FileMode, error) {
	if s == "" {
		return 0, errors.New("must not be empty")
	}
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil {
		return 0, errors.New("is not an octal mode")
	}
	if m > 0o777 {
		return 0, errors.New("has bits beyond 0777")
	}
	if m&0o600 != 0o600 {
		// The daemon's own user must keep read and write: a socket it
		// cannot use itself is a mistake, not a policy.
		return 0, errors.New("must grant the owner read and write (0600)")
	}
	return fs.FileMode(m), nil
}

func lookupGroup(s string) (int, error) {
	if s == "" {
		return os.Getgid(), nil
	}
	if gid, err := strconv.Atoi(s); err == nil {
		if gid < 0 {
			return 0, errors.New("is a negative gid")
		}
		return gid, nil
	}
	g, err := user.LookupGroup(s)
	if err != nil {
		return 0, errors.New("is not a known group")
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("has non-numeric gid %q", g.Gid)
	}
	return gid, nil
}
