package prefetch

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// registryStub is a registry's /v2/ and one manifest behind Basic auth.
type registryStub struct {
	user, pass string

	mu       sync.Mutex
	authed   int      // requests that came with the right credentials
	requests []string // METHOD PATH auth?
}

const stubDigest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func (s *registryStub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u, p, ok := r.BasicAuth()
	ok = ok && u == s.user && p == s.pass
	s.mu.Lock()
	s.requests = append(s.requests, fmt.Sprintf("%s %s %v", r.Method, r.URL.Path, ok))
	if ok {
		s.authed++
	}
	s.mu.Unlock()
	if !ok {
		w.Header().Set("WWW-Authenticate", `Basic realm="stub"`)
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
		return
	}
	switch {
	case r.URL.Path == "/v2/":
		w.WriteHeader(http.StatusOK)
	case r.URL.Path == "/v2/app/manifests/1" && r.Method == http.MethodHead:
		w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
		w.Header().Set("Docker-Content-Digest", stubDigest)
		w.Header().Set("Content-Length", "123")
		w.WriteHeader(http.StatusOK)
	default:
		http.NotFound(w, r)
	}
}

// TestResolverSendsCredentials: the Fetcher's resolver answers the
// registry's Basic challenge with the docker config's credentials for the
// host, and resolves the tag; without them, or with wrong ones, it fails.
func TestResolverSendsCredentials(t *testing.T) {
	stub := &registryStub{user: "alice", pass: "pw"}
	srv := httptest.NewServer(stub)
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://") // 127.0.0.1:PORT: plain HTTP as loopback
	ref := host + "/app:1"

	for _, tt := range []struct {
		name   string
		config string
		ok     bool
	}{
		{"credentials", `{"auths":{"` + host + `":{"auth":"` + b64("alice:pw") + `"}}}`, true},
		{"credentials by URL key", `{"auths":{"http://` + host + `/v2/":{"username":"alice","password":"pw"}}}`, true},
		{"wrong password", `{"auths":{"` + host + `":{"auth":"` + b64("alice:nope") + `"}}}`, false},
		{"no entry for the host", `{"auths":{"other.example":{"auth":"` + b64("alice:pw") + `"}}}`, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseDockerConfig([]byte(tt.config))
			if err != nil {
				t.Fatal(err)
			}
			stub.mu.Lock()
			stub.authed, stub.requests = 0, nil
			stub.mu.Unlock()
			hosts := newRegistries(Options{PlainHTTP: docker.MatchLocalhost, Credentials: c.Credentials, RequestTimeout: 5 * time.Second})
			defer hosts.closeIdle()
			r := hosts.resolver()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, desc, err := r.Resolve(ctx, ref)
			stub.mu.Lock()
			authed, reqs := stub.authed, stub.requests
			stub.mu.Unlock()
			t.Logf("requests: %v", reqs)
			if tt.ok {
				if err != nil || desc.Digest.String() != stubDigest {
					t.Fatalf("Resolve(%s) = %v, %v; want %s", ref, desc.Digest, err, stubDigest)
				}
				if authed == 0 {
					t.Errorf("no request carried the credentials")
				}
				return
			}
			if err == nil {
				t.Fatalf("Resolve(%s) succeeded, want an auth failure", ref)
			}
			if authed != 0 {
				t.Errorf("%d requests carried the right credentials", authed)
			}
		})
	}
}

