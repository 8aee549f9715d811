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

// RandomLayer is a layer holding one file at path of size random bytes
// from seed: the same seed, the same layer (and digest).
func RandomLayer(path string, size int, seed uint64) (v1.Layer, error) {
	return RandomFilesLayer(path, 1, size, seed)
}

// RandomFilesLayer is a layer of files random files, size random bytes
// in all, from seed. One file is at path; more are path/NNN/NNNN, a
// hundred to a directory, as an interpreter's library tree of small
// modules. The same arguments give the same layer (and digest).
func RandomFilesLayer(path string, files, size int, seed uint64) (v1.Layer, error) {
	if size < 0 || files < 1 || files > 1_000_000 {
		return nil, fmt.Errorf("testbed: random layer: %d bytes in %d files: want 0 or more bytes in 1 to 1000000 files", size, files)
	}
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	data := make([]byte, size)
	_, _ = rand.NewChaCha8(s).Read(data) // never fails

	var buf bytes.Buffer
	buf.Grow(size + (files+1)*1536)
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	for i := range files {
		name := path
		if files > 1 {
			name = fmt.Sprintf("%s/%03d/%04d", path, i/100, i)
		}
		if err := addParents(tw, dirs, name); err != nil {
			return nil, err
		}
		lo, hi := i*size/files, (i+1)*size/files
		if err := writeFile(tw, name, 0o644, data[lo:hi]); err != nil {
			return nil, err
		}
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
