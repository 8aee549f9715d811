package criproxy

import (
	"context"
	"fmt"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Pulls of one reference one after another, as kubelet's serialized
// puller makes them, share the first one's resolution inside the window;
// other credentials, an image record that moved or went away, a newer
// digest known to the prefetch, and a window of 0 each send the pull to
// containerd again.
func TestPullSharesARecentResolution(t *testing.T) {
	pf := &fakePrefetch{release: make(chan struct{})}
	close(pf.release)
	e := newEnv(t, nil, openPolicy(4), func(c *Config) {
		c.Pulls.ShareWindow = time.Hour
		c.Prefetch = pf
	})
	close(e.fake.pullGate)
	ctx := context.Background()
	hash := "5d8f7c9b4"
	pullFor := func(sb *runtimeapi.PodSandboxConfig, auth *runtimeapi.AuthConfig) string {
		t.Helper()
		r, err := e.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "app:1"}, Auth: auth, SandboxConfig: sb})
		if err != nil {
			t.Fatalf("PullImage app:1: %v", err)
		}
		return r.GetImageRef()
	}
	pod := 0
	pull := func(auth *runtimeapi.AuthConfig) string {
		t.Helper()
		pod++
		return pullFor(replicaSetPod("default", hash, fmt.Sprint("uid-", pod)), auth)
	}
	check := func(step string, wantUpstream int32, wantShared int) {
		t.Helper()
		if got := e.fake.pullCalls.Load(); got != wantUpstream {
			t.Errorf("%s: containerd saw %d pulls, want %d", step, got, wantUpstream)
		}
		if got := e.observe.get("pull-shared"); got != wantShared {
			t.Errorf("%s: %d pulls shared, want %d", step, got, wantShared)
		}
	}
	for range 5 {
		if got := pull(nil); got != "sha256:app:1" {
			t.Fatalf("PullImage app:1 = %q, want sha256:app:1", got)
		}
	}
	check("five pulls in a row", 1, 4)

	pull(&runtimeapi.AuthConfig{Username: "alice", Password: "secret"})
	check("another caller's credentials", 2, 4)
	pull(&runtimeapi.AuthConfig{Username: "alice", Password: "secret"})
	check("the same credentials again", 2, 5)

	e.fake.setImage("app:1", "sha256:someone-else-pulled")
	if got := pull(nil); got != "sha256:app:1" {
		t.Fatalf("PullImage app:1 after the tag moved = %q, want containerd's answer", got)
	}
	check("the node's tag moved", 3, 5)

	e.fake.setImage("app:1", "")
	pull(nil)
	check("the image was removed", 4, 5)

	pf.mu.Lock()
	pf.moved = true
	pf.mu.Unlock()
	pull(nil)
	check("the prefetch knows a newer digest", 5, 5)
	pull(nil)
	check("the prefetch still knows a newer digest", 6, 5)
	pf.mu.Lock()
	pf.moved = false
	pf.mu.Unlock()
	pull(nil)
	check("the same generation again", 6, 6)

	// A rollout: a new ReplicaSet, whose first pull resolves afresh.
	hash = "6b9d4f8c7"
	pull(nil)
	check("a new generation (rollout restart)", 7, 6)
	pull(nil)
	check("the new generation's next pod", 7, 7)
	pullFor(replicaSetPod("other", hash, "uid-x"), nil)
	check("the same hash in another namespace", 8, 7)
	pullFor(nil, nil)
	check("a pull for no pod (crictl pull)", 9, 7)
	pullFor(nil, nil)
	check("a pull for no pod, again", 10, 7)
}

// replicaSetPod is the sandbox config kubelet passes with a pull for a pod
// of a Deployment's ReplicaSet: the pod's labels and kubelet's own.
func replicaSetPod(ns, hash, uid string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: "web-" + hash + "-" + uid, Namespace: ns, Uid: uid},
		Labels: map[string]string{"app": "web", "pod-template-hash": hash,
			kubeNamespaceLabel: ns, kubePodUIDLabel: uid, "io.kubernetes.pod.name": "web-" + hash + "-" + uid},
	}
}

