package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/startgate/startgate/harness/testbed"
	"github.com/startgate/startgate/internal/kubelet"
)

// kubeletGrace is how long a stopping kubelet gets before SIGKILL. It
// holds no state worth a clean exit (pods stay with containerd), but a
// clean exit keeps its log readable.
const kubeletGrace = 10 * time.Second

// kubeletConfig renders the KubeletConfiguration; doc.go says why each
// setting is what it is.
func (c *Cluster) kubeletConfig(port int) string {
	k := func(name string) string { return filepath.Join(c.pkiDir(), name) }
	q := strconv.Quote // a JSON string is a YAML string
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: %s
address: %s
port: %d
readOnlyPort: 0
healthzPort: 0
tlsCertFile: %s
tlsPrivateKeyFile: %s
rotateCertificates: false
serverTLSBootstrap: false
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
  x509:
    clientCAFile: %s
authorization:
  mode: AlwaysAllow
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
makeIPTablesUtilChains: false
evictionHard:
  memory.available: 100Mi
  nodefs.available: "1%%"
  nodefs.inodesFree: "1%%"
  imagefs.available: "1%%"
  imagefs.inodesFree: "1%%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
staticPodPath: %s
fileCheckFrequency: 5s
podLogsDir: %s
volumePluginDir: %s
clusterDomain: cluster.local
maxPods: 250
`,
		q("unix://"+c.opts.RuntimeEndpoint),
		q(c.nodeIP.String()), port,
		q(k(kubeletCrt)), q(k(kubeletKey)),
		q(k(caCrt)),
		q(c.StaticPodDir()),
		q(filepath.Join(c.dir, "pod-logs")),
		q(filepath.Join(c.dir, "volume-plugins")),
	)
	switch n := c.opts.ParallelImagePulls; {
	case n > 0:
		fmt.Fprintf(&b, "serializeImagePulls: false\nmaxParallelImagePulls: %d\n", n)
	case n == AllImagePulls:
		b.WriteString("serializeImagePulls: false\n")
	}
	if q := c.opts.RegistryPullQPS; q != nil {
		fmt.Fprintf(&b, "registryPullQPS: %d\n", *q)
	}
	if d := c.opts.RuntimeRequestTimeout; d > 0 {
		fmt.Fprintf(&b, "runtimeRequestTimeout: %s\n", d)
	}
	if len(c.opts.FeatureGates) > 0 {
		names := make([]string, 0, len(c.opts.FeatureGates))
		for n := range c.opts.FeatureGates {
			names = append(names, n)
		}
		sort.Strings(names)
		b.WriteString("featureGates:\n")
		for _, n := range names {
			fmt.Fprintf(&b, "  %s: %t\n", n, c.opts.FeatureGates[n])
		}
	}
	return b.String()
}

// KubeletConfigPath is the kubelet's KubeletConfiguration file.
func (c *Cluster) KubeletConfigPath() string { return filepath.Join(c.dir, "kubelet.yaml") }

// StartKubelet starts the kubelet (after Start with Options.NoKubelet,
// or again after StopKubelet) and waits until it has registered the node,
// or reported its status since this start if it had, and serves on its
// port. It does not wait for the node to be Ready: see WaitNodeReady.
func (c *Cluster) StartKubelet(ctx context.Context) error {
	c.kubeletMu.Lock()
	defer c.kubeletMu.Unlock()
	if c.kubelet != nil && !c.kubelet.hasExited() {
		return errors.New("cluster: kubelet is running")
	}
	if c.opts.RuntimeEndpoint == "" {
		return errors.New("cluster: Options.RuntimeEndpoint is required to start the kubelet")
	}
	cfgPath := c.KubeletConfigPath()
	if c.opts.EndpointFromFile {
		if b, err := os.ReadFile(cfgPath); err == nil {
			if ep := kubelet.ConfigEndpoint(b); ep != "" {
				c.opts.RuntimeEndpoint = strings.TrimPrefix(ep, "unix://")
			}
		}
	}
	for attempt := 1; ; attempt++ {
		// A restart keeps the port unless it was taken meanwhile.
		port := c.kubeletPort
		if port == 0 || attempt > 1 {
			var err error
			if port, err = freePort(c.nodeIP.String()); err != nil {
				return fmt.Errorf("cluster: kubelet: %w", err)
			}
		}
		if err := os.WriteFile(cfgPath, []byte(c.kubeletConfig(port)), 0o600); err != nil {
			return fmt.Errorf("cluster: kubelet: %w", err)
		}
		args := []string{
			"--config", cfgPath,
			"--kubeconfig", c.NodeKubeconfig(),
			"--root-dir", filepath.Join(c.dir, "kubelet"),
			"--cert-dir", filepath.Join(c.dir, "kubelet", "pki"),
			"--hostname-override", c.nodeName,
			"--node-ip", c.nodeIP.String(),
			"--v", "2",
		}
		started := time.Now()
		name, pargs, err := testbed.Pinned(c.opts.KubeletCPUs, filepath.Join(c.bin, Kubelet), args)
		if err != nil {
			return err
		}
		p, err := startComponent(Kubelet, c.dir, c.LogPath(Kubelet), name, pargs)
		if err != nil {
			return err
		}
		c.kubelet, c.kubeletPort = p, port
		// API times have second precision: a heartbeat in the second the
		// kubelet started counts as its own.
		c.kubeletStarted = started.Truncate(time.Second)
		addr := net.JoinHostPort(c.nodeIP.String(), strconv.Itoa(port))
		err = p.waitUp(ctx, func(ctx context.Context) error {
			if err := c.nodeReported(ctx, c.kubeletStarted); err != nil {
				return err
			}
			// Serving too: the apiserver's logs and exec go there.
			conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil {
				return err
			}
			return conn.Close()
		})
		if errors.Is(err, errPortTaken) && attempt < portAttempts {
			_ = p.stop(ctx, 0)
			continue
		}
		if err != nil {
			_ = p.stop(ctx, 0)
		}
		return err
	}
}

// KubeletSettings are what may change between two runs of the kubelet.
type KubeletSettings struct {
	// RuntimeEndpoint is Options.RuntimeEndpoint.
	RuntimeEndpoint string
	// ParallelImagePulls is Options.ParallelImagePulls.
	ParallelImagePulls int
	// RegistryPullQPS is Options.RegistryPullQPS.
	RegistryPullQPS *int32
}

// AllImagePulls as ParallelImagePulls: serializeImagePulls false with no
// maxParallelImagePulls.
const AllImagePulls = -1

// SetKubelet changes the settings the next StartKubelet runs the kubelet
// with; the kubelet must be stopped. A benchmark points one node's
// kubelet at containerd, then at startgated, with serialized pulls and
// without.
func (c *Cluster) SetKubelet(s KubeletSettings) error {
	c.kubeletMu.Lock()
	defer c.kubeletMu.Unlock()
	if c.kubelet != nil && !c.kubelet.hasExited() {
		return errors.New("cluster: SetKubelet: the kubelet is running")
	}
	if s.RuntimeEndpoint == "" || s.ParallelImagePulls < AllImagePulls || (s.RegistryPullQPS != nil && *s.RegistryPullQPS < 0) {
		return fmt.Errorf("cluster: SetKubelet: runtime endpoint %q, parallel pulls %d, registry QPS %v: want a socket, AllImagePulls or 0 or more, none or 0 or more",
			s.RuntimeEndpoint, s.ParallelImagePulls, s.RegistryPullQPS)
	}
	c.opts.RuntimeEndpoint, c.opts.ParallelImagePulls, c.opts.RegistryPullQPS = s.RuntimeEndpoint, s.ParallelImagePulls, s.RegistryPullQPS
	return nil
}

// StopKubelet stops the kubelet (SIGTERM, SIGKILL after 10 s). Its pods'
// containers keep running under the runtime; StartKubelet picks them up.
func (c *Cluster) StopKubelet(ctx context.Context) error {
	c.kubeletMu.Lock()
	defer c.kubeletMu.Unlock()
	if c.kubelet == nil {
		return nil
	}
	return c.kubelet.stop(ctx, kubeletGrace)
}

// cniConfName sorts after the usual 10-*.conflist: a runtime with a conf
// dir of its own keeps its network as the default.
const cniConfName = "99-startgate-cluster.conflist"

// writeCNIConf writes a loopback conflist into the runtime's CNI conf dir
// when it holds none: containerd reports NetworkReady as soon as a config
// loads, and nothing runs the plugin for hostNetwork pods. A runtime with
// a network of its own (the testbed's bridge, when the host has the CNI
// plugins) keeps it: pods then get IPs and HTTP probes.
func (c *Cluster) writeCNIConf(dir string) error {
	for _, pat := range []string{"*.conflist", "*.conf", "*.json"} {
		if m, _ := filepath.Glob(filepath.Join(dir, pat)); len(m) > 0 {
			return nil
		}
	}
	conf := `{
  "cniVersion": "0.4.0",
  "name": "startgate-cluster",
  "plugins": [{"type": "loopback"}]
}
`
	path := filepath.Join(dir, cniConfName)
	tmp := path + ".tmp" // libcni loads only .conf, .conflist and .json
	if err := os.WriteFile(tmp, []byte(conf), 0o644); err != nil {
		return fmt.Errorf("cluster: cni conf: %w", err)
	}
	// containerd watches the dir: a rename, not a half-written file.
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("cluster: cni conf: %w", err)
	}
	c.cniFile = path
	return nil
}
