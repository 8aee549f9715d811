package config

import (
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Fleet is the [fleet] section: coordination of prefetch across the
// cluster through its API (internal/fleet): announced patches learnt by
// one watch, at most upstream_slots nodes fetching from registries at
// once (Leases), and each node's progress reported. It needs the
// [kubernetes] credentials and [prefetch]; a cluster without the
// resources of deploy/fleet, or an API out of reach, prefetches as
// before, each node on its own.
type Fleet struct {
	Enabled bool `toml:"enabled"`
	// Namespace holds the upstream slots and the leader's Lease.
	Namespace string `toml:"namespace"`
	// UpstreamSlots is K: the most nodes of the cluster fetching from
	// registries at once. Every node should have the same.
	UpstreamSlots int `toml:"upstream_slots"`
	// LeaseDuration is how long a slot outlives its holder's last
	// renewal: the most a node that dies mid-fetch delays the others.
	LeaseDuration Duration `toml:"lease_duration"`
	// RetryMin and RetryMax bound the wait between tries for a slot.
	RetryMin Duration `toml:"retry_min"`
	RetryMax Duration `toml:"retry_max"`
	// StartJitter spreads the nodes' first tries for a new digest.
	StartJitter Duration `toml:"start_jitter"`
	// FailOpenAfter: a node that cannot reach the API for this long
	// while waiting for a slot fetches without one (logged).
	FailOpenAfter Duration `toml:"fail_open_after"`
	// ReportEvery is the most often the node's report is written.
	ReportEvery Duration `toml:"report_every"`
	// StatusEvery is how often the elected node sums the reports into
	// the announcements' status. Each write reaches every node's watch
	// (N events), so it is slower than the reports.
	StatusEvery Duration `toml:"status_every"`
	// LeaderCandidate: this node may be elected to sum the nodes'
	// reports into the announcements' status. A few nodes suffice (the
	// control-plane nodes, say): every candidate costs the API server a
	// request every 2 s.
	LeaderCandidate bool `toml:"leader_candidate"`
	// ClusterResolver: the elected node resolves, every
	// prefetch.interval, every tag the nodes run, and announces new
	// digests; while one is elected, this node does not poll its
	// registries itself. Give every node the same.
	ClusterResolver bool `toml:"cluster_resolver"`
}

func defaultFleet() Fleet {
	return Fleet{
		Enabled:         false,
		Namespace:       "startgate-system",
		UpstreamSlots:   10,
		LeaseDuration:   Duration(15 * time.Second),
		RetryMin:        Duration(time.Second),
		RetryMax:        Duration(30 * time.Second),
		StartJitter:     Duration(5 * time.Second),
		FailOpenAfter:   Duration(time.Minute),
		ReportEvery:     Duration(2 * time.Second),
		StatusEvery:     Duration(15 * time.Second),
		LeaderCandidate: false,
		ClusterResolver: false,
	}
}

var fleetDocs = map[string]string{
	"fleet": "Prefetch across the cluster, through its API (kubectl apply -f deploy/fleet/):\n" +
		"a patch announced once (an ImageAnnouncement: startgatectl fleet announce, or a\n" +
		"registry webhook any node receives) reaches every node by one watch; at most\n" +
		"upstream_slots nodes fetch from a registry at once (Leases in namespace); each\n" +
		"node reports its progress (a NodePrefetch). Needs [kubernetes] and [prefetch].\n" +
		"Without the resources, or the API, each node prefetches on its own.",
	"fleet.enabled":        "Take part in the fleet's coordination.",
	"fleet.namespace":      "Namespace of the upstream slots' and the leader's Leases.",
	"fleet.upstream_slots": "K: the most nodes of the cluster fetching from registries at once. Give\nevery node the same.",
	"fleet.lease_duration": "How long an upstream slot outlives its holder's last renewal: the most a node\n" +
		"that dies mid-fetch delays the others. The holder renews every third of it.",
	"fleet.retry_min":       "First wait before trying again for a slot while all are held; it doubles.",
	"fleet.retry_max":       "Longest wait between tries for a slot.",
	"fleet.start_jitter":    "The nodes' first tries for a new digest are spread over this long.",
	"fleet.fail_open_after": "A node that cannot reach the API for this long while waiting for a slot\nfetches without one, and says so.",
	"fleet.report_every":    "Most often this node writes its report (its NodePrefetch).",
	"fleet.status_every": "How often the elected node sums the reports into each announcement's status.\n" +
		"Every status write reaches every node's watch, so this is slower than the reports.",
	"fleet.leader_candidate": "Stand for election to sum the nodes' reports into each announcement's status.\n" +
		"Make a few nodes candidates (the control plane's): each costs a request every 2 s.",
	"fleet.cluster_resolver": "One resolver for the cluster: the elected node resolves every tag the nodes\n" +
		"run, every prefetch.interval, and announces each new digest; while a node is\n" +
		"elected, the others do not poll their registries. Give every node the same.",
}

// validate checks [fleet]; enabled, it needs [kubernetes] and [prefetch].
func (f Fleet) validate(k Kubernetes, p Prefetch) []error {
	var errs problems
	if msgs := validation.IsDNS1123Label(f.Namespace); len(msgs) > 0 {
		errs.add("fleet.namespace", "%q is not a namespace name: %s", f.Namespace, strings.Join(msgs, "; "))
	}
	errs.count("fleet.upstream_slots", f.UpstreamSlots, 1, 10000)
	errs.duration("fleet.lease_duration", f.LeaseDuration, 3*time.Second, 10*time.Minute)
	errs.duration("fleet.retry_min", f.RetryMin, 100*time.Millisecond, time.Minute)
	errs.duration("fleet.retry_max", f.RetryMax, 100*time.Millisecond, 10*time.Minute)
	if f.RetryMax < f.RetryMin {
		errs.add("fleet.retry_max", "%v is shorter than fleet.retry_min %v", f.RetryMax.Std(), f.RetryMin.Std())
	}
	errs.duration("fleet.start_jitter", f.StartJitter, 0, 10*time.Minute)
	errs.duration("fleet.fail_open_after", f.FailOpenAfter, time.Second, time.Hour)
	errs.duration("fleet.report_every", f.ReportEvery, 100*time.Millisecond, 10*time.Minute)
	errs.duration("fleet.status_every", f.StatusEvery, 100*time.Millisecond, 10*time.Minute)
	if f.Enabled && !k.Enabled {
		errs.add("fleet.enabled", "needs the API: set kubernetes.enabled = true (and its kubeconfig)")
	}
	if f.Enabled && !p.Enabled {
		errs.add("fleet.enabled", "coordinates prefetch: set prefetch.enabled = true")
	}
	return errs
}
