package devcluster

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"github.com/startgate/startgate/harness/testbed"
	"github.com/startgate/startgate/internal/daemon"
)

// childEnv marks a process started by startgate-cluster to be startgated:
// the command re-executes its own binary, so `make cluster` needs no
// separate startgated build and runs the daemon of the same tree.
const childEnv = "STARTGATE_CLUSTER_RUN_STARTGATED"

// gateConfig is startgated's config here: console logs for a person
// reading them, metrics off (no port to collide on), the pod watch on with
// the node's own kubeconfig (the Node authorizer lets it watch the node's
// pods), the rest default. The sockets come from flags.
func gateConfig(kubeconfig, node string) string {
	return `version = 1

[daemon]
log_format = "console"
log_level = "info"
shutdown_timeout = "5s"

[metrics]
listen = ""

[kubernetes]
enabled = true
kubeconfig = ` + strconv.Quote(kubeconfig) + `
node_name = ` + strconv.Quote(node) + `
`
}

// startGate starts startgated (this binary re-executed) with its CRI
// proxy in front of containerd, with config (or the file configFile,
// when set).
func startGate(ctx context.Context, dir, containerd, config, configFile string) (*testbed.Startgated, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own binary to run startgated: %w", err)
	}
	return testbed.StartStartgated(ctx, testbed.StartgatedOptions{
		Dir: dir, Command: []string{self}, Env: append(daemon.ChildEnviron(childEnv), childEnv+"=1"),
		Containerd: containerd, Config: config, ConfigFile: configFile,
	})
}
