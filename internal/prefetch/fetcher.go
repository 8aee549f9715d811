package prefetch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/zap"
)

// ErrDigestMismatch is returned (wrapped) when Fetch is asked for one
// digest and the reference names another.
var ErrDigestMismatch = errors.New("prefetch: digest mismatch")

const (
	// DefaultNamespace is the containerd namespace of the CRI plugin.
	DefaultNamespace = "k8s.io"
	// DefaultLeaseExpiry is how long prefetched content is protected when
	// Options.LeaseExpiry is 0.
	DefaultLeaseExpiry = 24 * time.Hour
	// LeaseLabel is set on every prefetch lease; its value is the fetched
	// reference pinned by digest (REPO@DIGEST), so the parts of issue 4 that
	// come later (rm, rollback window, early release once used) can find
	// their leases.
	LeaseLabel = "startgate.io/prefetch"
	// maxIndexDepth bounds nested indexes (an index of indexes is legal
	// but rare; a cycle is impossible by digest, a deep chain is abuse).
	maxIndexDepth = 4
)

// Options configure a Fetcher. The zero value is usable but for
// Snapshotter, which must be the CRI's.
type Options struct {
	// Snapshotter is the snapshotter the CRI unpacks into (containerd 1.6's
	// default is overlayfs). Unpacking into any other leaves the CRI's
	// PullImage to unpack again.
	Snapshotter string
	// Namespace is the containerd namespace; "" means DefaultNamespace.
	Namespace string
	// LeaseExpiry is how long the fetched content and snapshots are
	// protected from containerd's GC if nothing else (the CRI's image
	// records, after kubelet pulls the tag) references them; 0 means
	// DefaultLeaseExpiry.
	LeaseExpiry time.Duration
	// PlainHTTP says which registry hosts are spoken to over plain HTTP;
	// nil means loopback hosts only (localhost, 127.0.0.0/8, ::1, with any
	// port), which is containerd's own rule with no registry config. All
	// other hosts are HTTPS.
	PlainHTTP func(host string) (bool, error)
	// Platform picks the manifest from an index; nil means this node's
	// platform (platforms.DefaultSpec, what the CRI picks).
	Platform *ocispec.Platform
	// HostsDir is containerd's hosts directory (its registry config_path,
	// e.g. /etc/containerd/certs.d): each registry's hosts.toml gives the
	// mirrors tried before it and the TLS and headers of each, as for the
	// CRI's own pulls (registries, hosts.go). "" reads none: every
	// registry is its own only host.
	HostsDir string
	// Credentials gives the user and secret for a registry host, a
	// mirror's included (containerd's docker.WithAuthCreds;
	// DockerConfig.Credentials, CredentialHelpers.Credentials); nil means
	// anonymous.
	Credentials func(host string) (user, secret string, err error)
	// RequestTimeout bounds a registry's wait before answering (the
	// response-header timeout of every registry client); 0 means
	// DefaultRequestTimeout. A blob's body has no timeout (it would cut
	// big layers on slow links) but is cut when it trickles: less than
	// 32 KiB per RequestTimeout of waiting for it (stall.go).
	RequestTimeout time.Duration
	// WrapReader, when set, wraps every blob body the Fetcher downloads
	// (the bandwidth cap and IO pause: Throttle.Reader); ctx is the
	// fetch's. nil reads the body as is.
	WrapReader func(ctx context.Context, r io.Reader) io.Reader
	// AllowHost says whether a registry may redirect a request (a
	// manifest, a blob, a token) to host; nil follows every redirect.
	// The daemon passes the Manager's allowlist (Manager.CheckHost), so a
	// registry that is allowed cannot send the fetch to one that is not
	// (a service on the node, a host the operator never listed). A
	// registry that serves its blobs from a CDN needs the CDN's host
	// listed too.
	AllowHost func(host string) error
	// Logger; nil means zap.NewNop.
	Logger *zap.Logger
}

// Fetcher fetches images into containerd, moving only the blobs its
// content store lacks. It is safe for concurrent use.
type Fetcher struct {
	client   *containerd.Client
	opts     Options
	platform ocispec.Platform
	matcher  platforms.MatchComparer
	resolver remotes.Resolver
	hosts    *registries
	log      *zap.Logger
}

