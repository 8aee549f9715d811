package prefetch

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
