package testbed

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// RandomLayer builds a gzip layer holding one file at path with size bytes
// of pseudo-random data from seed: incompressible, so the blob that crosses
// the wire is about size bytes, and reproducible, so the same seed gives
// the same digest. Two seeds at the same path make a base layer and its
// patched version.
func RandomLayer(path string, size int, seed uint64) (v1.Layer, error) {
	if size < 0 {
		return nil, fmt.Errorf("testbed: random layer: negative size %d", size)
	}
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	data := make([]byte, size)
	_, _ = rand.NewChaCha8(s).Read(data) // never fails

	var buf bytes.Buffer
	buf.Grow(size + 4<<10)
	tw := tar.NewWriter(&buf)
	if err := addParents(tw, map[string]bool{}, path); err != nil {
		return nil, err
	}
	if err := writeFile(tw, path, 0o644, data); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("testbed: layer: %w", err)
	}
	b := buf.Bytes()
	// BestSpeed: gzip cannot shrink random data anyway, and the default
	// level takes several times longer to find that out.
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressionLevel(gzip.BestSpeed), tarball.WithCompressedCaching)
	if err != nil {
		return nil, fmt.Errorf("testbed: layer: %w", err)
	}
	return l, nil
}

// ReplaceLastLayer returns base with its last layer replaced by changed:
// the same config (entrypoint, env, ...) and media types, the same layers
// but the last, whose diff ID and history entry are replaced. It is the
// image a patch pushes (see Registry.Patch).
func ReplaceLastLayer(base v1.Image, changed v1.Layer) (v1.Image, error) {
	layers, err := base.Layers()
	if err != nil {
		return nil, fmt.Errorf("testbed: patch: %w", err)
	}
	if len(layers) == 0 {
		return nil, fmt.Errorf("testbed: patch: base image has no layer to replace")
	}
	cf, err := base.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("testbed: patch: %w", err)
	}
	mt, err := base.MediaType()
	if err != nil {
		return nil, fmt.Errorf("testbed: patch: %w", err)
	}
	mf, err := base.Manifest()
	if err != nil {
		return nil, fmt.Errorf("testbed: patch: %w", err)
	}
	diffID, err := changed.DiffID()
	if err != nil {
		return nil, fmt.Errorf("testbed: patch: %w", err)
	}

	// The layers first, on an empty image of the same media types; then
	// base's config, with the new diff IDs and history, replaces the
	// config that Append computed.
	img := mutate.MediaType(empty.Image, mt)
	img = mutate.ConfigMediaType(img, mf.Config.MediaType)
	img, err = mutate.AppendLayers(img, append(layers[:len(layers)-1:len(layers)-1], changed)...)
	if err != nil {
		return nil, fmt.Errorf("testbed: patch: %w", err)
	}
	if n := len(cf.RootFS.DiffIDs); n != len(layers) {
		return nil, fmt.Errorf("testbed: patch: base config lists %d diff IDs for %d layers", n, len(layers))
	}
	cf = cf.DeepCopy()
	cf.RootFS.DiffIDs = append(cf.RootFS.DiffIDs[:len(cf.RootFS.DiffIDs)-1:len(cf.RootFS.DiffIDs)-1], diffID)
	cf.History = patchHistory(cf.History)
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("testbed: patch: %w", err)
	}
	return img, nil
}

// patchHistory drops the history entry of the last layer (the last entry
// that is not an empty layer) and appends one for the patch. Entries for
// config-only steps after it keep their place; the patch's entry is last,
// where a rebuild would put it too if those steps came first.
func patchHistory(h []v1.History) []v1.History {
	if len(h) == 0 {
		return nil // no history at all is valid; a lone entry would not be
	}
	out := make([]v1.History, 0, len(h))
	dropped := false
	for i := len(h) - 1; i >= 0; i-- {
		if !dropped && !h[i].EmptyLayer {
			dropped = true
			continue
		}
		out = append(out, h[i])
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return append(out, v1.History{CreatedBy: "startgate testbed: patch (last layer replaced)"})
}
