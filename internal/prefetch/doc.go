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
// code containerd's CRI pulls with: the same host rules (plain HTTP for
// loopback hosts only, unless Options.PlainHTTP says otherwise), the same
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
// # Not here yet
//
// Watching tags, notifications, the API, credentials, an allowlist,
// admission and bandwidth caps, retries and progress (issue 4, items 1, 2
// and 4 to 6) are other pieces. Layers are fetched one at a time.
//
// # Usage
//
//	f, err := prefetch.New(client, prefetch.Options{Snapshotter: "overlayfs"})
//	...
//	defer f.Close()
//	res, err := f.Fetch(ctx, "registry.example/app:1", "")
//	// res.LayersFetched, res.Bytes, res.Lease, res.Expires
package prefetch
