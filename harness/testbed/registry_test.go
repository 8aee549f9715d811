package testbed

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remotecri "k8s.io/cri-client/pkg"
)

func TestRegistryStopLeavesNothing(t *testing.T) {
	ctx := context.Background()
	start := time.Now()
	r, err := StartRegistry(ctx, RegistryOptions{Parent: t.TempDir()})
	if err != nil {
		skipOrFail(t, err)
	}
	t.Logf("registry %s answered GET /v2/ after %v", r.Host(), time.Since(start))
	dir := r.Dir()
	pids, err := ProcessesUsing(dir)
	if err != nil || len(pids) != 1 {
		t.Errorf("ProcessesUsing(%s) while running = %v, %v; want one process", dir, pids, err)
	}
	if !strings.HasPrefix(r.Host(), "127.0.0.1:") {
		t.Errorf("Host() = %q, want 127.0.0.1:PORT", r.Host())
	}

	if err := r.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := r.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if pids, err := ProcessesUsing(dir); err != nil || len(pids) != 0 {
		t.Errorf("ProcessesUsing(%s) after Stop = %v, %v; want none", dir, pids, err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat %s after Stop: %v, want not exist", dir, err)
	}
	if c, err := net.DialTimeout("tcp", r.Host(), time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after Stop", r.Host())
	}
}

func TestRegistryStartErrorCarriesLogTail(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "fake-registry")
	script := "#!/bin/sh\necho \"configuration error: boom in $2\" >&2\nexit 1\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	parent := t.TempDir()
	_, err := StartRegistry(context.Background(), RegistryOptions{Parent: parent, Binary: bin})
	if err == nil || !strings.Contains(err.Error(), "configuration error: boom in") {
		t.Fatalf("StartRegistry with a failing binary: got error %v, want one carrying the log's tail", err)
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 0 {
		t.Errorf("failed StartRegistry left %v in %s", ents, parent)
	}
}

func TestRegistryRetriesATakenPort(t *testing.T) {
	if _, err := exec.LookPath("docker-registry"); err != nil {
		skipOrFail(t, fmt.Errorf("%w: %w", ErrUnsupported, err))
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).Port
	picks := 0
	pick := func() (int, error) {
		picks++
		if picks == 1 {
			return takenPort, nil
		}
		return freeLoopbackPort()
	}
	r, err := startRegistry(context.Background(), RegistryOptions{Parent: t.TempDir()}, pick)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop(context.Background())
	if picks != 2 || r.Host() == net.JoinHostPort("127.0.0.1", strconv.Itoa(takenPort)) {
		t.Errorf("after a taken port: %d picks, host %s; want 2 picks and another port than %d", picks, r.Host(), takenPort)
	}
}

// skipOrFail skips the test on ErrUnsupported, as StartT does, except
// under CI=true; any other error fails it.
func skipOrFail(t *testing.T, err error) {
	t.Helper()
	if errors.Is(err, ErrUnsupported) && os.Getenv("CI") != "true" {
		t.Skip(err)
	}
	t.Fatal(err)
}

func TestRandomLayer(t *testing.T) {
	const size = 1 << 20
	a, err := RandomLayer("app/data", size, 1)
	if err != nil {
		t.Fatal(err)
	}
	a2, _ := RandomLayer("app/data", size, 1)
	b, _ := RandomLayer("app/data", size, 2)
	da, _ := a.Digest()
	da2, _ := a2.Digest()
	db, _ := b.Digest()
	if da != da2 {
		t.Errorf("seed 1 twice: digests %s and %s, want equal", da, da2)
	}
	if da == db {
		t.Errorf("seeds 1 and 2: same digest %s", da)
	}
	if n, _ := a.Size(); n < size || n > size+size/100 {
		t.Errorf("compressed size of %d random bytes = %d, want about the same (incompressible)", size, n)
	}
}

func TestReplaceLastLayer(t *testing.T) {
	app, _ := RandomLayer("app/data", 4<<10, 1)
	base, err := BusyboxImage(app)
	if err == nil {
		base, err = WithEntrypoint(base, "sleep", "1")
	}
	if err != nil {
		skipOrFail(t, err)
	}
	patched, _ := RandomLayer("app/data", 4<<10, 2)
	img, err := ReplaceLastLayer(base, patched)
	if err != nil {
		t.Fatal(err)
	}
	bl, _ := base.Layers()
	il, _ := img.Layers()
	if len(il) != len(bl) {
		t.Fatalf("patched image has %d layers, want %d", len(il), len(bl))
	}
	for i := range il {
		got, _ := il[i].Digest()
		want, _ := bl[i].Digest()
		if i == len(il)-1 {
			want, _ = patched.Digest()
		}
		if got != want {
			t.Errorf("layer %d: got %s, want %s", i, got, want)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got := cf.Config.Entrypoint; !slices.Equal(got, []string{"sleep", "1"}) {
		t.Errorf("patched entrypoint = %v, want [sleep 1]", got)
	}
	pd, _ := patched.DiffID()
	if n := len(cf.RootFS.DiffIDs); n != len(bl) || cf.RootFS.DiffIDs[n-1] != pd {
		t.Errorf("patched diff IDs = %v, want %d ending in %s", cf.RootFS.DiffIDs, len(bl), pd)
	}
	if len(cf.History) != len(bl) {
		t.Errorf("patched history has %d entries, want %d (one per layer)", len(cf.History), len(bl))
	}
	bmt, _ := base.MediaType()
	imt, _ := img.MediaType()
	if bmt != imt {
		t.Errorf("patched manifest media type = %s, want %s", imt, bmt)
	}
}

// pushApp pushes busybox plus an app layer of size random bytes as repoTag
// and checks what the registry serves for it.
func pushApp(ctx context.Context, t *testing.T, r *Registry, repoTag string, size int) (v1.Image, string) {
	t.Helper()
	app, err := RandomLayer("app/data", size, 1)
	if err != nil {
		t.Fatal(err)
	}
	img, err := BusyboxImage(app)
	if err == nil {
		img, err = WithEntrypoint(img, "sleep", "3600")
	}
	if err != nil {
		skipOrFail(t, err)
	}
	start := time.Now()
	d, err := r.Push(ctx, repoTag, img)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("push %s (busybox + %d MB layer): %v", repoTag, size>>20, time.Since(start))
	checkServed(ctx, t, r, repoTag, d)
	return img, d
}

func checkServed(ctx context.Context, t *testing.T, r *Registry, repoTag, want string) {
	t.Helper()
	ref, err := name.ParseReference(r.Ref(repoTag))
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Head(ref, remote.WithContext(ctx), remote.WithTransport(r.transport))
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest.String() != want {
		t.Errorf("HEAD %s: digest %s, want %s", ref, desc.Digest, want)
	}
}

func TestRegistryPushAndPatch(t *testing.T) {
	ctx := context.Background()
	r := StartRegistryT(t, RegistryOptions{})
	base, d1 := pushApp(ctx, t, r, "app:1", 1<<20)

	changed, _ := RandomLayer("app/data", 1<<20, 2)
	img, d2, err := r.Patch(ctx, "app:1", base, changed)
	if err != nil {
		t.Fatal(err)
	}
	if d2 == d1 {
		t.Errorf("patch digest = %s, same as before", d2)
	}
	if got, _ := img.Digest(); got.String() != d2 {
		t.Errorf("Patch returned image %s and digest %s, want equal", got, d2)
	}
	checkServed(ctx, t, r, "app:1", d2)
	checkServed(ctx, t, r, "app@"+d1, d1) // still there by digest

	for _, bad := range []string{"example.com/app:1", "app", "Upper:1"} {
		if _, err := r.Push(ctx, bad, img); err == nil {
			t.Errorf("Push(%q) succeeded, want an error", bad)
		}
	}
}

// registryEvent is the part of a distribution notification the tests read.
type registryEvent struct {
	Action string `json:"action"`
	Target struct {
		MediaType  string `json:"mediaType"`
		Digest     string `json:"digest"`
		Repository string `json:"repository"`
		Tag        string `json:"tag"`
	} `json:"target"`
}

func TestRegistryNotifiesPush(t *testing.T) {
	ctx := context.Background()
	const token = "s3cret-token"
	type delivery struct {
		auth   string
		events []registryEvent
		at     time.Time
	}
	got := make(chan delivery, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var env struct {
			Events []registryEvent `json:"events"`
		}
		if err := json.NewDecoder(req.Body).Decode(&env); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		select {
		case got <- delivery{auth: req.Header.Get("Authorization"), events: env.Events, at: time.Now()}:
		default:
		}
	}))
	defer srv.Close()
	r := StartRegistryT(t, RegistryOptions{NotifyURL: srv.URL + "/events", NotifyToken: token})

	_, d := pushApp(ctx, t, r, "app:1", 1<<10)
	pushed := time.Now()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case dl := <-got:
			for _, ev := range dl.events {
				if ev.Action != "push" || ev.Target.Digest != d {
					continue
				}
				if ev.Target.Repository != "app" || ev.Target.Tag != "1" {
					t.Errorf("push event for %s: repository %q tag %q, want app and 1", d, ev.Target.Repository, ev.Target.Tag)
				}
				if want := "Bearer " + token; dl.auth != want {
					t.Errorf("notification Authorization = %q, want %q", dl.auth, want)
				}
				t.Logf("push event for the manifest %v after the push returned (media type %s)", dl.at.Sub(pushed), ev.Target.MediaType)
				return
			}
		case <-deadline:
			t.Fatalf("no push event for app:1 (%s) within 5s", d)
		}
	}
}

