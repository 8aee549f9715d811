package testbed

import (
	"context"
	"net/http"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remotecri "k8s.io/cri-client/pkg"
)

func TestParseScope(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    access
		wantErr bool
	}{
		{in: "repository:app:pull", want: access{"repository", "app", []string{"pull"}}},
		{in: "repository:team/app:pull,push", want: access{"repository", "team/app", []string{"pull", "push"}}},
		{in: "registry:catalog:*", want: access{"registry", "catalog", []string{"*"}}},
		{in: "repository", wantErr: true},
		{in: "repository:app", wantErr: true},
	} {
		got, err := parseScope(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseScope(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if err == nil && (got.Type != tt.want.Type || got.Name != tt.want.Name || len(got.Actions) != len(tt.want.Actions)) {
			t.Errorf("parseScope(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

// TestTokenRegistryBehindLink is a registry as far away as a public one:
// it asks for a bearer token, its token service and itself sit behind a
// link with a round trip, and containerd's CRI pulls through all of it.
// Every pull authenticates again, also when every layer is local: that
// is the per-pod cost issue 10's pull-chain work cuts.
func TestTokenRegistryBehindLink(t *testing.T) {
	ctx := context.Background()
	tb := StartT(t, Options{})
	link, err := NewLink(LinkOptions{RTT: 20 * time.Millisecond, Bandwidth: 100e6 / 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = link.Close() })
	r := StartRegistryT(t, RegistryOptions{Token: true})

	// Without a token the registry says no, and names the realm.
	resp, err := http.Get("http://" + r.Host() + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /v2/ without a token: %s, want 401", resp.Status)
	}
	pushApp(ctx, t, r, "app:1", 1<<20) // follows the challenge
	if r.TokensIssued() == 0 {
		t.Fatalf("the push got no token")
	}

	far, err := link.Forward(r.Host())
	if err != nil {
		t.Fatal(err)
	}
	images, err := remotecri.NewRemoteImageServiceBuilder().
		WithEndpoint("unix://" + tb.Endpoint()).
		WithConnectionTimeout(criTimeout).
		WithTracerProvider(nil).
		Build(ctx)
	if err != nil {
		t.Fatalf("cri image client: %v", err)
	}
	t.Cleanup(func() { _ = images.Close(ctx) })
	ref := far + "/app:1"
	for i := range 3 {
		before := r.TokensIssued()
		start := time.Now()
		if _, err := images.PullImage(ctx, &runtimeapi.ImageSpec{Image: ref}, nil, nil); err != nil {
			t.Fatalf("CRI PullImage %s (pull %d): %v", ref, i+1, err)
		}
		took := time.Since(start)
		if r.TokensIssued() == before {
			t.Errorf("CRI PullImage %s (pull %d) took no token, want one per pull", ref, i+1)
		}
		t.Logf("CRI PullImage %s (pull %d, RTT 20 ms, %d tokens): %v", ref, i+1, r.TokensIssued()-before, took)
	}
}
