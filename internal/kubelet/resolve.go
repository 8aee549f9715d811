package kubelet

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Endpoints are the two values the switch moves between.
const (
	// ContainerdEndpoint is kubelet's default containerRuntimeEndpoint
	// (k8s.io/kubelet/config/v1beta1's defaulting) and containerd's socket.
	ContainerdEndpoint = "unix:///run/containerd/containerd.sock"
	StartgateEndpoint  = "unix:///run/startgate/cri.sock"
)

// Kinds of places that set the endpoint.
const (
	// KindFlag: --container-runtime-endpoint on the command line
	// systemd builds: in the unit's ExecStart= or in a variable of an
	// Environment=/EnvironmentFile= it substitutes.
	KindFlag = "flag"
	// KindDropIn: containerRuntimeEndpoint in a --config-dir drop-in.
	KindDropIn = "drop-in"
	// KindConfig: containerRuntimeEndpoint in the --config file.
	KindConfig = "config"
	// KindCommandLine: the flag on a running kubelet's command line, on
	// a node without a kubelet.service unit; not a file.
	KindCommandLine = "command-line"
)

// Setting is one place that sets the endpoint.
type Setting struct {
	File  string `json:"file"`
	Kind  string `json:"kind"`
	Value string `json:"value"`
	// Via says how the file reaches kubelet: "$KUBELET_KUBEADM_ARGS",
	// "ExecStart", "--config", "--config-dir".
	Via string `json:"via,omitempty"`
}

// Layout is where this node's kubelet takes its runtime endpoint from,
// computed as kubelet computes it at its next start: the command line
// systemd builds from kubelet.service (ExecStart=, Environment=,
// EnvironmentFile=, drop-ins), then kubelet's precedence: flags over
// --config-dir drop-ins (in their order, the last that sets it wins)
// over the --config file over the default.
type Layout struct {
	// Unit is kubelet's unit file, "" when kubelet is not a systemd
	// unit here (then Args is the running kubelet's command line).
	Unit        string   `json:"unit,omitempty"`
	UnitDropIns []string `json:"unitDropIns,omitempty"`
	EnvFiles    []string `json:"environmentFiles,omitempty"`
	Args        []Arg    `json:"args"`
	ConfigFile  string   `json:"configFile,omitempty"`
	ConfigDir   string   `json:"configDir,omitempty"`
	// ConfigDropIns are ConfigDir's files in kubelet's merge order.
	ConfigDropIns []string `json:"configDropIns,omitempty"`
	// Settings are every place that sets the endpoint, the one that wins
	// first.
	Settings []Setting `json:"settings"`
	// Effective is the endpoint kubelet's next start uses.
	Effective string `json:"effective"`
	// ImageEndpoint is imageServiceEndpoint or its flag, when set: image
	// calls then go there, not to Effective.
	ImageEndpoint string `json:"imageEndpoint,omitempty"`
	// Kubeconfig is kubelet's --kubeconfig (its API credentials).
	Kubeconfig string `json:"kubeconfig,omitempty"`
	// NodeName is --hostname-override, else the host name, lower-cased
	// as kubelet does.
	NodeName string `json:"nodeName,omitempty"`
	// Healthz is kubelet's healthz address (host:port), "" when its
	// healthzPort is 0.
	Healthz string `json:"healthz,omitempty"`

	configs map[string]*configFile
}

// ErrNoKubelet is Resolve's error on a node with neither a kubelet
// unit nor a running kubelet.
var ErrNoKubelet = errors.New("kubelet: no kubelet on this node")

// ErrUnsupported is the error for a layout the switch refuses.
var ErrUnsupported = errors.New("kubelet: layout not supported")

// embedded are distributions that run kubelet inside their own binary
// with an embedded containerd: k3s and RKE2. They start that containerd
// only when no container-runtime-endpoint is set, so pointing their
// kubelet at startgated would stop the node's runtime. Refused.
var embedded = []struct{ unit, config string }{
	{"k3s.service", "/etc/rancher/k3s/config.yaml"},
	{"k3s-agent.service", "/etc/rancher/k3s/config.yaml"},
	{"rke2-server.service", "/etc/rancher/rke2/config.yaml"},
	{"rke2-agent.service", "/etc/rancher/rke2/config.yaml"},
}

