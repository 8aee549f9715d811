package fleet

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The resources of deploy/fleet/crds.yaml.
var (
	AnnouncementGVR = schema.GroupVersionResource{Group: "startgate.io", Version: "v1alpha1", Resource: "imageannouncements"}
	NodePrefetchGVR = schema.GroupVersionResource{Group: "startgate.io", Version: "v1alpha1", Resource: "nodeprefetches"}
)

const (
	apiVersion       = "startgate.io/v1alpha1"
	announcementKind = "ImageAnnouncement"
	nodePrefetchKind = "NodePrefetch"
)

// Announcement is an ImageAnnouncement: a tag's new digest.
type Announcement struct {
	// Name is the object's name, AnnouncementName(Reference, Digest) when
	// startgate made it.
	Name      string    `json:"name"`
	Reference string    `json:"reference"`
	Digest    string    `json:"digest"`
	Created   time.Time `json:"created"`
	Status    Progress  `json:"status"`
}

// Progress is an announcement's status: how many nodes are where.
type Progress struct {
	Done     int       `json:"done"`
	Fetching int       `json:"fetching"`
	Waiting  int       `json:"waiting"`
	Failed   int       `json:"failed"`
	Updated  time.Time `json:"updated"`
}

// AnnouncementName is the name an announcement of ref at dgst gets: the
// same announcement made twice (two nodes receiving one webhook, a retried
// CI step) is one object.
func AnnouncementName(ref, dgst string) string {
	h := sha256.Sum256([]byte(ref + "@" + dgst))
	return "ia-" + hex.EncodeToString(h[:10])
}

// NewAnnouncement validates ref (a tag reference, normalised as containerd
// names images) and dgst.
func NewAnnouncement(ref, dgst string) (Announcement, error) {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return Announcement{}, fmt.Errorf("fleet: announcement: %q is not an image reference: %w", ref, err)
	}
	if _, ok := named.(reference.Canonical); ok {
		return Announcement{}, fmt.Errorf("fleet: announcement: %q names a digest; want a tag", ref)
	}
	d, err := digest.Parse(dgst)
	if err != nil || d.Algorithm() != digest.SHA256 {
		return Announcement{}, fmt.Errorf("fleet: announcement: %q is not a sha256 digest", dgst)
	}
	r := named.String()
	return Announcement{Name: AnnouncementName(r, dgst), Reference: r, Digest: dgst}, nil
}

// object is a as the API's object.
func (a Announcement) object() *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": apiVersion,
		"kind":       announcementKind,
		"metadata":   map[string]any{"name": a.Name},
		"spec":       map[string]any{"reference": a.Reference, "digest": a.Digest},
	}}
}

// announcementFrom reads an ImageAnnouncement; an object whose spec does
// not validate (written by hand, say) is an error that names it.
func announcementFrom(u *unstructured.Unstructured) (Announcement, error) {
	ref, _, _ := unstructured.NestedString(u.Object, "spec", "reference")
	dgst, _, _ := unstructured.NestedString(u.Object, "spec", "digest")
	a, err := NewAnnouncement(ref, dgst)
	if err != nil {
		return Announcement{}, fmt.Errorf("fleet: ImageAnnouncement %s: %w", u.GetName(), err)
	}
	a.Name = u.GetName()
	a.Created = u.GetCreationTimestamp().Time
	st := func(k string) int {
		v, _, _ := unstructured.NestedInt64(u.Object, "status", k)
		return int(v)
	}
	a.Status = Progress{Done: st("done"), Fetching: st("fetching"), Waiting: st("waiting"), Failed: st("failed")}
	if s, ok, _ := unstructured.NestedString(u.Object, "status", "updated"); ok {
		a.Status.Updated, _ = time.Parse(time.RFC3339, s)
	}
	return a, nil
}

// State is where a node is with an announcement.
type State string

const (
	Waiting  State = "waiting"  // for an upstream slot
	Fetching State = "fetching" // holding one, or through a mirror
	Done     State = "done"
	Failed   State = "failed"
)

// Entry is one line of a node's NodePrefetch report.
type Entry struct {
	Announcement string    `json:"announcement"`
	Reference    string    `json:"reference"`
	Digest       string    `json:"digest"`
	State        State     `json:"state"`
	Message      string    `json:"message,omitempty"`
	Updated      time.Time `json:"updated"`
}
