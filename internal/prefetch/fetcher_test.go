package prefetch

import (
	"errors"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/platforms"
	"maps"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	d1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	d2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

func TestPinnedRef(t *testing.T) {
	for _, tc := range []struct {
		ref, dgst string
		want      string
		err       error // nil: no error; errAny: any error
	}{
		{ref: "busybox", want: "docker.io/library/busybox:latest"},
		{ref: "127.0.0.1:5000/app:1", want: "127.0.0.1:5000/app:1"},
		{ref: "127.0.0.1:5000/app:1", dgst: d1, want: "127.0.0.1:5000/app@" + d1},
		{ref: "127.0.0.1:5000/app@" + d1, dgst: d1, want: "127.0.0.1:5000/app@" + d1},
		{ref: "127.0.0.1:5000/app@" + d1, dgst: d2, err: ErrDigestMismatch},
		{ref: "127.0.0.1:5000/app:1", dgst: "sha256:nothex", err: errAny},
		{ref: "app/Upper:1", err: errAny},
	} {
		got, err := pinnedRef(tc.ref, tc.dgst)
		switch {
		case tc.err == nil && err != nil:
			t.Errorf("pinnedRef(%q, %q): error %v, want %s", tc.ref, tc.dgst, err, tc.want)
		case tc.err == nil && got.String() != tc.want:
			t.Errorf("pinnedRef(%q, %q) = %s, want %s", tc.ref, tc.dgst, got, tc.want)
		case tc.err == errAny && err == nil:
			t.Errorf("pinnedRef(%q, %q) = %s, want an error", tc.ref, tc.dgst, got)
		case tc.err != nil && tc.err != errAny && !errors.Is(err, tc.err):
			t.Errorf("pinnedRef(%q, %q): error %v, want %v", tc.ref, tc.dgst, err, tc.err)
		}
	}
}

var errAny = errors.New("any error")

func TestChildLabels(t *testing.T) {
	cfg := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.Digest(d1)}
	l0 := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.Digest(d1)}
	l1 := ocispec.Descriptor{MediaType: "application/vnd.docker.image.rootfs.diff.tar.gzip", Digest: digest.Digest(d2)}
	mf := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.Digest(d2)}
	for _, tc := range []struct {
		name     string
		children []ocispec.Descriptor
		want     map[string]string
	}{
		{"manifest", []ocispec.Descriptor{cfg, l0, l1}, map[string]string{
			"containerd.io/gc.ref.content.config": d1,
			"containerd.io/gc.ref.content.l.1":    d1,
			"containerd.io/gc.ref.content.l.2":    d2,
		}},
		{"index", []ocispec.Descriptor{mf}, map[string]string{"containerd.io/gc.ref.content.m.0": d2}},
		{"none", nil, map[string]string{}},
	} {
		if got := childLabels(tc.children); !maps.Equal(got, tc.want) {
			t.Errorf("childLabels(%s) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestPick(t *testing.T) {
	amd := &ocispec.Platform{OS: "linux", Architecture: "amd64"}
	arm := &ocispec.Platform{OS: "linux", Architecture: "arm64"}
	f, err := New(nil, Options{})
	if err == nil {
		t.Fatalf("New(nil client) = %v, want an error", f)
	}
	f = &Fetcher{}
	for _, tc := range []struct {
		name  string
		node  *ocispec.Platform
		descs []ocispec.Descriptor
		want  digest.Digest // "" means none
	}{
		{"amd64 node", amd, []ocispec.Descriptor{{Digest: d1, Platform: arm}, {Digest: d2, Platform: amd}}, d2},
		{"arm64 node", arm, []ocispec.Descriptor{{Digest: d1, Platform: arm}, {Digest: d2, Platform: amd}}, d1},
		{"no match", arm, []ocispec.Descriptor{{Digest: d2, Platform: amd}}, ""},
		{"no platform", amd, []ocispec.Descriptor{{Digest: d1}}, ""},
	} {
		*f = Fetcher{}
		f.platform = *tc.node
		f.matcher = platforms.Only(*tc.node)
		got, ok := f.pick(tc.descs)
		if (tc.want == "") == ok || got.Digest != tc.want {
			t.Errorf("pick(%s) = %s, %v; want %q", tc.name, got.Digest, ok, tc.want)
		}
	}
}

func TestNewOptions(t *testing.T) {
	// A non-nil client is needed past the first check; the option checks
	// come before any use of it.
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"no snapshotter", Options{}},
		{"negative expiry", Options{Snapshotter: "overlayfs", LeaseExpiry: -1}},
	} {
		if _, err := New(new(containerd.Client), tc.opts); err == nil {
			t.Errorf("New(%s) succeeded, want an error", tc.name)
		}
	}
}
