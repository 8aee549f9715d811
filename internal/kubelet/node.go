package kubelet

import (
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/procfs"
)

// Node is one node's kubelet set-up, read under Root ("/" but in tests).
type Node struct {
	// Root prefixes every path; "" is "/".
	Root string
	// ConfigFile overrides kubelet's --config (a node whose kubelet
	// reads its file from elsewhere); "" takes kubelet's own.
	ConfigFile string
	// StateDir holds the record and the backups; "" is
	// /var/lib/startgate/kubelet under Root.
	StateDir string
	// Proc is /proc, for the running kubelet; "" is Root's proc.
	Proc string

	// overlay replaces files' contents (node paths) while a plan is
	// checked: Resolve over the planned edits, before any is written.
	overlay map[string][]byte
	// fault is called before each step that writes (tests): an error
	// stops the operation there, as a crash or a full disk would.
	fault func(step string) error
}

func (n *Node) path(p string) string {
	if n.Root == "" || n.Root == "/" {
		return p
	}
	return filepath.Join(n.Root, p)
}

func (n *Node) stateDir() string {
	if n.StateDir != "" {
		return n.StateDir
	}
	return n.path("/var/lib/startgate/kubelet")
}

// readFile reads a node path, through the overlay.
func (n *Node) readFile(p string) ([]byte, error) {
	if b, ok := n.overlay[p]; ok {
		return b, nil
	}
	return os.ReadFile(n.path(p))
}

// overlayUnder lists the overlay's new files directly or deeper under
// dir that match ext.
func (n *Node) overlayUnder(dir, ext string) []string {
	var out []string
	for p := range n.overlay {
		if strings.HasPrefix(p, dir+"/") && filepath.Ext(p) == ext && !n.exists(p) {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

// Running is the running kubelet, if any.
type Running struct {
	Pid     int       `json:"pid"`
	Started time.Time `json:"started"`
	Args    []string  `json:"-"`
	ticks   uint64
}

// Running is the running kubelet process, nil when none runs. When
// several run in this root (a test machine, a node mid-migration), it is
// the one whose command line is kubelet.service's, else none: which one
// is this node's cannot be told.
func (n *Node) Running() *Running {
	ks := n.kubelets()
	if len(ks) == 1 {
		return ks[0]
	}
	if len(ks) == 0 {
		return nil
	}
	uc, err := n.resolveUnit(KubeletUnit)
	if err != nil {
		return nil
	}
	want := make([]string, 0, len(uc.Args))
	for _, a := range uc.Args[1:] {
		want = append(want, a.Value)
	}
	for _, k := range ks {
		if slices.Equal(k.Args, want) {
			return k
		}
	}
	return nil
}

// kubelets are the kubelet processes in this node's root.
func (n *Node) kubelets() []*Running {
	proc := n.Proc
	if proc == "" {
		proc = n.path("/proc")
	}
	fs, err := procfs.NewFS(proc)
	if err != nil {
		return nil
	}
	procs, err := fs.AllProcs()
	if err != nil {
		return nil
	}
	var out []*Running
	for _, p := range procs {
		cmd, err := p.CmdLine()
		if err != nil || len(cmd) == 0 || filepath.Base(cmd[0]) != "kubelet" {
			continue
		}
		// A kubelet in another root (a chroot, a container, a nested
		// node such as kind's) is not this node's.
		if r, err := p.RootDir(); err == nil && r != "/" {
			continue
		}
		r := &Running{Pid: p.PID, Args: cmd[1:]}
		if st, err := p.Stat(); err == nil {
			r.ticks = st.Starttime
			if s, err := st.StartTime(); err == nil {
				r.Started = time.Unix(0, int64(s*1e9))
			}
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b *Running) int { return a.Pid - b.Pid })
	return out
}