// TestResolverRefusesRedirectOutsideAllowlist: an allowed registry that
// answers 307 to another host gets the fetch there only when that host is
// allowed too; otherwise the resolve fails naming both hosts, and the
// other host sees no request.
func TestResolverRefusesRedirectOutsideAllowlist(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
		w.Header().Set("Docker-Content-Digest", stubDigest)
		w.Header().Set("Content-Length", "123")
		w.WriteHeader(http.StatusOK)
	}))
	defer other.Close()
	otherHost := strings.TrimPrefix(other.URL, "http://")
	reg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			w.WriteHeader(http.StatusOK)
			return
		}
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer reg.Close()
	host := strings.TrimPrefix(reg.URL, "http://")

	for _, tt := range []struct {
		name   string
		listed []string
		ok     bool
	}{
		{"target not listed", []string{host}, false},
		{"target listed", []string{host, otherHost}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			elsewhere.Store(0)
			allow := func(h string) error {
				if registryAllowed(h, tt.listed, nil) {
					return nil
				}
				return &RegistryNotAllowedError{Host: h}
			}
			hosts := newRegistries(Options{PlainHTTP: docker.MatchLocalhost, AllowHost: allow, RequestTimeout: 5 * time.Second})
			defer hosts.closeIdle()
			r := hosts.resolver()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, desc, err := r.Resolve(ctx, host+"/app:1")
			if tt.ok {
				if err != nil || desc.Digest.String() != stubDigest {
					t.Fatalf("Resolve = %v, %v; want %s through the redirect", desc.Digest, err, stubDigest)
				}
				return
			}
			want := "registry " + host + " redirected to " + otherHost + ", which is not allowed"
			if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, ErrRegistryNotAllowed) {
				t.Fatalf("Resolve error = %v, want one containing %q", err, want)
			}
			if n := elsewhere.Load(); n != 0 {
				t.Errorf("the host outside the allowlist got %d requests", n)
			}
		})
	}
}

// manifestStub answers a HEAD of /v2/app/manifests/1 with stubDigest and
// counts the requests it gets.
func manifestStub(n *atomic.Int32) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		if r.URL.Path == "/v2/app/manifests/1" {
			w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
			w.Header().Set("Docker-Content-Digest", stubDigest)
			w.Header().Set("Content-Length", "123")
		}
		w.WriteHeader(http.StatusOK)
	})
}

