package bench

import (
	"context"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/startgate/startgate/harness/testbed"
)

// patchFile is the path of the patched layer's one file in the image;
// PatchDir the directory of its files when it has many (NewFilesApp).
const (
	patchFile = "app/patch.bin"
	PatchDir  = "app/lib"
)

// App is a benchmark's app image as last pushed: busybox and one layer of
// random bytes, which each patch replaces, as a patch rollout does. Both
// benchmarks (the emulated kubelet's and the real node's) use it.
type App struct {
	Image     v1.Image
	patchSize int
	files     int
	patches   int
}

// NewApp builds the unpatched app image with a layer of patchSize bytes.
func NewApp(patchSize int) (*App, error) { return NewFilesApp(patchSize, 1) }

// NewFilesApp builds the unpatched app image with a layer of files files
// (under PatchDir when more than one), patchSize bytes in all: an app
// whose patch replaces a library tree of small modules.
func NewFilesApp(patchSize, files int) (*App, error) {
	a := &App{patchSize: patchSize, files: files}
	layer, err := a.layer(0)
	if err != nil {
		return nil, err
	}
	if a.Image, err = testbed.BusyboxImage(layer); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *App) layer(seed uint64) (v1.Layer, error) {
	if a.files > 1 {
		return testbed.RandomFilesLayer(PatchDir, a.files, a.patchSize, seed)
	}
	return testbed.RandomLayer(patchFile, a.patchSize, seed)
}

// Patcher pushes base with its last layer replaced by changed under
// repoTag (testbed.Registry.Patch is one).
type Patcher interface {
	Patch(ctx context.Context, repoTag string, base v1.Image, changed v1.Layer) (v1.Image, string, error)
}

// Patch pushes repoTag again with the app's last layer replaced by new
// random bytes (a new seed each time) and returns the new manifest
// digest.
func (a *App) Patch(ctx context.Context, reg Patcher, repoTag string) (string, error) {
	a.patches++
	layer, err := a.layer(uint64(a.patches))
	if err != nil {
		return "", err
	}
	img, d, err := reg.Patch(ctx, repoTag, a.Image, layer)
	if err != nil {
		return "", err
	}
	a.Image = img
	return d, nil
}
