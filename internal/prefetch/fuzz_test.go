package prefetch

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/distribution/reference"
)

// FuzzParseDockerConfig: any config.json parses or is refused; an error
// never quotes a secret (auth, password, identitytoken), and every host it
// has credentials for answers them.
func FuzzParseDockerConfig(f *testing.F) {
	f.Add(`{"auths":{"registry.example":{"auth":"` + b64("alice:pw") + `"}}}`)
	f.Add(`{"auths":{"https://index.docker.io/v1/":{"username":"bob","password":"s3cret-pass"}}}`)
	f.Add(`{"auths":{"ghcr.io":{"identitytoken":"tok-123456"},"x":{}}}`)
	f.Add(`{"auths":{"r.example":{"auth":"bm90LWEtcGFpcg=="}}}`)
	f.Add(`{"auths":{"r.example":{"auth":"%%%notbase64-secret"}}}`)
	f.Add(`{"auths":[1,2]}`)
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseDockerConfig([]byte(s))
		if err != nil {
			secrets := secretsIn(s)
			for _, secret := range secrets {
				// A secret that also stands in the input outside a secret
				// field (in a registry key, say) is not leaked by quoting
				// that other text.
				if len(secret) >= 6 && strings.Count(s, secret) <= countOf(secrets, secret) &&
					strings.Contains(err.Error(), secret) {
					t.Fatalf("error %q quotes the secret %q", err, secret)
				}
			}
			return
		}
		for _, h := range c.Hosts() {
			if _, _, err := c.Credentials(h); err != nil {
				t.Fatalf("Credentials(%q) of a parsed config: %v", h, err)
			}
		}
	})
}

// countOf is how many times secret occurs in all the secrets, each a
// substring of the input at least once when it is written without escapes.
func countOf(secrets []string, secret string) int {
	n := 0
	for _, o := range secrets {
		n += strings.Count(o, secret)
	}
	return n
}

// secretsIn returns the auth, password and identitytoken strings of a
// config.json as a generic decode sees them.
func secretsIn(s string) []string {
	var f struct {
		Auths map[string]map[string]any `json:"auths"`
	}
	if json.Unmarshal([]byte(s), &f) != nil {
		return nil
	}
	var out []string
	for _, e := range f.Auths {
		for k, v := range e {
			switch strings.ToLower(k) {
			case "auth", "password", "identitytoken":
				if str, ok := v.(string); ok {
					out = append(out, str)
				}
			}
		}
	}
	return out
}

// FuzzNotification: any request body the registry's webhook receives is
// answered 200 (handled) or 4xx (refused), and every reference handed on
// is a canonical HOST/REPO:TAG with a digest; none panics.
func FuzzNotification(f *testing.F) {
	f.Add(`{"events":[{"action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"app","tag":"1","digest":"sha256:` + strings.Repeat("ab", 32) + `"},"request":{"host":"registry.example:5000"}}]}`)
	f.Add(`{"events":[{"action":"push","target":{"mediaType":"application/vnd.docker.distribution.manifest.v2+json; charset=utf-8","repository":"a/b","tag":"v1","digest":"sha256:` + strings.Repeat("0", 64) + `"},"request":{"host":""}}]}`)
	f.Add(`{"events":[{"action":"pull","target":{"repository":"../../x","tag":"@sha256:1"}}]}`)
	f.Add(`{"events":null}`)
	f.Add(`[]`)
	f.Fuzz(func(t *testing.T, body string) {
		var refs []string
		n, err := NewNotifier(NotifierOptions{
			Token:       "t0ken",
			DefaultHost: "registry.example",
			HostAliases: map[string]string{"localhost:5000": "registry.example"},
			MaxBody:     1 << 16,
			OnPush:      func(ref, _ string) { refs = append(refs, ref) },
		})
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer t0ken")
		req.Header.Set("Content-Type", NotificationMediaType)
		w := httptest.NewRecorder()
		n.ServeHTTP(w, req)
		if w.Code != http.StatusOK && (w.Code < 400 || w.Code > 499) {
			t.Fatalf("status %d for %q", w.Code, body)
		}
		for _, ref := range refs {
			named, err := reference.ParseNamed(ref)
			if err != nil {
				t.Fatalf("handed on %q, not a canonical reference: %v", ref, err)
			}
			if _, ok := named.(reference.Tagged); !ok {
				t.Fatalf("handed on %q, which has no tag", ref)
			}
			if _, ok := named.(reference.Digested); ok {
				t.Fatalf("handed on %q, which names a digest", ref)
			}
		}
	})
}
