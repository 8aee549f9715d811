package kubebench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing/fstest"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/startgate/startgate/harness/testbed"
)

// pod-pacemaker (github.com/woehrl01/pod-pacemaker, built by
// hack/pacemaker/build.sh) runs as its Helm chart runs it, but as host
// processes: its CNI plugin chained after the testbed's bridge (what its
// init container writes, a copy of the first conflist with the plugin
// appended), and its node daemon with a ServiceAccount token of its own
// (it reads only the in-cluster config, so a private mount namespace
// puts the token where client-go looks). Its slot is taken in the CNI ADD
// of each sandbox (before the image pull) and released when every
// container has Started (after a startup probe, when the pod has one), as
// its code does: no change to it.

// pacemakerConfName sorts before the testbed's 10-*.conflist: containerd
// loads the first file of its conf dir.
const pacemakerConfName = "05-startgate-pod-pacemaker.conflist"

// pacemakerMaxWait is the plugin's maxWaitTimeInSeconds: the chart's 120.
const pacemakerMaxWait = 120

// pacemakerManifests are the objects its chart installs, minus the
// DaemonSet: the CRD (the fields its daemon reads), its ServiceAccount
// and ClusterRole (the chart's rules).
var pacemakerManifests = fstest.MapFS{"pacemaker/objects.yaml": {Data: []byte(`apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: pacemakerconfigs.woehrl.net
spec:
  group: woehrl.net
  scope: Cluster
  names: {plural: pacemakerconfigs, singular: pacemakerconfig, kind: PacemakerConfig}
  versions:
  - name: v1alpha
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: pod-pacemaker, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: pod-pacemaker}
rules:
- apiGroups: [""]
  resources: ["pods", "pods/status"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["patch", "update", "get", "list", "watch"]
- apiGroups: ["woehrl.net"]
  resources: ["pacemakerconfigs"]
  verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: pod-pacemaker}
subjects: [{kind: ServiceAccount, name: pod-pacemaker, namespace: kube-system}]
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: pod-pacemaker}
`)}}

// pacemakerConfig is the mode's PacemakerConfig: the chart's default
// (maxConcurrent perCore 0.5) or a fixed concurrency.
func pacemakerConfig(m Mode) string {
	limit := `perCore: "0.5"`
	if m.Limit > 0 {
		limit = fmt.Sprintf("value: %d", m.Limit)
	}
	return fmt.Sprintf(`apiVersion: woehrl.net/v1alpha
kind: PacemakerConfig
metadata: {name: default-pacemaker-config}
spec:
  priority: 0
  nodeSelector: {}
  throttleConfig:
    maxConcurrent: {%s}
`, limit)
}

// pacemaker is the peer's node daemon and chained plugin on the node.
type pacemaker struct {
	installed bool
	cmd       *exec.Cmd
	exited    chan struct{}
	conf      string // the chained conflist, while written
}

func (n *localNode) pacemakerDir() string { return filepath.Join(n.dir, "pacemaker") }

// startPacemaker installs the peer once (objects, token, plugin), then
// applies m's PacemakerConfig, starts the daemon, waits for its socket
// and chains the plugin on the pod network. The Node must exist.
func (n *localNode) startPacemaker(ctx context.Context, m Mode) (err error) {
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("kubebench: mode %s: pod-pacemaker: %w", m.Name, err), n.stopPacemaker(ctx))
		}
	}()
	dir := n.pacemakerDir()
	if !n.pm.installed {
		if err := n.installPacemaker(ctx, dir); err != nil {
			return err
		}
		n.pm.installed = true
	}
	cfg := fstest.MapFS{"config/config.yaml": {Data: []byte(pacemakerConfig(m))}}
	if err := n.cluster.Apply(ctx, cfg, "config"); err != nil {
		return fmt.Errorf("apply its PacemakerConfig: %w", err)
	}
	api, err := url.Parse(n.cluster.Server())
	if err != nil {
		return err
	}
	sock := filepath.Join(dir, "pp.sock")
	_ = os.Remove(sock)
	logf, err := os.Create(filepath.Join(dir, "daemon.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	// A private mount namespace: /run is a tmpfs there, holding only the
	// token where client-go's in-cluster config reads it.
	sa := "/run/secrets/kubernetes.io/serviceaccount"
	pin := ""
	if n.opts.CPUs != "" {
		pin = "taskset --cpu-list " + n.opts.CPUs + " "
	}
	script := fmt.Sprintf(`mount -t tmpfs tmpfs /run && mkdir -p %[1]s && mount --bind %[2]q %[1]s && exec %[5]s%[3]q `+
		`--daemon-socket=%[4]q --taint-to-remove= --skip-daemonsets=true --metrics-enabled=false`,
		sa, filepath.Join(dir, "sa"), filepath.Join(n.opts.PacemakerBin, "node-daemon"), sock, pin)
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script)
	cmd.Env = append(os.Environ(), "KUBERNETES_SERVICE_HOST="+api.Hostname(), "KUBERNETES_SERVICE_PORT="+api.Port(),
		"NODE_NAME="+n.cluster.NodeName())
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start its node daemon: %w", err)
	}
	n.pm.cmd, n.pm.exited = cmd, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(n.pm.exited)
	// Its socket appears once its pod and config caches have synced.
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		select {
		case <-n.pm.exited:
			return false, errors.New("its node daemon exited")
		default:
		}
		_, err := os.Stat(sock)
		return err == nil, nil
	}); err != nil {
		return testbed.WithLogTail(fmt.Errorf("its node daemon's socket: %w", err), filepath.Join(dir, "daemon.log"))
	}
	return n.chainPacemaker(sock)
}

