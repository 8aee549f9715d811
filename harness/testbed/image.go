package testbed

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// BusyboxPath is the static busybox (Debian's busybox-static) that
// BusyboxImage copies into its root filesystem.
const BusyboxPath = "/bin/busybox"

// busyboxApplets get a symlink in /bin; the ones tests and demos use.
var busyboxApplets = []string{
	"sh", "ash", "sleep", "echo", "cat", "date", "true", "false", "ls",
	"env", "ps", "kill", "test", "[", "printf", "seq", "wc", "grep",
	"head", "tail", "touch", "mkdir", "rm", "yes", "sha256sum", "dd",
	"id", "hostname", "uname", "timeout", "nproc",
}

// BusyboxImage builds an OCI image whose first layer is a busybox root
// filesystem (/bin/busybox and applet symlinks, /etc/passwd, empty /tmp,
// /proc, /sys, /dev), followed by extra. Its command is `sh`; use
// WithEntrypoint or mutate.Config to change it.
func BusyboxImage(extra ...v1.Layer) (v1.Image, error) {
	bb, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("%w: %w (apt-get install busybox-static)", ErrUnsupported, err)
	}
	if err := checkStatic(bb); err != nil {
		return nil, err
	}
	rootfs, err := busyboxLayer(bb)
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: runtime.GOARCH,
		OS:           "linux",
		Config: v1.Config{
			Env: []string{"PATH=/bin"},
			Cmd: []string{"sh"},
		},
		RootFS: v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, fmt.Errorf("testbed: image config: %w", err)
	}
	img, err = mutate.AppendLayers(img, append([]v1.Layer{rootfs}, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("testbed: append layers: %w", err)
	}
	return img, nil
}

// WithEntrypoint returns img with its entrypoint set and its command
// cleared.
func WithEntrypoint(img v1.Image, entrypoint ...string) (v1.Image, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("testbed: image config: %w", err)
	}
	c := cf.Config
	c.Entrypoint, c.Cmd = entrypoint, nil
	img, err = mutate.Config(img, c)
	if err != nil {
		return nil, fmt.Errorf("testbed: image config: %w", err)
	}
	return img, nil
}

// File is one regular file of a layer built by Layer.
type File struct {
	Path string // relative to /, without a leading slash
	Mode int64  // permission bits; 0 means 0644
	Data []byte
}

// Layer builds an OCI layer (gzip) holding files; parent directories are
// added as needed.
func Layer(files ...File) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	for _, f := range files {
		if err := addParents(tw, dirs, f.Path); err != nil {
			return nil, err
		}
		mode := f.Mode
		if mode == 0 {
			mode = 0o644
		}
		if err := writeFile(tw, f.Path, mode, f.Data); err != nil {
			return nil, err
		}
	}
	return finishLayer(tw, &buf)
}

func busyboxLayer(bb []byte) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range []string{"bin", "dev", "etc", "proc", "sys", "root", "var"} {
		if err := writeDir(tw, d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := writeDir(tw, "tmp", 0o1777); err != nil {
		return nil, err
	}
	if err := writeFile(tw, "bin/busybox", 0o755, bb); err != nil {
		return nil, err
	}
	for _, a := range busyboxApplets {
		hdr := &tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777, ModTime: epoch}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("testbed: layer: %w", err)
		}
	}
	if err := writeFile(tw, "etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")); err != nil {
		return nil, err
	}
	if err := writeFile(tw, "etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n")); err != nil {
		return nil, err
	}
	return finishLayer(tw, &buf)
}

// checkStatic refuses a dynamically linked busybox (Debian's "busybox"
// package also installs /bin/busybox): the image has no libc.
func checkStatic(bin []byte) error {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return fmt.Errorf("testbed: %s: %w", BusyboxPath, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%w: %s is dynamically linked (apt-get install busybox-static)", ErrUnsupported, BusyboxPath)
		}
	}
	return nil
}

// epoch keeps layers reproducible: the same files give the same digest.
var epoch = time.Unix(0, 0)

func addParents(tw *tar.Writer, done map[string]bool, p string) error {
	for i := 0; i < len(p); i++ {
		if p[i] != '/' {
			continue
		}
		d := p[:i]
		if done[d] {
			continue
		}
		done[d] = true
		if err := writeDir(tw, d, 0o755); err != nil {
			return err
		}
	}
	return nil
}

func writeDir(tw *tar.Writer, name string, mode int64) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: epoch}); err != nil {
		return fmt.Errorf("testbed: layer: %w", err)
	}
	return nil
}

func writeFile(tw *tar.Writer, name string, mode int64, data []byte) error {
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: epoch}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("testbed: layer: %w", err)
	}
	if _, err := tw.Write(data); err != nil {
		return fmt.Errorf("testbed: layer: %w", err)
	}
	return nil
}

