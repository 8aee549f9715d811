package fleet

import (
	"context"
	"fmt"
	"slices"
	"strings"

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

// List returns the cluster's announcements, newest first.
func List(ctx context.Context, client dynamic.Interface) ([]Announcement, error) {
	l, err := client.Resource(AnnouncementGVR).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("fleet: list announcements: %w", err)
	}
	out := make([]Announcement, 0, len(l.Items))
	for i := range l.Items {
		if a, err := announcementFrom(&l.Items[i]); err == nil {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(a, b Announcement) int { return b.Created.Compare(a.Created) })
	return out, nil
}

// NodeState is one node's report on one announcement.
type NodeState struct {
	Node string `json:"node"`
	Entry
}

// NodeStates returns every node's report on the announcement named name
// (one list of the NodePrefetch objects), by node.
func NodeStates(ctx context.Context, client dynamic.Interface, name string) ([]NodeState, error) {
	l, err := client.Resource(NodePrefetchGVR).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("fleet: list node reports: %w", err)
	}
	var out []NodeState
	for i := range l.Items {
		for _, e := range entriesOf(&l.Items[i]) {
			if e.Announcement == name {
				out = append(out, NodeState{Node: l.Items[i].GetName(), Entry: e})
			}
		}
	}
	slices.SortFunc(out, func(a, b NodeState) int { return strings.Compare(a.Node, b.Node) })
	return out, nil
}
