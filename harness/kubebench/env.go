package kubebench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/startgate/startgate/internal/version"
)

// Env is where and with what a run ran: what a reader needs to re-check a
// figure, kept with the raw data.
type Env struct {
	Date time.Time `json:"date"`
	// Commit is the harness's VCS revision (the startgated it runs is the
	// same binary re-executed unless --startgated is given), with
	// "+modified" when built from a changed checkout.
	Commit   string `json:"commit"`
	Host     string `json:"host"`
	CPU      string `json:"cpu"`
	Cores    int    `json:"cores"`
	MemoryMB uint64 `json:"memory_mb"`
	Kernel   string `json:"kernel"`
	// Kubelet and Runtime are what the Node reports (nodeInfo).
	Kubelet string `json:"kubelet"`
	Runtime string `json:"runtime"`
	Go      string `json:"go"`
}

// hostEnv reads the machine's side of Env; the node's comes later
// (nodeEnv), once a kubelet has registered.
func hostEnv() Env {
	e := Env{Date: time.Now().UTC(), Cores: runtime.NumCPU(), Go: runtime.Version()}
	e.Commit = commit()
	e.Host, _ = os.Hostname()
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		e.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if fs, err := procfs.NewDefaultFS(); err == nil {
		if ci, err := fs.CPUInfo(); err == nil && len(ci) > 0 {
			e.CPU = ci[0].ModelName
		}
		if mi, err := fs.Meminfo(); err == nil && mi.MemTotal != nil {
			e.MemoryMB = *mi.MemTotal / 1024
		}
	}
	return e
}

// commit is the build's VCS revision; a binary built without it
// (-buildvcs=false) asks git about the checkout it runs in.
func commit() string {
	v := version.Get()
	rev, modified := v.Revision, v.Modified
	if rev == "" {
		out, err := exec.Command("git", "rev-parse", "HEAD").Output()
		if err != nil {
			return ""
		}
		rev = strings.TrimSpace(string(out))
		modified = exec.Command("git", "diff", "--quiet", "HEAD", "--").Run() != nil
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified {
		rev += "+modified"
	}
	return rev
}

// nodeEnv fills in the kubelet's and the runtime's versions from the
// Node's status.
func (e *Env) nodeEnv(ctx context.Context, client kubernetes.Interface, node string) error {
	n, err := client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("kubebench: read node %s's versions: %w", node, err)
	}
	e.Kubelet = n.Status.NodeInfo.KubeletVersion
	e.Runtime = n.Status.NodeInfo.ContainerRuntimeVersion
	return nil
}

// versions is "kubelet v1.34.4, containerd://1.6.20".
func (e Env) versions() string {
	var parts []string
	if e.Kubelet != "" {
		parts = append(parts, "kubelet "+e.Kubelet)
	}
	if e.Runtime != "" {
		parts = append(parts, e.Runtime)
	}
	if len(parts) == 0 {
		return "versions unknown"
	}
	return strings.Join(parts, ", ")
}