func finishLayer(tw *tar.Writer, buf *bytes.Buffer) (v1.Layer, error) {
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("testbed: layer: %w", err)
	}
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
	if err != nil {
		return nil, fmt.Errorf("testbed: layer: %w", err)
	}
	return l, nil
}

// ImportImage imports img into the testbed's containerd (namespace k8s.io)
// under ref, unpacks it into the CRI's snapshotter, and returns once the
// CRI's ImageStatus knows it, so that CreateContainer and RunPodSandbox
// find it without a pull. ref is normalized the way the CRI does it
// ("busybox" is "docker.io/library/busybox:latest").
func (tb *Testbed) ImportImage(ctx context.Context, ref string, img v1.Image) error {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return fmt.Errorf("testbed: image reference %q: %w", ref, err)
	}
	ref = named.String()

	pr, pw := io.Pipe()
	writeErr := make(chan error, 1)
	go func() {
		err := writeOCILayout(pw, ref, img)
		pw.CloseWithError(err)
		writeErr <- err
	}()
	imgs, err := tb.client.Import(ctx, pr)
	if err == nil {
		// The importer may stop reading before the tar trailer.
		_, err = io.Copy(io.Discard, pr)
	}
	pr.CloseWithError(io.ErrClosedPipe) // unblocks the writer if Import failed
	if werr := <-writeErr; werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		return fmt.Errorf("testbed: import %s: %w", ref, err)
	}
	if len(imgs) != 1 || imgs[0].Name != ref {
		return fmt.Errorf("testbed: import %s: got images %v, want exactly %s", ref, imgs, ref)
	}
	cimg, err := tb.client.GetImage(ctx, ref)
	if err != nil {
		return fmt.Errorf("testbed: import %s: %w", ref, err)
	}
	if err := cimg.Unpack(ctx, tb.snapshotter); err != nil {
		return fmt.Errorf("testbed: unpack %s into %s: %w", ref, tb.snapshotter, err)
	}
	id, err := img.ConfigName()
	if err != nil {
		return fmt.Errorf("testbed: import %s: %w", ref, err)
	}
	return tb.waitCRIImage(ctx, ref, id.String())
}

// waitCRIImage polls the CRI until ImageStatus(ref) has image ID id (the
// config digest): the CRI plugin learns of imported images from
// containerd's events, asynchronously, and a re-imported ref ("patch")
// shows the old ID until then.
func (tb *Testbed) waitCRIImage(ctx context.Context, ref, id string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := tb.images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		if err == nil && resp.GetImage().GetId() == id {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("testbed: CRI does not see imported image %s as %s: got %q: %w (last error: %v)", ref, id, resp.GetImage().GetId(), ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// writeOCILayout writes img as an OCI image layout tar whose index names it
// ref (io.containerd.image.name, which containerd's import uses verbatim).
// Blobs keep their media types, unlike the docker save format, which
// containerd's importer re-describes.
func writeOCILayout(w io.Writer, ref string, img v1.Image) error {
	tw := tar.NewWriter(w)
	written := map[v1.Hash]bool{}
	blob := func(h v1.Hash, size int64, r io.Reader) error {
		if written[h] {
			return nil
		}
		written[h] = true
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: "blobs/" + h.Algorithm + "/" + h.Hex, Mode: 0o444, Size: size, ModTime: epoch}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := io.Copy(tw, r)
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		h, err := l.Digest()
		if err != nil {
			return err
		}
		size, err := l.Size()
		if err != nil {
			return err
		}
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		err = blob(h, size, rc)
		rc.Close()
		if err != nil {
			return err
		}
	}
	rawCfg, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return err
	}
	if err := blob(cfgName, int64(len(rawCfg)), bytes.NewReader(rawCfg)); err != nil {
		return err
	}
	rawMf, err := img.RawManifest()
	if err != nil {
		return err
	}
	mfDigest, err := img.Digest()
	if err != nil {
		return err
	}
	if err := blob(mfDigest, int64(len(rawMf)), bytes.NewReader(rawMf)); err != nil {
		return err
	}
	mt, err := img.MediaType()
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	index := ocispec.Index{
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{{
			MediaType:   string(mt),
			Digest:      digest.Digest(mfDigest.String()),
			Size:        int64(len(rawMf)),
			Platform:    &ocispec.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant},
			Annotations: map[string]string{images.AnnotationImageName: ref},
		}},
	}
	index.SchemaVersion = 2
	for _, f := range []struct {
		name string
		v    any
	}{
		{ocispec.ImageLayoutFile, ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion}},
		{ocispec.ImageIndexFile, index},
	} {
		b, err := json.Marshal(f.v)
		if err != nil {
			return err
		}
		if err := writeFile(tw, f.name, 0o444, b); err != nil {
			return err
		}
	}
	return tw.Close()
}
