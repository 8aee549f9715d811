package bench

import (
	"context"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/startgate/startgate/harness/testbed"
)

// patchFile is the path of the patched layer's one file in the image.
const patchFile = "app/patch.bin"

// App is a benchmark's app image as last pushed: busybox and one layer of
// random bytes, which each patch replaces, as a patch rollout does. Both
// benchmarks (the emulated kubelet's and the real node's) use it.
type App struct {
	Image     v1.Image
	patchSize int
	patches   int
}

// NewApp builds the unpatched app image with a layer of patchSize bytes.
func NewApp(patchSize int) (*App, error) {
	layer, err := testbed.RandomLayer(patchFile, patchSize, 0)
	if err != nil {
		return nil, err
	}
	img, err := testbed.BusyboxImage(layer)
	if err != nil {
		return nil, err
	}
	return &App{Image: img, patchSize: patchSize}, nil
}

// Patch pushes repoTag again with the app's last layer replaced by new
// random bytes (a new seed each time) and returns the new manifest
// digest.
func (a *App) Patch(ctx context.Context, reg *testbed.Registry, repoTag string) (string, error) {
	a.patches++
	layer, err := testbed.RandomLayer(patchFile, a.patchSize, uint64(a.patches))
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