// New returns a Fetcher on client. The client is the caller's: Close does
// not close it. New contacts no one.
func New(client *containerd.Client, opts Options) (*Fetcher, error) {
	if client == nil {
		return nil, errors.New("prefetch: nil containerd client")
	}
	if opts.Snapshotter == "" {
		return nil, errors.New("prefetch: no snapshotter (it must be the CRI's)")
	}
	if opts.LeaseExpiry < 0 {
		return nil, fmt.Errorf("prefetch: negative lease expiry %v", opts.LeaseExpiry)
	}
	if opts.Namespace == "" {
		opts.Namespace = DefaultNamespace
	}
	if opts.LeaseExpiry == 0 {
		opts.LeaseExpiry = DefaultLeaseExpiry
	}
	if opts.PlainHTTP == nil {
		opts.PlainHTTP = docker.MatchLocalhost
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.RequestTimeout < 0 {
		return nil, fmt.Errorf("prefetch: negative request timeout %v", opts.RequestTimeout)
	}
	if opts.RequestTimeout == 0 {
		opts.RequestTimeout = DefaultRequestTimeout
	}
	f := &Fetcher{client: client, opts: opts, log: opts.Logger}
	f.platform = platforms.DefaultSpec()
	if opts.Platform != nil {
		f.platform = *opts.Platform
	}
	f.matcher = platforms.Only(f.platform)
	f.hosts = newRegistries(opts)
	f.resolver = f.hosts.resolver()
	return f, nil
}

// Close closes the idle registry connections. Fetches still running go
// on.
func (f *Fetcher) Close() { f.hosts.closeIdle() }

// Layer is one layer of a fetched image.
type Layer struct {
	Digest digest.Digest
	// Size is the compressed size, from the manifest.
	Size int64
	// Fetched is true when the blob crossed the wire in this Fetch; false
	// when containerd's content store already had it.
	Fetched bool
}

// Result says what a Fetch did.
type Result struct {
	// Ref is the normalised reference fetched (a tag or REPO@DIGEST).
	Ref string
	// Digest is what Ref resolved to: the manifest, or the index holding
	// it. It is the digest in the CRI's repo digests after a pull.
	Digest digest.Digest
	// Manifest is this platform's manifest (Digest unless Ref is an index).
	Manifest digest.Digest
	// Config is the config blob's digest: the CRI's image ID.
	Config digest.Digest
	// Layers in manifest order.
	Layers []Layer
	// LayersFetched and LayersPresent count Layers by Fetched.
	LayersFetched, LayersPresent int
	// LayerBytes is the layer bytes read from the registry; Bytes is that
	// plus the index, manifest and config.
	LayerBytes, Bytes int64
	// SnapshotsCreated counts the layers unpacked by this Fetch; the others'
	// snapshots were there already.
	SnapshotsCreated int
	// Lease holds Layers, the index, manifest, config and every snapshot of
	// the chain until Expires, or until deleted.
	Lease   string
	Expires time.Time
}

// Fetch makes ref's image (for an index, this node's platform) complete in
// containerd: blobs the content store lacks are fetched and verified by
// containerd's content writer, layers without a snapshot are unpacked into
// the CRI's snapshotter, and all of it is held by a new lease. A non-empty
// dgst pins the image: ref is then fetched as REPO@dgst, so a tag pushed
// again meanwhile cannot change what is fetched; a ref carrying another
// digest is ErrDigestMismatch.
//
// No image record is created or changed: the tag stays where kubelet left
// it. On error the lease is deleted, so nothing fetched is kept past the
// next GC, and no blob with a wrong digest is ever committed.
func (f *Fetcher) Fetch(ctx context.Context, ref, dgst string) (Result, error) {
	return f.FetchProgress(ctx, ref, dgst, Progress{})
}

// Progress receives a Fetch's progress as it happens. Its functions are
// called from the fetching goroutine and must not block; nil ones are
// skipped.
type Progress struct {
	// Planned is called once, after the manifest and config are read
	// and every layer's presence in the content store checked and before
	// any layer moves: config is the image's config digest (the CRI's
	// image ID) and total the bytes of the blobs the content store lacked
	// (the index, manifest and config fetched so far included). A layer
	// another pull commits meanwhile is then not read, so a Fetch may end
	// below total.
	Planned func(config digest.Digest, total int64)
	// Read is called with the number of blob bytes just read from the
	// registry.
	Read func(n int64)
}

// FetchProgress is Fetch telling p of its progress.
func (f *Fetcher) FetchProgress(ctx context.Context, ref, dgst string, p Progress) (res Result, err error) {
	named, err := pinnedRef(ref, dgst)
	if err != nil {
		return Result{}, err
	}
	res.Ref = named.String()
	ctx = namespaces.WithNamespace(ctx, f.opts.Namespace)
	start := time.Now()

	name, root, err := f.resolver.Resolve(ctx, res.Ref)
	if err != nil {
		return Result{}, fmt.Errorf("prefetch: resolve %s: %w", res.Ref, err)
	}
	res.Digest = root.Digest
	fetcher, err := f.resolver.Fetcher(ctx, name)
	if err != nil {
		return Result{}, fmt.Errorf("prefetch: %s: %w", res.Ref, err)
	}

	ls := f.client.LeasesService()
	repo := reference.TrimNamed(named).String()
	lease, err := ls.Create(ctx, leases.WithRandomID(), leases.WithExpiration(f.opts.LeaseExpiry),
		leases.WithLabel(LeaseLabel, repo+"@"+root.Digest.String()))
	if err != nil {
		return Result{}, fmt.Errorf("prefetch: %s: create lease: %w", res.Ref, err)
	}
	res.Lease, res.Expires = lease.ID, time.Now().Add(f.opts.LeaseExpiry)
	defer func() {
		if err != nil {
			// Not synchronous: a GC per failure would be a cost the node
			// pays for a registry's fault. The next GC collects it.
			if derr := ls.Delete(context.WithoutCancel(ctx), lease); derr != nil {
				err = errors.Join(err, fmt.Errorf("prefetch: delete lease %s: %w", lease.ID, derr))
			}
			res = Result{}
		}
	}()
	ctx = leases.WithLease(ctx, lease.ID)

	b := &blobs{f: f, cs: f.client.ContentStore(), fetcher: fetcher, lease: lease, read: p.Read, held: map[digest.Digest]bool{}}
	mfDesc, err := b.manifestFor(ctx, root, 0)
	if err != nil {
		return Result{}, fmt.Errorf("prefetch: %s: %w", res.Ref, err)
	}
	res.Manifest = mfDesc.Digest
	var mf ocispec.Manifest
	if err := b.readJSON(ctx, mfDesc, &mf); err != nil {
		return Result{}, fmt.Errorf("prefetch: %s: %w", res.Ref, err)
	}
	res.Config = mf.Config.Digest
	// The manifest's GC labels to its config and layers, as containerd's
	// pull sets them: the CRI's image record will reach them through these
	// once the lease is gone.
	if err := b.label(ctx, mfDesc, append([]ocispec.Descriptor{mf.Config}, mf.Layers...)); err != nil {
		return Result{}, fmt.Errorf("prefetch: %s: %w", res.Ref, err)
	}
	if _, _, err := b.get(ctx, mf.Config, nil); err != nil {
		return Result{}, fmt.Errorf("prefetch: %s: config: %w", res.Ref, err)
	}
	var cfg ocispec.Image
	if err := b.readJSON(ctx, mf.Config, &cfg); err != nil {
		return Result{}, fmt.Errorf("prefetch: %s: config: %w", res.Ref, err)
	}
	if len(cfg.RootFS.DiffIDs) != len(mf.Layers) {
		return Result{}, fmt.Errorf("prefetch: %s: config lists %d diff IDs for %d layers", res.Ref, len(cfg.RootFS.DiffIDs), len(mf.Layers))
	}
	// Which layers are missing, before any moves: the total for progress.
	// Held first, as in get, so that a layer found here is not collected
	// before get looks again.
	total := b.bytes
	for _, l := range mf.Layers {
		present, err := b.present(ctx, l)
		if err != nil {
			return Result{}, fmt.Errorf("prefetch: %s: layer %s: %w", res.Ref, l.Digest, err)
		}
		if !present {
			total += l.Size
		}
	}
	if p.Planned != nil {
		p.Planned(mf.Config.Digest, total)
	}
	// One layer at a time: the bandwidth cap is node-wide anyway, and a
	// patch is usually one layer.
	for _, l := range mf.Layers {
		n, fetched, err := b.get(ctx, l, nil)
		if err != nil {
			return Result{}, fmt.Errorf("prefetch: %s: layer %s: %w", res.Ref, l.Digest, err)
		}
		res.Layers = append(res.Layers, Layer{Digest: l.Digest, Size: l.Size, Fetched: fetched})
		res.LayerBytes += n
		if fetched {
			res.LayersFetched++
		} else {
			res.LayersPresent++
		}
	}
	res.Bytes = b.bytes

	if res.SnapshotsCreated, err = f.unpack(ctx, named.String(), root, cfg.RootFS.DiffIDs, lease); err != nil {
		return Result{}, fmt.Errorf("prefetch: %s: %w", res.Ref, err)
	}
	f.log.Info("prefetched",
		zap.String("ref", res.Ref), zap.Stringer("digest", res.Digest),
		zap.Int("layers_fetched", res.LayersFetched), zap.Int("layers_present", res.LayersPresent),
		zap.Int64("bytes", res.Bytes), zap.Int("snapshots_created", res.SnapshotsCreated),
		zap.String("lease", res.Lease), zap.Duration("took", time.Since(start)))
	return res, nil
}

// pinnedRef normalises ref as the CRI does (docker.io/library/..., :latest
// when there is neither tag nor digest) and pins it to dgst if given.
func pinnedRef(ref, dgst string) (reference.Named, error) {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return nil, fmt.Errorf("prefetch: reference %q: %w", ref, err)
	}
	if dgst == "" {
		return named, nil
	}
	d, err := digest.Parse(dgst)
	if err != nil {
		return nil, fmt.Errorf("prefetch: reference %q: digest %q: %w", ref, dgst, err)
	}
	if c, ok := named.(reference.Canonical); ok && c.Digest() != d {
		return nil, fmt.Errorf("%w: reference %q names %s, asked for %s", ErrDigestMismatch, ref, c.Digest(), d)
	}
	return reference.WithDigest(reference.TrimNamed(named), d)
}

