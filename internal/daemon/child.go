package daemon

import (
	"os"
	"strings"
)

// ChildEnviron is this process's environment for a startgated it starts
// as a child (the benchmark and make cluster re-execute their own binary
// as startgated): without what would make the child act as a systemd
// service of ours (notify socket, passed sockets, watchdog), and without
// the variables in drop.
func ChildEnviron(drop ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID":
			continue
		}
		dropped := false
		for _, d := range drop {
			dropped = dropped || k == d
		}
		if !dropped {
			env = append(env, kv)
		}
	}
	return env
}
