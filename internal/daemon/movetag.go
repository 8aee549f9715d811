package daemon

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// moveTag is prefetch.move_tag: it moves a tag to the digest just
// prefetched by asking containerd's CRI to pull the tag. Every blob is
// local by then, so the pull moves no layer bytes and unpacks nothing; it
// resolves the tag once and writes the image records, and the CRI's own
// image cache learns of them, which writing the records ourselves would
// not do. It talks to containerd directly, never through startgated's
// proxy: the proxy would count the pull as a hit.
//
// If the tag moved again since the fetch, the CRI pulls what it points
// at now: the tag is the source of truth, and the manager sees the new
// digest on its next resolve.
func moveTag(conn any, log *zap.Logger) (func(ctx context.Context, ref, digest string) error, error) {
	cc, ok := conn.(*grpc.ClientConn)
	if !ok || cc == nil {
		return nil, errors.New("daemon: prefetch.move_tag: containerd client has no gRPC connection")
	}
	images := runtimeapi.NewImageServiceClient(cc)
	return func(ctx context.Context, ref, digest string) error {
		r, err := images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		if err != nil {
			return fmt.Errorf("move tag %s to %s: CRI PullImage: %w", ref, digest, err)
		}
		log.Info("prefetch: tag moved", zap.String("ref", ref), zap.String("digest", digest), zap.String("image_id", r.GetImageRef()))
		return nil
	}, nil
}