// blobs fetches the blobs of one Fetch under its lease.
type blobs struct {
	f       *Fetcher
	cs      content.Store
	fetcher remotes.Fetcher
	lease   leases.Lease
	bytes   int64                  // read from the registry so far
	read    func(n int64)          // Progress.Read; nil: none
	held    map[digest.Digest]bool // blobs added to the lease
}

// present holds desc's blob in the lease and says whether the content
// store has it.
func (b *blobs) present(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	if !b.held[desc.Digest] {
		if err := b.hold(ctx, leases.Resource{ID: desc.Digest.String(), Type: "content"}); err != nil {
			return false, err
		}
		b.held[desc.Digest] = true
	}
	if _, err := b.cs.Info(ctx, desc.Digest); err == nil {
		return true, nil
	} else if !errdefs.IsNotFound(err) {
		return false, err
	}
	return false, nil
}

// manifestFor fetches desc and, while it is an index, the child for this
// node's platform; it returns the manifest's descriptor, fetched.
func (b *blobs) manifestFor(ctx context.Context, desc ocispec.Descriptor, depth int) (ocispec.Descriptor, error) {
	switch desc.MediaType {
	case images.MediaTypeDockerSchema2Manifest, ocispec.MediaTypeImageManifest:
		if _, _, err := b.get(ctx, desc, nil); err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("manifest: %w", err)
		}
		return desc, nil
	case images.MediaTypeDockerSchema2ManifestList, ocispec.MediaTypeImageIndex:
	default:
		return ocispec.Descriptor{}, fmt.Errorf("%s: unsupported media type %q", desc.Digest, desc.MediaType)
	}
	if depth >= maxIndexDepth {
		return ocispec.Descriptor{}, fmt.Errorf("%s: indexes nested deeper than %d", desc.Digest, maxIndexDepth)
	}
	if _, _, err := b.get(ctx, desc, nil); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("index: %w", err)
	}
	var idx ocispec.Index
	if err := b.readJSON(ctx, desc, &idx); err != nil {
		return ocispec.Descriptor{}, err
	}
	child, ok := b.f.pick(idx.Manifests)
	if !ok {
		return ocispec.Descriptor{}, fmt.Errorf("index %s has no manifest for %s", desc.Digest, platforms.Format(b.f.platform))
	}
	// The index's GC label to the chosen child, as containerd's pull sets
	// it, so that once the CRI's image record points at the index the
	// child stays reachable after the lease expires.
	if err := b.label(ctx, desc, []ocispec.Descriptor{child}); err != nil {
		return ocispec.Descriptor{}, err
	}
	return b.manifestFor(ctx, child, depth+1)
}

