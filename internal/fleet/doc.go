// Package fleet coordinates prefetch across a cluster through the
// Kubernetes API, and through nothing home-made: a patch announced once
// reaches every node by one watch, the registries see at most K nodes
// fetching at once, and progress is summed where anyone can read it.
//
// # Resources (deploy/fleet)
//
// ImageAnnouncement (cluster-scoped, startgate.io/v1alpha1) names a tag
// and its new digest; its name is a hash of both, so announcing twice is
// one object. Its status (done, fetching, waiting, failed) is written by
// the elected node only. NodePrefetch, one per node and named after it,
// is that node's report: its state on each announcement it acts on, and
// the tags it runs. The upstream slots and the leader are Leases
// (coordination.k8s.io) in one namespace. RBAC grants all of it to the
// group system:nodes, so startgated runs on its node's kubelet
// credentials.
//
// # Roles
//
//   - Node (node.go), on every node: one informer on the announcements;
//     an announcement of a tag the node runs or watches (Prefetcher.Wants)
//     is handed to the node's prefetcher, which fetches the digest as
//     announced, without resolving the tag. Every fetch from a registry,
//     announced or found by the node's own polling, calls Node.Acquire
//     first, which waits for an upstream slot, and reports.
//   - Budget (budget.go): K Leases named startgate-upstream-0..K-1, taken
//     as client-go's leader election takes its one: list (from the API
//     server's watch cache), update a free one guarded by its
//     resourceVersion, renew every third of the lease duration, clear it
//     when done. A slot is free when it has no holder, or when its record
//     has not changed for a lease duration as this node has watched it
//     (observed time: no trust in other nodes' clocks). A holder that has
//     not renewed within a lease duration of sending its last successful
//     renewal gives the slot up (Slot.Lost cancels the fetch) before any
//     other node can see it free, so at most K fetch at once even across
//     a partition; a node that dies holding one delays the others by at
//     most the lease duration. Waiting nodes try again after RetryMin,
//     doubling up to RetryMax, jittered: they poll, and do not watch the
//     slots, because a watch would deliver every acquire, renewal and
//     release to every node (N events per change, N² per rollout), while
//     a poll costs one cached list per waiting node per retry.
//   - Reporter (report.go): the node's NodePrefetch, rewritten at most
//     once per interval when something changed: a few writes per node
//     per announcement (waiting, fetching, done). Nodes never read each
//     other's reports.
//   - Elected (status.go), on one node elected through the Lease
//     startgate-leader (RunLeader, client-go's leader election among the
//     fleet.leader_candidate nodes): one watch of the reports, summed
//     into each announcement's status; and with fleet.cluster_resolver,
//     the cluster's one poller: it resolves every tag the nodes report
//     and announces a digest some node does not run, while the other
//     nodes stop polling their registries (prefetch.Manager.SetPolling).
//
// # What stays as it was
//
// The API is an addition. A cluster without deploy/fleet's resources, or
// a node without API access, prefetches as a node alone: the daemon
// looks again every minute (internal/daemon/fleet.go), and until the
// fleet runs nothing bounds the node's fetches beyond itself. A node
// that loses the API while waiting for a slot fetches without one after
// fleet.fail_open_after, and says so. A fetch a kubelet pull joined never
// waits for a slot: kubelet's own pull would go to the registry anyway.
// Through a mirror (a hosts.toml mirror, a peer-to-peer cache) only the
// first node's fetch takes a slot: once a node reports the digest done,
// the mirror has it.
//
// startgate-bench fleet (harness/fleetbench) runs this package's code
// for N simulated nodes on a real API server; docs/fleet.md has what it
// measured and what a node costs the API server.
package fleet
