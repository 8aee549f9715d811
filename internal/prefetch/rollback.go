package prefetch

// The rollback window (issue 4): once the node's record for a tag moves
// from X to Y, nothing references X any more but the CRI's REPO@X and
// image ID records, which kubelet's image GC removes when no container
// uses X. A rollback to X would then pull it again, on the nodes that
// just moved away from it, when it is most likely to be needed at once.
// Protect holds X's content and snapshots with a lease for the window.
//
// Only local state is read: X is whatever the node has of it. A blob
// missing from the content store (the CRI never keeps only part of an
// image it unpacked, but a hand-made image may) is named in the lease all
// the same, which costs nothing, and only the index, manifest and config,
// needed to walk to the rest, must be there.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/zap"
)

// RollbackLabel is set on every rollback lease; its value is the
// protected image, REPO@DIGEST.
const RollbackLabel = "startgate.io/rollback"

// Protection says what Protect holds.
type Protection struct {
	// Lease holds the image until Expires, or until deleted.
	Lease   string
	Expires time.Time
	// Config is the image's config digest (its CRI image ID); Blobs
	// counts the index, manifest, config and layers held; Snapshots the
	// snapshots of its chain.
	Config    digest.Digest
	Blobs     int
	Snapshots int
}

// Protect holds the image ref's repository has at dgst (for an index,
// this node's platform's manifest), as the node's content store has it,
// with a new lease labelled RollbackLabel=REPO@dgst that expires after
// window: the index, manifest, config, layers and every snapshot of the
// chain in the CRI's snapshotter. No registry is contacted. On error no
// lease is left.
func (f *Fetcher) Protect(ctx context.Context, ref, dgst string, window time.Duration) (p Protection, err error) {
	if window <= 0 {
		return Protection{}, fmt.Errorf("prefetch: rollback window %v is not positive", window)
	}
	named, err := pinnedRef(ref, dgst)
	if err != nil {
		return Protection{}, err
	}
	ctx = namespaces.WithNamespace(ctx, f.opts.Namespace)
	ls := f.client.LeasesService()
	lease, err := ls.Create(ctx, leases.WithRandomID(), leases.WithExpiration(window),
		leases.WithLabel(RollbackLabel, named.String()))
	if err != nil {
		return Protection{}, fmt.Errorf("prefetch: protect %s: create lease: %w", named, err)
	}
	p.Lease, p.Expires = lease.ID, time.Now().Add(window)
	defer func() {
		if err != nil {
			if derr := ls.Delete(context.WithoutCancel(ctx), lease); derr != nil {
				err = errors.Join(err, fmt.Errorf("prefetch: delete lease %s: %w", lease.ID, derr))
			}
			p = Protection{}
		}
	}()
	cs := f.client.ContentStore()
	hold := func(id, typ string) error {
		if err := ls.AddResource(ctx, lease, leases.Resource{ID: id, Type: typ}); err != nil {
			return fmt.Errorf("lease %s: add %s %s: %w", lease.ID, typ, id, err)
		}
		return nil
	}
	// Hold, then read: whatever still references a blob now may be
	// removed before the read.
	read := func(d digest.Digest, v any) error {
		if err := hold(d.String(), "content"); err != nil {
			return err
		}
		p.Blobs++
		raw, err := content.ReadBlob(ctx, cs, ocispec.Descriptor{Digest: d})
		if err != nil {
			return fmt.Errorf("read %s: %w", d, err)
		}
		if err := json.Unmarshal(raw, v); err != nil {
			return fmt.Errorf("decode %s: %w", d, err)
		}
		return nil
	}

	d := named.(reference.Canonical).Digest()
	var node walkNode
	err = read(d, &node)
	// The root's media type is not known here (no image record need be
	// left): an index has manifests, a manifest a config.
	for depth := 0; err == nil && node.Config == nil; depth++ {
		if len(node.Manifests) == 0 || depth >= maxIndexDepth {
			err = fmt.Errorf("%s is neither an image manifest nor an index of one", d)
			break
		}
		child, ok := f.pick(node.Manifests)
		if !ok {
			err = fmt.Errorf("index %s has no manifest for this platform", d)
			break
		}
		d, node = child.Digest, walkNode{}
		err = read(d, &node)
	}
	if err != nil {
		return Protection{}, fmt.Errorf("prefetch: protect %s: %w", named, err)
	}
	p.Config = node.Config.Digest
	var cfg ocispec.Image
	if err := read(p.Config, &cfg); err != nil {
		return Protection{}, fmt.Errorf("prefetch: protect %s: config: %w", named, err)
	}
	for _, l := range node.Layers {
		if err := hold(l.Digest.String(), "content"); err != nil {
			return Protection{}, fmt.Errorf("prefetch: protect %s: %w", named, err)
		}
		p.Blobs++
	}
	for _, id := range identity.ChainIDs(slices.Clone(cfg.RootFS.DiffIDs)) {
		if err := hold(id.String(), "snapshots/"+f.opts.Snapshotter); err != nil {
			return Protection{}, fmt.Errorf("prefetch: protect %s: %w", named, err)
		}
		p.Snapshots++
	}
	f.log.Info("rollback protected", zap.String("image", named.String()), zap.String("lease", p.Lease),
		zap.Time("until", p.Expires), zap.Int("blobs", p.Blobs), zap.Int("snapshots", p.Snapshots))
	return p, nil
}

// walkNode is what Protect reads of an index, a manifest or a config.
type walkNode struct {
	Manifests []ocispec.Descriptor `json:"manifests"`
	Config    *ocispec.Descriptor  `json:"config"`
	Layers    []ocispec.Descriptor `json:"layers"`
}

// Release deletes a lease of the Fetcher's (a prefetch's, once the CRI's
// image records hold what it held). The content it alone held goes at the
// next GC; Release does not wait for one. A lease already gone is not an
// error.
func (f *Fetcher) Release(ctx context.Context, lease string) error {
	ctx = namespaces.WithNamespace(ctx, f.opts.Namespace)
	if err := f.client.LeasesService().Delete(ctx, leases.Lease{ID: lease}); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("prefetch: delete lease %s: %w", lease, err)
	}
	return nil
}