// pick chooses the manifest for this node's platform from an index, as
// containerd does: the best match by the platform matcher's order.
func (f *Fetcher) pick(descs []ocispec.Descriptor) (ocispec.Descriptor, bool) {
	var cands []ocispec.Descriptor
	for _, d := range descs {
		if d.Platform != nil && f.matcher.Match(*d.Platform) {
			cands = append(cands, d)
		}
	}
	if len(cands) == 0 {
		return ocispec.Descriptor{}, false
	}
	slices.SortStableFunc(cands, func(a, b ocispec.Descriptor) int {
		switch {
		case f.matcher.Less(*a.Platform, *b.Platform):
			return -1
		case f.matcher.Less(*b.Platform, *a.Platform):
			return 1
		}
		return 0
	})
	return cands[0], true
}

// get makes desc's blob present in the content store and held by the
// lease. It returns the bytes read from the registry and whether the blob
// was fetched (false: it was there already, or another pull committed it
// while we waited for its ingest).
func (b *blobs) get(ctx context.Context, desc ocispec.Descriptor, labels map[string]string) (int64, bool, error) {
	// Hold first, then look: a blob found present but not yet held could
	// be collected by a garbage collection (one a deleted lease just
	// scheduled, say) before it is read. A lease may name a blob that is
	// not there yet.
	if present, err := b.present(ctx, desc); err != nil || present {
		return 0, false, err
	}
	// containerd's own ingest key: a CRI pull of the same blob running now
	// waits for this one (OpenWriter retries a locked ref) and finds the
	// blob committed, and vice versa.
	ref := remotes.MakeRefKey(ctx, desc)
	w, err := content.OpenWriter(ctx, b.cs, content.WithRef(ref), content.WithDescriptor(desc))
	if errdefs.IsAlreadyExists(err) {
		return 0, false, b.hold(ctx, leases.Resource{ID: desc.Digest.String(), Type: "content"})
	}
	if err != nil {
		return 0, false, err
	}
	defer w.Close()
	rc, err := b.fetcher.Fetch(ctx, desc)
	if err != nil {
		b.abort(ctx, ref)
		return 0, false, err
	}
	defer rc.Close()
	var body io.Reader = rc
	if wrap := b.f.opts.WrapReader; wrap != nil {
		body = wrap(ctx, rc)
	}
	cr := &countingReader{r: body, read: b.read}
	// Copy commits with the expected size and digest: containerd hashes
	// what it wrote and refuses a mismatch, so a wrong blob is never
	// committed. Written under the lease's context, the blob joins it.
	err = content.Copy(ctx, w, cr, desc.Size, desc.Digest, content.WithLabels(labels))
	b.bytes += cr.n
	if errdefs.IsAlreadyExists(err) {
		return cr.n, false, b.hold(ctx, leases.Resource{ID: desc.Digest.String(), Type: "content"})
	}
	if err != nil {
		// A failed ingest is kept by containerd for resuming; one with
		// wrong bytes in it must not be resumed.
		b.abort(ctx, ref)
		return cr.n, false, err
	}
	return cr.n, true, nil
}

