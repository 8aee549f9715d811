package prefetch

import (
	"context"
	"encoding/base64"
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

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestParseDockerConfig(t *testing.T) {
	cfg := `{
	  "auths": {
	    "registry.lan:5000": {"auth": "` + b64("alice:s3cr:et") + `"},
	    "https://index.docker.io/v1/": {"username": "bob", "password": "hunter2"},
	    "GHCR.io": {"identitytoken": "tok-123", "auth": "` + b64("ignored:x") + `"},
	    "https://quay.io/v2/": {"auth": "` + b64("carol:pw") + `"},
	    "empty.example": {}
	  },
	  "credsStore": "desktop",
	  "credHelpers": {"gcr.io": "gcloud"}
	}`
	c, err := ParseDockerConfig([]byte(cfg))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		host, user, secret string
	}{
		{"registry.lan:5000", "alice", "s3cr:et"}, // only the first ':' splits
		{"docker.io", "bob", "hunter2"},
		{"registry-1.docker.io", "bob", "hunter2"}, // the host containerd asks for
		{"index.docker.io", "bob", "hunter2"},
		{"ghcr.io", "", "tok-123"}, // identity token: no user, a refresh token
		{"quay.io", "carol", "pw"},
		{"registry.lan", "", ""}, // another port is another host
		{"empty.example", "", ""},
		{"gcr.io", "", ""}, // helpers are not run
		{"missing.example", "", ""},
	} {
		u, s, err := c.Credentials(tt.host)
		if err != nil || u != tt.user || s != tt.secret {
			t.Errorf("Credentials(%q) = %q, %q, %v; want %q, %q, nil", tt.host, u, s, err, tt.user, tt.secret)
		}
	}
	if got := len(c.Hosts()); got != 4 {
		t.Errorf("Hosts() = %v, want 4 hosts", c.Hosts())
	}
	if s := fmt.Sprintf("%v %+v", c, c); strings.Contains(s, "hunter2") || strings.Contains(s, "tok-123") {
		t.Errorf("formatted config shows a secret: %s", s)
	}
	var nilCfg *DockerConfig
	if u, s, err := nilCfg.Credentials("docker.io"); u != "" || s != "" || err != nil {
		t.Errorf("nil config: %q %q %v", u, s, err)
	}
}

func TestParseDockerConfigErrors(t *testing.T) {
	for _, tt := range []struct {
		name, cfg, want string
	}{
		{"not json", `{"auths": `, "decode"},
		{"auths not an object", `{"auths": []}`, "decode"},
		{"auth not base64", `{"auths": {"r.lan": {"auth": "!!secret!!"}}}`, `auths["r.lan"].auth: not base64`},
		{"auth without colon", `{"auths": {"r.lan": {"auth": "` + b64("secretonly") + `"}}}`, `auths["r.lan"].auth: not user:password`},
		{"empty key", `{"auths": {"": {"auth": "` + b64("a:b") + `"}}}`, "not a registry host"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseDockerConfig([]byte(tt.cfg))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error with %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error quotes a secret: %v", err)
			}
		})
	}
	// An empty file has no auths: anonymous everywhere.
	c, err := ParseDockerConfig([]byte(`{}`))
	if err != nil || len(c.Hosts()) != 0 {
		t.Errorf("{}: %v, %v", c, err)
	}
}

func TestLoadDockerConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.json")
	if _, err := LoadDockerConfig(path); err == nil || !strings.Contains(err.Error(), "config.json") {
		t.Errorf("missing file: got %v, want an error naming it", err)
	}
	if err := os.WriteFile(path, []byte(`{"auths":{"r.lan":{"auth":"`+b64("u:p")+`"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadDockerConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if u, s, _ := c.Credentials("r.lan"); u != "u" || s != "p" {
		t.Errorf("Credentials(r.lan) = %q, %q", u, s)
	}
}

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
			tr := http.DefaultTransport.(*http.Transport).Clone()
			defer tr.CloseIdleConnections()
			r := newResolver(tr, Options{PlainHTTP: docker.MatchLocalhost, Credentials: c.Credentials, RequestTimeout: 5 * time.Second})
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
			tr := http.DefaultTransport.(*http.Transport).Clone()
			defer tr.CloseIdleConnections()
			r := newResolver(tr, Options{PlainHTTP: docker.MatchLocalhost, AllowHost: allow, RequestTimeout: 5 * time.Second})
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