// installPacemaker applies its objects, writes its token and CA, and
// links its plugin into the CNI bin dir.
func (n *localNode) installPacemaker(ctx context.Context, dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "sa"), 0o700); err != nil {
		return err
	}
	if err := n.cluster.Apply(ctx, pacemakerManifests, "pacemaker"); err != nil {
		return fmt.Errorf("apply its objects: %w", err)
	}
	tok, err := n.cluster.Client().CoreV1().ServiceAccounts("kube-system").CreateToken(ctx, "pod-pacemaker",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](48 * 3600)}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("its ServiceAccount's token: %w", err)
	}
	ca, err := os.ReadFile(n.cluster.CAFile())
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "sa", "token"), []byte(tok.Status.Token), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "sa", "ca.crt"), ca, 0o644); err != nil {
		return err
	}
	link := filepath.Join(n.tb.CNIBinDir(), "pod-pacemaker")
	_ = os.Remove(link)
	return os.Symlink(filepath.Join(n.opts.PacemakerBin, "cni-plugin"), link)
}

// chainPacemaker writes the testbed's pod network with the plugin
// appended, as the chart's init container does, with the chart's
// settings; containerd picks it up from its conf dir.
func (n *localNode) chainPacemaker(sock string) error {
	base := n.tb.PodNetworkConf()
	b, err := os.ReadFile(base)
	if err != nil {
		return fmt.Errorf("the pod network to chain on: %w", err)
	}
	var list map[string]any
	if err := json.Unmarshal(b, &list); err != nil {
		return fmt.Errorf("%s: %w", base, err)
	}
	plugins, _ := list["plugins"].([]any)
	list["plugins"] = append(plugins, map[string]any{
		"name":                       "pod-pacemaker",
		"type":                       "pod-pacemaker",
		"capabilities":               map[string]bool{"io.kubernetes.cri.pod-annotations": true},
		"daemonSocketPath":           sock,
		"maxWaitTimeInSeconds":       pacemakerMaxWait,
		"namespaceExclusions":        []string{"kube-system"},
		"successOnConnectionTimeout": true,
		"disableThrottling":          false,
	})
	out, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(n.tb.CNIConfDir(), pacemakerConfName)
	tmp := path + ".tmp" // not a name libcni loads
	if err := os.WriteFile(tmp, out, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	n.pm.conf = path
	return nil
}

// stopPacemaker unchains the plugin first (no new sandbox waits on a
// daemon about to go), then stops the daemon and deletes its config.
func (n *localNode) stopPacemaker(ctx context.Context) error {
	var errs []error
	if n.pm.conf != "" {
		if err := os.Remove(n.pm.conf); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
		n.pm.conf = ""
	}
	if n.pm.cmd != nil {
		_ = syscall.Kill(-n.pm.cmd.Process.Pid, syscall.SIGKILL)
		<-n.pm.exited
		n.pm.cmd = nil
	}
	if n.pm.installed {
		if out, err := n.cluster.Kubectl(ctx, "delete", "pacemakerconfigs.woehrl.net", "--all", "--ignore-not-found"); err != nil {
			errs = append(errs, fmt.Errorf("kubebench: delete pod-pacemaker's config: %w: %s", err, out))
		}
	}
	return errors.Join(errs...)
}