func TestPullGeneration(t *testing.T) {
	for _, tt := range []struct {
		name   string
		sb     *runtimeapi.PodSandboxConfig
		want   string
		wantOK bool
	}{
		{"ReplicaSet", replicaSetPod("ns", "abc", "u1"), `"ns"/pod-template-hash=abc`, true},
		{"StatefulSet", &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Namespace: "db", Uid: "u2"},
			Labels: map[string]string{"controller-revision-hash": "db-7f", "apps.kubernetes.io/pod-index": "0"}}, `"db"/controller-revision-hash=db-7f`, true},
		{"Job", &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Namespace: "ci", Uid: "u3"},
			Labels: map[string]string{"batch.kubernetes.io/controller-uid": "j1", "controller-uid": "j1"}}, `"ci"/batch.kubernetes.io/controller-uid=j1`, true},
		{"bare pod", &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Namespace: "ns", Uid: "u4"}}, `"ns"/pod=u4`, true},
		{"labels only", &runtimeapi.PodSandboxConfig{Labels: map[string]string{kubeNamespaceLabel: "ns", kubePodUIDLabel: "u5"}}, `"ns"/pod=u5`, true},
		{"no pod", nil, "", false},
		{"empty sandbox", &runtimeapi.PodSandboxConfig{}, "", false},
	} {
		got, ok := pullGeneration(tt.sb)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("%s: pullGeneration = %q, %v; want %q, %v", tt.name, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestPullShareWindowZeroNeverShares(t *testing.T) {
	e := newEnv(t, nil, openPolicy(4), func(c *Config) { c.Pulls.ShareWindow = 0 })
	close(e.fake.pullGate)
	for i := range 3 {
		if _, err := e.img.PullImage(context.Background(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "app:1"}}); err != nil {
			t.Fatalf("PullImage %d: %v", i, err)
		}
	}
	if got := e.fake.pullCalls.Load(); got != 3 {
		t.Errorf("share_window 0: containerd saw %d pulls for 3 callers one after another, want 3", got)
	}
	if got := e.fake.count("ImageStatus"); got != 0 {
		t.Errorf("share_window 0: %d ImageStatus checks, want none", got)
	}
}

// The window is counted from when the resolving pull began; memory is
// bounded.
func TestPullLaneWindow(t *testing.T) {
	pol := DefaultPullPolicy()
	pol.ShareWindow = 10 * time.Second
	l := newPullLane(pol, nil)
	t0 := time.Unix(1000, 0)
	r := resolution{imageID: "sha256:a", at: t0}
	l.remember("k", r)
	for _, tt := range []struct {
		at   time.Duration
		want bool
	}{{0, true}, {10*time.Second - 1, true}, {10 * time.Second, false}, {0, false}} {
		if _, ok := l.shared("k", t0.Add(tt.at)); ok != tt.want {
			t.Errorf("shared at +%s = %v, want %v", tt.at, ok, tt.want)
		}
	}
	l.remember("k", resolution{imageID: "sha256:b", at: t0.Add(time.Second)})
	l.remember("k", resolution{imageID: "sha256:a", at: t0}) // older: ignored
	if got, _ := l.shared("k", t0.Add(2*time.Second)); got.imageID != "sha256:b" {
		t.Errorf("after an older resolution landed late: shared %q, want sha256:b", got.imageID)
	}
	l.remember("empty", resolution{at: t0})
	if _, ok := l.shared("empty", t0); ok {
		t.Errorf("a resolution with no image ID was kept")
	}
	for i := range maxRecent + 10 {
		l.remember(fmt.Sprint(i), resolution{imageID: "sha256:x", at: t0.Add(time.Duration(i) * time.Millisecond)})
	}
	if n := len(l.recent.byKey); n > maxRecent {
		t.Errorf("%d resolutions kept, want at most %d", n, maxRecent)
	}
	if _, ok := l.shared(fmt.Sprint(maxRecent+9), t0.Add(time.Second)); !ok {
		t.Errorf("the newest resolution was dropped to make room")
	}
}

func TestPullPolicyShareWindowDefaults(t *testing.T) {
	for _, tt := range []struct{ in, want time.Duration }{
		{-1, DefaultPullPolicy().ShareWindow},
		{0, 0},
		{time.Second, time.Second},
		{time.Hour, MaxShareWindow},
	} {
		if got := (PullPolicy{ShareWindow: tt.in}).withDefaults().ShareWindow; got != tt.want {
			t.Errorf("ShareWindow %v withDefaults = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// kubelet copies every pod annotation into the pull's ImageSpec, its own
// per-pod kubernetes.io/config.seen among them: two pods' pulls of one
// image must still be one pull. A runtime handler or credentials make
// another.
func TestPullKey(t *testing.T) {
	req := func(ann map[string]string, handler, user string) *runtimeapi.PullImageRequest {
		r := &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "app:1", Annotations: ann, RuntimeHandler: handler}}
		if user != "" {
			r.Auth = &runtimeapi.AuthConfig{Username: user}
		}
		return r
	}
	a := pullKey(req(map[string]string{"kubernetes.io/config.seen": "2026-11-30T10:00:00.1Z"}, "", ""))
	if b := pullKey(req(map[string]string{"kubernetes.io/config.seen": "2026-11-30T10:00:00.2Z"}, "", "")); a != b {
		t.Errorf("two pods' pulls differing only in annotations have different keys")
	}
	for name, r := range map[string]*runtimeapi.PullImageRequest{
		"runtime handler": req(nil, "kata", ""),
		"credentials":     req(nil, "", "alice"),
		"image":           {Image: &runtimeapi.ImageSpec{Image: "app:2"}},
		"sandbox handler": {Image: &runtimeapi.ImageSpec{Image: "app:1"}, SandboxConfig: &runtimeapi.PodSandboxConfig{Annotations: map[string]string{runtimeHandlerAnnotation: "kata"}}},
	} {
		if pullKey(r) == a {
			t.Errorf("another %s: same key", name)
		}
	}
}

// With Passthrough every PullImage reaches containerd as kubelet sent it:
// concurrent pulls of one reference are not collapsed nor held in the
// lane (Max 1 here), later ones share no resolution, and none waits for
// a prefetch (whose Join never returns in this test).
func TestPullPassthrough(t *testing.T) {
	pf := &fakePrefetch{release: make(chan struct{})}
	e := newEnv(t, nil, openPolicy(4), func(c *Config) {
		c.Pulls = PullPolicy{Passthrough: true, Min: 1, Max: 1, ShareWindow: time.Hour}
		c.Prefetch = pf
	})
	const n = 4
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := e.img.PullImage(context.Background(), &runtimeapi.PullImageRequest{
				Image: &runtimeapi.ImageSpec{Image: "app:1"}, SandboxConfig: replicaSetPod("default", "5d8f7c9b4", fmt.Sprint("uid-", i))})
			errs <- err
		}()
	}
	waitUntil(t, "every pull to reach containerd at once", func() bool { return e.fake.pullCalls.Load() == n })
	close(e.fake.pullGate)
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("PullImage: %v", err)
		}
	}
	if _, err := e.img.PullImage(context.Background(), &runtimeapi.PullImageRequest{
		Image: &runtimeapi.ImageSpec{Image: "app:1"}, SandboxConfig: replicaSetPod("default", "5d8f7c9b4", "uid-late")}); err != nil {
		t.Fatalf("PullImage: %v", err)
	}
	if got := e.fake.pullCalls.Load(); got != n+1 {
		t.Errorf("containerd saw %d pulls, want %d: a passthrough pull was shared", got, n+1)
	}
	if got := e.observe.get("pull-shared"); got != 0 {
		t.Errorf("%d pulls shared, want none", got)
	}
	if joins, pulled := pf.snapshot(); len(joins) != 0 || len(pulled) != 0 {
		t.Errorf("passthrough pulls joined %v and reported %v to the prefetch, want neither", joins, pulled)
	}
}
