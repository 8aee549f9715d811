package kubebench

import (
	"context"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/startgate/startgate/harness/bench"
	pb "github.com/startgate/startgate/proto/startgate/v1"
)

// node is where a benchmark runs its scenarios: a one-node cluster this
// process builds on this machine (localNode), or a node of an existing
// cluster (clusterNode, --kubeconfig and --node).
type node interface {
	// client is the API client the benchmark creates and watches with.
	client() kubernetes.Interface
	nodeName() string
	// namespace holds the app; the benchmark owns it.
	namespace() string
	// appRef is the app's tag as pods pull it; digestRef the app pinned
	// to a digest of it.
	appRef() string
	digestRef(digest string) string
	// patch pushes a patch of the app and returns its manifest digest.
	patch(ctx context.Context) (string, error)
	// setMode readies the node for m, on an empty node.
	setMode(ctx context.Context, m Mode) error
	// gate is startgated's API while one serves the mode; nil otherwise.
	gate() pb.StartgateClient
	// idle is the node's idle CPU so far, in core-seconds (a counter), and
	// its cores; ok false when it cannot be read.
	idle(ctx context.Context) (coreSeconds float64, cores int, ok bool)
	// local reports whether the node is this machine, whose processes
	// the benchmark can see (CPUBy).
	local() bool
	// quiet waits until the node is quiet (q), ctx ends or q.Max passes;
	// it returns what it measured last, in words, and whether it got
	// quiet.
	quiet(ctx context.Context, q bench.Quiet) (string, bool, error)
	// reboot does to the pods what a reboot does and returns the moment
	// before the kubelet starts again.
	reboot(ctx context.Context, m Mode) (time.Time, error)
	stop(ctx context.Context) error
}
