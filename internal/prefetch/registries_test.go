package prefetch

import (
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestRegistryAllowed(t *testing.T) {
	node := map[string]bool{"registry.lan:5000": true, "docker.io": true}
	for _, tt := range []struct {
		name   string
		host   string
		listed []string
		want   bool
	}{
		{"node host", "registry.lan:5000", nil, true},
		{"node host, other port", "registry.lan:5001", nil, false},
		{"node host, no port", "registry.lan", nil, false},
		{"node docker hub", "docker.io", nil, true},
		{"node host, upper case", "REGISTRY.lan:5000", nil, true},
		{"listed host", "ghcr.io", []string{"ghcr.io"}, true},
		{"listed host, any port", "ghcr.io:8443", []string{"ghcr.io"}, true},
		{"listed host:port", "quay.io:5000", []string{"quay.io:5000"}, true},
		{"listed host:port, other port", "quay.io:5001", []string{"quay.io:5000"}, false},
		{"listed host:port, no port", "quay.io", []string{"quay.io:5000"}, false},
		{"listed docker hub alias", "docker.io", []string{"index.docker.io"}, true},
		{"listed IPv6", "[fd00::1]:5000", []string{"fd00::1"}, true},
		{"unlisted", "evil.example", []string{"ghcr.io"}, false},
		{"loopback unlisted", "127.0.0.1:5000", nil, false},
		{"localhost unlisted", "localhost:5000", nil, false},
		{"loopback listed", "127.0.0.1:5000", []string{"127.0.0.1"}, true},
		{"localhost listed with port", "localhost:5000", []string{"localhost:5000"}, true},
		{"empty host", "", []string{""}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := registryAllowed(tt.host, tt.listed, node); got != tt.want {
				t.Errorf("registryAllowed(%q, %q) = %v, want %v", tt.host, tt.listed, got, tt.want)
			}
		})
	}
}

// TestManagerRegistryAllowlist: Add and Trigger accept refs from the
// node's registries and the listed ones, and refuse any other with an
// error naming the host and the config key.
func TestManagerRegistryAllowlist(t *testing.T) {
	m, err := newManager(nil, nil, nil, DefaultNamespace, ManagerOptions{Registries: []string{"ghcr.io", "127.0.0.1:5000"}})
	if err != nil {
		t.Fatal(err)
	}
	m.mu.node = map[string]digest.Digest{
		"registry.lan:5000/team/app:1": digest.FromString("a"),
		"docker.io/library/nginx:1.27": digest.FromString("b"),
	}
	for _, tt := range []struct {
		ref     string
		refused string // the refused host, "" when allowed
	}{
		{"registry.lan:5000/team/other:2", ""}, // a node image's registry
		{"nginx:1.28", ""},                     // docker.io, from the node
		{"docker.io/library/redis:7", ""},
		{"ghcr.io/org/tool:v1", ""},                // listed
		{"ghcr.io:8443/org/tool:v1", ""},           // listed without a port: any port
		{"127.0.0.1:5000/app:1", ""},               // listed loopback
		{"127.0.0.1:5001/app:1", "127.0.0.1:5001"}, // loopback is no pass of its own
		{"localhost:5000/app:1", "localhost:5000"},
		{"registry.lan/team/app:1", "registry.lan"}, // the node's registry is on :5000
		{"evil.example/x:1", "evil.example"},
	} {
		for name, call := range map[string]func(string) error{"Add": m.Add, "Trigger": m.Trigger} {
			err := call(tt.ref)
			if tt.refused == "" {
				if err != nil {
					t.Errorf("%s(%q) = %v, want nil", name, tt.ref, err)
				}
				continue
			}
			want := "prefetch: registry " + tt.refused + " is not allowed (prefetch.registries)"
			var nae *RegistryNotAllowedError
			if !errors.Is(err, ErrRegistryNotAllowed) || !errors.As(err, &nae) || err.Error() != want || nae.Host != tt.refused {
				t.Errorf("%s(%q) = %v, want %q", name, tt.ref, err, want)
			}
		}
	}
	// A tag check comes first: a digest ref is ErrNotTag, whatever its host.
	if err := m.Trigger("evil.example/x@" + digest.FromString("c").String()); !errors.Is(err, ErrNotTag) {
		t.Errorf("Trigger of a digest ref: %v, want ErrNotTag", err)
	}
	// Refused refs are not watched or queued.
	m.mu.Lock()
	defer m.mu.Unlock()
	for r := range m.mu.added {
		if h := registryOf(r); h == "evil.example" || h == "localhost:5000" {
			t.Errorf("refused %s was added", r)
		}
	}
	for _, r := range m.mu.triggered {
		if h := registryOf(r); h == "evil.example" || h == "localhost:5000" {
			t.Errorf("refused %s was triggered", r)
		}
	}
}
