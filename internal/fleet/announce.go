package fleet

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
)

// Announce creates the announcement of ref at dgst (it may exist: the
// same announcement twice is one).
func Announce(ctx context.Context, client dynamic.Interface, ref, dgst string) (Announcement, error) {
	a, err := NewAnnouncement(ref, dgst)
	if err != nil {
		return a, err
	}
	_, err = client.Resource(AnnouncementGVR).Create(ctx, a.object(), metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return a, fmt.Errorf("fleet: announce %s@%s: %w", a.Reference, a.Digest, err)
	}
	return a, nil
}
