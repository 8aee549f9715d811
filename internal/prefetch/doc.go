// Package prefetch fetches a patched image into containerd ahead of
// kubelet's pull, moving only what the node lacks (issue 4, item 3).
//
// A patch rollout restarts every pod of a workload on a new digest of the
// same tag, and the new digest usually differs from the running one in a
// layer or two. Fetcher.Fetch resolves the reference, fetches the
// manifest (for an index, this node's platform's), the config and the
// layers containerd's content store does not have, unpacks the image into
// the CRI's snapshotter, and holds all of it with a lease. Kubelet's later
// PullImage of the tag then finds every blob (containerd's fetch handler
// skips a blob whose digest is in the store) and every snapshot
// (containerd's unpacker skips a layer whose chain ID has one), so it
// resolves the tag, creates its image records and moves no layer bytes.
//
// # Resolver: containerd's, not go-containerregistry's
//
// Blobs go through containerd's docker resolver (core/remotes/docker), the
// code containerd's CRI pulls with: the same host rules (the mirrors,
// CAs and TLS of the node's hosts.toml files, read by containerd's
// config.ConfigureHosts; without one, plain HTTP for loopback hosts only,
// unless Options.PlainHTTP says otherwise), the same
// descriptors and media types, and the same ingest keys
// (remotes.MakeRefKey), so a CRI pull of a blob being prefetched waits for
// this fetch's ingest and then finds the blob, instead of fetching it
// twice. go-containerregistry would need its descriptors translated and
// would race the CRI on the same blob.
//
// # Integrity
//
// Every blob is written with containerd's content.Writer and committed
// with its expected size and digest: containerd hashes what it stored and
// refuses a mismatch, so a corrupted or truncated blob is never committed.
// The failed ingest is aborted (containerd would otherwise keep it to
// resume), and the Fetch fails.
//
// # GC: a lease, no image record
//
// Fetch creates no image record and changes none: the tag stays where
// kubelet left it (kubelet decides when a rollout starts). An image record
// under REPO@DIGEST was the alternative; it is what the CRI itself names
// repo digests, so the CRI would list the image before kubelet pulled it,
// kubelet's image GC could remove it as unused, and it never expires. A
// lease instead:
//
//   - holds, until Result.Expires (leases.WithExpiration; containerd's GC
//     drops expired leases), the index, manifest, config, every layer and
//     every snapshot of the chain, including those that were already
//     there: the old tag's image record, which protected them until now,
//     may be removed before kubelet pulls;
//   - needs no owner to clean up after it;
//   - is labelled LeaseLabel=REPO@DIGEST for the parts that manage
//     prefetches (release once used, rollback window, rm).
//
// After kubelet's pull the CRI's image records protect the image through
// the GC labels Fetch sets as containerd's pull does (index to manifest,
// manifest to config and layers; Image.Unpack labels the config with its
// snapshot), so the lease may expire or be deleted then. On a failed Fetch
// the lease is deleted at once.
//
// # Watching and notifications
//
// Manager (manager.go) keeps the watch set (the node's tagged images in
// k8s.io, plus Add), resolves each tag on a jittered interval with
// per-registry backoff, and fetches a new digest with the Fetcher; Trigger
// resolves one tag at once. Notifier (notify.go) receives the registry's
// push notifications (bearer token) and calls back with HOST/REPO:TAG and
// the digest, never blocking the registry; the callback is meant to call
// Trigger. A fetch waits for IO pressure and a background admission slot
// first (throttle.go).
//
// # Progress, events, metrics
//
// Fetcher.FetchProgress tells the Manager the bytes missing from
// containerd once the manifest and config are read and each layer's
// presence checked (Progress.Planned), then bytes as they arrive
// (Progress.Read), so Entry.BytesDone and BytesTotal are live. State
// changes, hits, rollback protections and removals are Events
// (Manager.Subscribe: non-blocking fan-out, a slow subscriber loses
// events and is told how many, channels closed when Run returns); the
// Observer gets bytes, fetch outcomes and hits for metrics (events.go).
//
// # A pull meeting a prefetch (flight.go)
//
// The CRI proxy calls Join before forwarding a PullImage: a fetch of the
// same image that is still pending stops waiting for IO pressure,
// admission and a fetch slot (the pull was admitted by the proxy's pull
// lane, and it is needed now) and starts, and the pull waits for it
// rather than race it for the same blobs. After the pull the proxy calls
// Pulled with the image ID the CRI answered: if it is the done prefetch's
// config, that is a hit, the entry goes idle at the new digest and the
// prefetch lease is deleted, since the CRI's image records hold the
// image now. A tag that moved to a done digest without the proxy (a pull
// straight to containerd, or ManagerOptions.MoveTag, which moves the tag
// once a fetch is done) is seen by the next read of the node's images and
// counted the same way, once.
//
// # Rollback window (rollback.go)
//
// When the node's record for a tag moves from X to Y, and
// ManagerOptions.RollbackWindow is set, Fetcher.Protect holds X (index,
// manifest, config, layers and its snapshot chain, walked from the local
// content store, no registry) with a lease labelled
// RollbackLabel=REPO@X that expires after the window: kubelet's image GC
// may remove X's records once no container uses it, and a rollback would
// then pull it again on every node at once. Entry.Previous and
// PreviousUntil show it.
//
// # Not here yet
//
// Layers are fetched one at a time. A superseded digest's prefetch lease
// is left to expire rather than deleted.
//
// # Usage
//
//	f, err := prefetch.New(client, prefetch.Options{Snapshotter: "overlayfs"})
//	...
//	defer f.Close()
//	res, err := f.Fetch(ctx, "registry.example/app:1", "")
//	// res.LayersFetched, res.Bytes, res.Lease, res.Expires
//
//	m, err := prefetch.NewManager(f, prefetch.ManagerOptions{RollbackWindow: time.Hour})
//	events, cancel := m.Subscribe(64)
//	go m.Run(ctx) // until ctx ends; closes events
//	// CRI proxy, PullImage of ref:
//	m.Join(ctx, ref)               // waits for a prefetch of ref in flight
//	resp := pull(ref)              // containerd finds the blobs and snapshots
//	m.Pulled(ctx, ref, resp.ImageRef)
package prefetch