// writeHostsToml writes dir/HOST/hosts.toml, with HOST's ":port" as
// containerd spells it in directory names ("_port_").
func writeHostsToml(t *testing.T, dir, host, content string) string {
	t.Helper()
	h, port, _ := strings.Cut(host, ":")
	d := filepath.Join(dir, h+"_"+port+"_")
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "hosts.toml"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestHostsTomlMirrorFirst: with a hosts.toml naming a mirror, the
// resolve goes to the mirror and not to the registry; with the mirror
// down it falls back to the registry, as containerd does.
func TestHostsTomlMirrorFirst(t *testing.T) {
	var atUpstream, atMirror atomic.Int32
	upstream := httptest.NewServer(manifestStub(&atUpstream))
	defer upstream.Close()
	mirror := httptest.NewServer(manifestStub(&atMirror))
	defer mirror.Close()
	up := strings.TrimPrefix(upstream.URL, "http://")
	dir := t.TempDir()
	writeHostsToml(t, dir, up, fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", upstream.URL, mirror.URL))

	hosts := newRegistries(Options{PlainHTTP: docker.MatchLocalhost, HostsDir: dir, RequestTimeout: 5 * time.Second})
	defer hosts.closeIdle()
	f := &Fetcher{hosts: hosts}
	if !f.ViaMirror(up+"/app:1") || f.ViaMirror("127.0.0.1:1/app:1") {
		t.Errorf("ViaMirror: %v for the mirrored registry, %v for another; want true, false", f.ViaMirror(up+"/app:1"), f.ViaMirror("127.0.0.1:1/app:1"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, desc, err := hosts.resolver().Resolve(ctx, up+"/app:1"); err != nil || desc.Digest.String() != stubDigest {
		t.Fatalf("Resolve through the mirror = %v, %v", desc.Digest, err)
	}
	if atMirror.Load() == 0 || atUpstream.Load() != 0 {
		t.Fatalf("requests: mirror %d, upstream %d; want the mirror's only", atMirror.Load(), atUpstream.Load())
	}

	mirror.Close()
	if _, desc, err := hosts.resolver().Resolve(ctx, up+"/app:1"); err != nil || desc.Digest.String() != stubDigest {
		t.Fatalf("Resolve with the mirror down = %v, %v; want the registry's answer", desc.Digest, err)
	}
	if atUpstream.Load() == 0 {
		t.Error("the registry got no request with its mirror down")
	}
}

// TestHostsTomlCA: a registry with a private CA is reached over HTTPS once
// its hosts.toml names the CA, and refused (unknown authority) before.
func TestHostsTomlCA(t *testing.T) {
	var n atomic.Int32
	reg := httptest.NewTLSServer(manifestStub(&n))
	defer reg.Close()
	host := strings.TrimPrefix(reg.URL, "https://")
	dir := t.TempDir()
	d := writeHostsToml(t, dir, host, fmt.Sprintf("server = %q\n", reg.URL))
	resolve := func() error {
		hosts := newRegistries(Options{PlainHTTP: docker.MatchLocalhost, HostsDir: dir, RequestTimeout: 5 * time.Second})
		defer hosts.closeIdle()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _, err := hosts.resolver().Resolve(ctx, host+"/app:1")
		return err
	}
	if err := resolve(); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Resolve without the CA = %v, want a certificate error", err)
	}
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: reg.Certificate().Raw})
	if err := os.WriteFile(filepath.Join(d, "ca.pem"), ca, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "hosts.toml"), fmt.Appendf(nil, "server = %q\nca = %q\n", reg.URL, filepath.Join(d, "ca.pem")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := resolve(); err != nil {
		t.Fatalf("Resolve with the CA in hosts.toml: %v", err)
	}
}

// TestCredentialHelper: a helper mapped to the registry host answers its
// Basic challenge; its answer is reused, not asked for every request; a
// helper that knows no credentials means anonymous, and one that fails
// names itself in the error.
func TestCredentialHelper(t *testing.T) {
	stub := &registryStub{user: "alice", pass: "pw"}
	srv := httptest.NewServer(stub)
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	bin := t.TempDir()
	runs := filepath.Join(bin, "runs")
	helper := func(name, body string) {
		script := "#!/bin/sh\necho run >>" + runs + "\nread host\n" + body + "\n"
		if err := os.WriteFile(filepath.Join(bin, "docker-credential-"+name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	helper("good", `[ "$host" = "`+host+`" ] || { echo "credentials not found in native keychain"; exit 1; }
echo '{"ServerURL":"'$host'","Username":"alice","Secret":"pw"}'`)
	helper("none", `echo "credentials not found in native keychain"; exit 1`)
	helper("broken", `echo "helper exploded" >&2; exit 3`)
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))

	resolve := func(name string) error {
		h := &CredentialHelpers{ByHost: map[string]string{host: name}, Timeout: 5 * time.Second}
		hosts := newRegistries(Options{PlainHTTP: docker.MatchLocalhost, Credentials: h.Credentials, RequestTimeout: 5 * time.Second})
		defer hosts.closeIdle()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r := hosts.resolver()
		for range 3 {
			if _, _, err := r.Resolve(ctx, host+"/app:1"); err != nil {
				return err
			}
		}
		return nil
	}
	if err := resolve("good"); err != nil {
		t.Fatalf("Resolve with the helper's credentials: %v", err)
	}
	b, _ := os.ReadFile(runs)
	if n := strings.Count(string(b), "run"); n != 1 {
		t.Errorf("the helper ran %d times for three resolves, want once (its answer reused)", n)
	}
	if err := resolve("none"); err == nil {
		t.Error("Resolve with a helper that has no credentials succeeded against a registry that wants them")
	}
	err := resolve("broken")
	if err == nil || !strings.Contains(err.Error(), "docker-credential-broken") {
		t.Errorf("Resolve with a failing helper = %v, want an error naming docker-credential-broken", err)
	}
}
