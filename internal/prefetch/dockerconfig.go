package prefetch

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strings"
)

// DockerConfig holds the static registry credentials of a docker
// config.json ("auths"). The helpers the file names (credsStore,
// credHelpers) are not run: a program to execute as root is named in
// startgated's own config (CredentialHelpers), never in a file written for
// another tool. Its String never shows a secret.
type DockerConfig struct {
	auths map[string]credential // by normalised host
}

type credential struct {
	user, secret string // user "" and a secret: an identity (refresh) token
}

// dockerConfigFile is the part of config.json read here.
type dockerConfigFile struct {
	Auths map[string]struct {
		Auth          string `json:"auth"`
		Username      string `json:"username"`
		Password      string `json:"password"`
		IdentityToken string `json:"identitytoken"`
	} `json:"auths"`
}

// LoadDockerConfig reads a docker config.json. The error names the file,
// never its content.
func LoadDockerConfig(path string) (*DockerConfig, error) {
	p, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("prefetch: docker config: %w", err)
	}
	c, err := ParseDockerConfig(p)
	if err != nil {
		return nil, fmt.Errorf("prefetch: docker config %s: %w", path, err)
	}
	return c, nil
}

// ParseDockerConfig parses a docker config.json's "auths": per entry
// "auth" (base64 of user:password), or "username" and "password", and
// "identitytoken" (which wins: containerd sends it as an OAuth refresh
// token, as the CRI does). Keys may be a host, host:port or a URL
// (https://index.docker.io/v1/); Docker Hub's names all count as one host.
// Entries with no credential are skipped; errors never quote a secret.
func ParseDockerConfig(p []byte) (*DockerConfig, error) {
	var f dockerConfigFile
	if err := json.Unmarshal(p, &f); err != nil {
		// json's syntax errors quote no input; type errors name the field.
		return nil, fmt.Errorf("decode: %w", err)
	}
	c := &DockerConfig{auths: map[string]credential{}}
	for key, e := range f.Auths {
		host := configHost(key)
		if host == "" {
			return nil, fmt.Errorf("auths: key %q is not a registry host", key)
		}
		var cr credential
		switch {
		case e.IdentityToken != "":
			cr = credential{secret: e.IdentityToken}
		case e.Auth != "":
			dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(e.Auth))
			if err != nil {
				return nil, fmt.Errorf("auths[%q].auth: not base64", key)
			}
			user, pass, ok := strings.Cut(string(dec), ":")
			if !ok || user == "" {
				return nil, fmt.Errorf("auths[%q].auth: not user:password", key)
			}
			cr = credential{user: user, secret: pass}
		case e.Username != "":
			cr = credential{user: e.Username, secret: e.Password}
		default:
			continue
		}
		c.auths[host] = cr
	}
	return c, nil
}

// Hosts returns the hosts with credentials, for a log line.
func (c *DockerConfig) Hosts() []string {
	var hs []string
	if c != nil {
		for h := range c.auths {
			hs = append(hs, h)
		}
	}
	return hs
}

// String shows the hosts only.
func (c *DockerConfig) String() string {
	return fmt.Sprintf("DockerConfig(%d hosts)", len(c.Hosts()))
}

// Credentials is containerd's docker.WithAuthCreds function: the user and
// secret for host (as containerd asks: the request's host, host:port, or
// the token realm's host), or two empty strings (anonymous) when the
// config has none for it.
func (c *DockerConfig) Credentials(host string) (string, string, error) {
	if c == nil {
		return "", "", nil
	}
	cr, ok := c.auths[canonicalHost(host)]
	if !ok {
		return "", "", nil
	}
	return cr.user, cr.secret, nil
}

// configHost is a config.json key's host: the key itself, or a URL's
// host, canonicalised.
func configHost(key string) string {
	k := strings.TrimSpace(key)
	if strings.Contains(k, "://") {
		u, err := url.Parse(k)
		if err != nil {
			return ""
		}
		k = u.Host
	} else if h, _, ok := strings.Cut(k, "/"); ok {
		k = h
	}
	return canonicalHost(k)
}

// canonicalHost lowercases host and folds Docker Hub's names (docker.io,
// index.docker.io, registry-1.docker.io) into docker.io, the domain of a
// normalised reference.
func canonicalHost(host string) string {
	h := strings.ToLower(strings.TrimSpace(host))
	switch h {
	case "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return "docker.io"
	}
	return h
}