func (b *blobs) abort(ctx context.Context, ref string) {
	if err := b.cs.Abort(context.WithoutCancel(ctx), ref); err != nil && !errdefs.IsNotFound(err) {
		b.f.log.Warn("abort ingest", zap.String("ref", ref), zap.Error(err))
	}
}

// hold adds r to the lease: content and snapshots that were there before
// this Fetch are not written under its context, and whatever references
// them now (the old tag's image record) may be gone before kubelet pulls.
func (b *blobs) hold(ctx context.Context, r leases.Resource) error {
	if err := b.f.client.LeasesService().AddResource(ctx, b.lease, r); err != nil {
		return fmt.Errorf("lease %s: add %s %s: %w", b.lease.ID, r.Type, r.ID, err)
	}
	return nil
}

// label sets containerd's GC reference labels from parent to children.
func (b *blobs) label(ctx context.Context, parent ocispec.Descriptor, children []ocispec.Descriptor) error {
	ls := childLabels(children)
	if len(ls) == 0 {
		return nil
	}
	info := content.Info{Digest: parent.Digest, Labels: ls}
	var fields []string
	for k := range ls {
		fields = append(fields, "labels."+k)
	}
	if _, err := b.cs.Update(ctx, info, fields...); err != nil {
		return fmt.Errorf("label %s: %w", parent.Digest, err)
	}
	return nil
}

