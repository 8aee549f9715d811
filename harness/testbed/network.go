package testbed

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// CNIPluginDirs are where Debian's containernetworking-plugins (and
// upstream's tarball) put the CNI plugins.
var CNIPluginDirs = []string{"/usr/lib/cni", "/opt/cni/bin"}

// podNetworkConf is the testbed's conflist, in CNIConfDir.
const podNetworkConf = "10-startgate-testbed.conflist"

// setupPodNetwork gives the testbed a pod network when the host has the
// bridge and host-local CNI plugins: they are linked into the testbed's
// own bin_dir (the host's /etc/cni and /opt/cni stay out) and a conflist
// names a bridge of this testbed's own (sgbr + 6 hex digits) with a random
// /24 of 10.200.0.0/13, leases under DIR/cni/ipam. The bridge is the pods'
// gateway, so a kubelet on the host reaches pod IPs for HTTP and TCP
// probes. Without the plugins, host-network pods run as before and
// pod-network sandboxes fail.
func (tb *Testbed) setupPodNetwork() error {
	bin := filepath.Join(tb.dir, "cni", "bin")
	for _, d := range CNIPluginDirs {
		ents, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range ents {
			dst := filepath.Join(bin, e.Name())
			if _, err := os.Lstat(dst); err == nil || e.IsDir() {
				continue // the first directory that has it wins
			}
			if err := os.Symlink(filepath.Join(d, e.Name()), dst); err != nil {
				return fmt.Errorf("testbed: cni plugin: %w", err)
			}
		}
	}
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join(bin, p)); err != nil {
			return nil // no pod network here: host-network pods only
		}
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("testbed: %w", err)
	}
	bridge := fmt.Sprintf("sgbr%02x%02x%02x", b[0], b[1], b[2])
	subnet := fmt.Sprintf("10.%d.%d.0/24", 200+int(b[3]%8), b[2])
	conf := fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": "startgate-%[1]s",
  "plugins": [{
    "type": "bridge",
    "bridge": %[1]q,
    "isGateway": true,
    "ipMasq": false,
    "hairpinMode": true,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": %[2]q}]], "dataDir": %[3]q}
  }]
}
`, bridge, subnet, filepath.Join(tb.dir, "cni", "ipam"))
	if err := os.WriteFile(filepath.Join(tb.CNIConfDir(), podNetworkConf), []byte(conf), 0o644); err != nil {
		return fmt.Errorf("testbed: cni conf: %w", err)
	}
	tb.bridge, tb.podSubnet = bridge, subnet
	return nil
}

// deleteBridge removes the pod network's bridge, which the bridge plugin
// creates with the first pod and never removes.
func (tb *Testbed) deleteBridge(ctx context.Context) error {
	if tb.bridge == "" {
		return nil
	}
	out, err := exec.CommandContext(ctx, "ip", "link", "del", tb.bridge).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "Cannot find device") {
		return fmt.Errorf("testbed: ip link del %s: %v: %s", tb.bridge, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// PodSubnet is the pod network's /24, "" when the host has no CNI plugins
// (then only host-network pods run).
func (tb *Testbed) PodSubnet() string { return tb.podSubnet }