// Resolve computes the Layout.
func (n *Node) Resolve() (*Layout, error) {
	l := &Layout{configs: map[string]*configFile{}}
	uc, err := n.resolveUnit(KubeletUnit)
	switch {
	case errors.Is(err, ErrNoUnit):
		for _, e := range embedded {
			if n.exists(filepath.Join("/etc/systemd/system", e.unit)) || n.exists(filepath.Join("/usr/lib/systemd/system", e.unit)) ||
				n.exists(filepath.Join("/lib/systemd/system", e.unit)) || n.exists(filepath.Join("/usr/local/lib/systemd/system", e.unit)) || n.exists(e.config) {
				return nil, fmt.Errorf("%w: this node runs kubelet inside %s (%s): it starts its embedded containerd only while no container-runtime-endpoint is set, so pointing it at startgated would leave the node without a runtime. startgate does not switch k3s or RKE2 nodes; see docs/kubelet.md, \"k3s and RKE2\"", ErrUnsupported, strings.TrimSuffix(e.unit, ".service"), e.unit)
			}
		}
		ks := n.kubelets()
		switch len(ks) {
		case 0:
			return nil, fmt.Errorf("%w: no %s unit (looked in %s) and no kubelet running: nothing to switch", ErrNoKubelet, KubeletUnit, strings.Join(unitDirs, ", "))
		case 1:
		default:
			pids := make([]string, len(ks))
			for i, k := range ks {
				pids[i] = strconv.Itoa(k.Pid)
			}
			return nil, fmt.Errorf("%w: no %s unit, and %d kubelets run here (pids %s): which one is this node's cannot be told; give kubelet a %s unit", ErrUnsupported, KubeletUnit, len(ks), strings.Join(pids, ", "), KubeletUnit)
		}
		for _, a := range ks[0].Args {
			l.Args = append(l.Args, Arg{Value: a, Via: "command line of pid " + strconv.Itoa(ks[0].Pid)})
		}
	case err != nil:
		return nil, err
	default:
		l.Unit, l.UnitDropIns, l.EnvFiles = uc.File, uc.DropIns, uc.EnvFiles
		l.Args = uc.Args[1:] // without the program
	}

	kf, err := parseKubeletFlags(l.Args)
	if err != nil {
		return nil, err
	}
	abs := func(p string) string {
		// kubelet resolves a relative path against its working
		// directory, / under systemd.
		if p != "" && !filepath.IsAbs(p) {
			return filepath.Join("/", p)
		}
		return p
	}
	l.ConfigFile = abs(kf.values[flagConfig])
	if n.ConfigFile != "" {
		l.ConfigFile = n.ConfigFile
	}
	l.ConfigDir = abs(kf.values[flagConfigDir])
	l.Kubeconfig = abs(kf.values[flagKubeconfig])
	l.NodeName = strings.ToLower(kf.values[flagHostname])
	if l.NodeName == "" {
		h, _ := os.Hostname()
		l.NodeName = strings.ToLower(h)
	}

	// The config files, in kubelet's merge order.
	var ordered []*configFile
	if l.ConfigFile != "" {
		b, err := n.readFile(l.ConfigFile)
		if err != nil {
			return nil, fmt.Errorf("kubelet: --config %s cannot be read, so kubelet would not start: %w", l.ConfigFile, err)
		}
		cf, err := readConfig(b, l.ConfigFile)
		if err != nil {
			return nil, err
		}
		ordered = append(ordered, cf)
	}
	if l.ConfigDir != "" {
		if l.ConfigDropIns, err = n.dropInFiles(l.ConfigDir); err != nil {
			return nil, err
		}
		for _, p := range l.ConfigDropIns {
			b, err := n.readFile(p)
			if err != nil {
				return nil, fmt.Errorf("kubelet: %w", err)
			}
			cf, err := readConfig(b, p)
			if err != nil {
				return nil, err
			}
			ordered = append(ordered, cf)
		}
	}
	healthAddr, healthPort := "127.0.0.1", int32(10248) // kubelet's defaults
	for _, cf := range ordered {
		l.configs[cf.Path] = cf
		if cf.Config.HealthzBindAddress != "" {
			healthAddr = cf.Config.HealthzBindAddress
		}
		if cf.Config.HealthzPort != nil {
			healthPort = *cf.Config.HealthzPort
		}
		if cf.SetsImage {
			l.ImageEndpoint = cf.Image
		}
	}
	if v, ok := kf.values[flagImageEndpoint]; ok {
		l.ImageEndpoint = v
	}
	if healthPort > 0 {
		l.Healthz = net.JoinHostPort(healthAddr, strconv.Itoa(int(healthPort)))
	}

	// Every place that sets the endpoint, the winner first: the last
	// flag, then the drop-ins from the last, then the file.
	for i := len(kf.endpointArgs) - 1; i >= 0; i-- {
		a := l.Args[kf.endpointArgs[i]]
		s := Setting{File: a.File, Kind: KindFlag, Value: endpointValue(a), Via: a.Via}
		if l.Unit == "" {
			s.Kind = KindCommandLine
		}
		l.Settings = append(l.Settings, s)
	}
	for i := len(ordered) - 1; i >= 0; i-- {
		cf := ordered[i]
		if !cf.SetsEndpoint {
			continue
		}
		s := Setting{File: cf.Path, Kind: KindConfig, Value: cf.Endpoint, Via: "--config"}
		if cf.Path != l.ConfigFile {
			s.Kind, s.Via = KindDropIn, "--config-dir"
		}
		l.Settings = append(l.Settings, s)
	}
	l.Effective = ContainerdEndpoint
	if len(l.Settings) > 0 {
		l.Effective = l.Settings[0].Value
	}
	return l, nil
}

// exists: p is there under Root.
func (n *Node) exists(p string) bool {
	_, err := os.Lstat(n.path(p))
	return err == nil
}