// childLabels are the labels containerd's pull puts on a parent blob
// (images.SetChildrenLabels): one per child, keyed by its kind and, for
// kinds that repeat, its position.
func childLabels(children []ocispec.Descriptor) map[string]string {
	ls := map[string]string{}
	for i, c := range children {
		for _, k := range images.ChildGCLabels(c) {
			if strings.HasSuffix(k, ".") {
				k += strconv.Itoa(i)
			}
			ls[k] = c.Digest.String()
		}
	}
	return ls
}

func (b *blobs) readJSON(ctx context.Context, desc ocispec.Descriptor, v any) error {
	p, err := content.ReadBlob(ctx, b.cs, desc)
	if err != nil {
		return fmt.Errorf("read %s: %w", desc.Digest, err)
	}
	if err := json.Unmarshal(p, v); err != nil {
		return fmt.Errorf("decode %s: %w", desc.Digest, err)
	}
	return nil
}

// unpack unpacks the image into the CRI's snapshotter with containerd's
// own Image.Unpack, which skips layers whose chain ID has a snapshot and
// labels the config with its snapshot for GC, as the CRI's pull does. It
// returns how many snapshots it created, and puts every snapshot of the
// chain in the lease.
func (f *Fetcher) unpack(ctx context.Context, name string, root ocispec.Descriptor, diffIDs []digest.Digest, lease leases.Lease) (int, error) {
	sn := f.client.SnapshotService(f.opts.Snapshotter)
	chain := identity.ChainIDs(slices.Clone(diffIDs))
	missing := 0
	for _, id := range chain {
		if _, err := sn.Stat(ctx, id.String()); errdefs.IsNotFound(err) {
			missing++
		} else if err != nil {
			return 0, fmt.Errorf("snapshot %s: %w", id, err)
		}
	}
	if missing > 0 {
		img := containerd.NewImageWithPlatform(f.client, images.Image{Name: name, Target: root}, f.matcher)
		if err := img.Unpack(ctx, f.opts.Snapshotter); err != nil {
			return 0, fmt.Errorf("unpack into %s: %w", f.opts.Snapshotter, err)
		}
	}
	ls := f.client.LeasesService()
	for _, id := range chain {
		r := leases.Resource{ID: id.String(), Type: "snapshots/" + f.opts.Snapshotter}
		if err := ls.AddResource(ctx, lease, r); err != nil {
			return 0, fmt.Errorf("lease %s: add snapshot %s: %w", lease.ID, id, err)
		}
	}
	return missing, nil
}

type countingReader struct {
	r    io.Reader
	n    int64
	read func(n int64) // nil: none
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if n > 0 && c.read != nil {
		c.read(int64(n))
	}
	return n, err
}