// TestCRIPullsFromRegistry pulls through the CRI, as kubelet does, from the
// testbed's registry: containerd 1.6 must speak plain HTTP to it.
func TestCRIPullsFromRegistry(t *testing.T) {
	ctx := context.Background()
	tb := StartT(t, Options{})
	start := time.Now()
	r := StartRegistryT(t, RegistryOptions{})
	t.Logf("registry start: %v", time.Since(start))
	images, err := remotecri.NewRemoteImageServiceBuilder().
		WithEndpoint("unix://" + tb.Endpoint()).
		WithConnectionTimeout(criTimeout).
		WithTracerProvider(nil).
		Build(ctx)
	if err != nil {
		t.Fatalf("cri image client: %v", err)
	}
	t.Cleanup(func() { _ = images.Close(ctx) })

	const size = 20 << 20
	base, _ := pushApp(ctx, t, r, "app:1", size)
	pull := func(img v1.Image, mfDigest string) {
		t.Helper()
		want, err := img.ConfigName()
		if err != nil {
			t.Fatal(err)
		}
		ref := r.Ref("app:1")
		start := time.Now()
		id, err := images.PullImage(ctx, &runtimeapi.ImageSpec{Image: ref}, nil, nil)
		if err != nil {
			t.Fatalf("CRI PullImage %s: %v", ref, err)
		}
		t.Logf("CRI PullImage %s: %v", ref, time.Since(start))
		if id != want.String() {
			t.Errorf("CRI PullImage %s: image ID %s, want the config digest %s", ref, id, want)
		}
		st, err := images.ImageStatus(ctx, &runtimeapi.ImageSpec{Image: ref}, false)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.GetImage().GetId(); got != want.String() {
			t.Errorf("CRI ImageStatus %s: ID %s, want %s", ref, got, want)
		}
		if wantRD := r.Host() + "/app@" + mfDigest; !slices.Contains(st.GetImage().GetRepoDigests(), wantRD) {
			t.Errorf("CRI ImageStatus %s: repo digests %v, want %s among them", ref, st.GetImage().GetRepoDigests(), wantRD)
		}
	}
	d1, _ := base.Digest()
	pull(base, d1.String())

	changed, err := RandomLayer("app/data", size, 2)
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	patched, d2, err := r.Patch(ctx, "app:1", base, changed)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("patch push (one %d MB layer changed): %v", size>>20, time.Since(start))
	pull(patched, d2)
}

func TestRandomFilesLayer(t *testing.T) {
	const files, size = 250, 1 << 20
	l, err := RandomFilesLayer("app/lib", files, size, 7)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	n, total := 0, int64(0)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			n++
			total += h.Size
		}
	}
	if n != files || total != size {
		t.Errorf("layer holds %d files of %d bytes in all, want %d of %d", n, total, files, size)
	}
	for _, bad := range [][2]int{{0, size}, {1, -1}} {
		if _, err := RandomFilesLayer("app/lib", bad[0], bad[1], 1); err == nil {
			t.Errorf("RandomFilesLayer(%d files, %d bytes): no error", bad[0], bad[1])
		}
	}
}
