package prefetch

import (
	"errors"
	"net"
	"strings"
)

// ErrRegistryNotAllowed matches (errors.Is) the error of Add and Trigger
// for a reference whose registry is not in the allowlist.
var ErrRegistryNotAllowed = errors.New("prefetch: registry is not allowed")

// RegistryNotAllowedError is Add's and Trigger's error for a reference
// whose registry is outside the allowlist; it names the host and the
// config key that lists the allowed ones.
type RegistryNotAllowedError struct {
	Host string
}

func (e *RegistryNotAllowedError) Error() string {
	return "prefetch: registry " + e.Host + " is not allowed (prefetch.registries)"
}

// Is makes the error match ErrRegistryNotAllowed.
func (e *RegistryNotAllowedError) Is(target error) bool { return target == ErrRegistryNotAllowed }

// registryAllowed says whether a fetch may be asked for (Add, Trigger)
// from host, a normalised reference's domain. Allowed are the registries
// the node's images come from (nodeHosts, their domains exactly) and the
// listed hosts: a listed host with a port matches that port only, one
// without a port matches it on any port. Loopback hosts get no pass of
// their own: a request must not reach services on the node that are not
// a registry it uses. Hosts compare case-insensitively, and Docker Hub's
// names (docker.io, index.docker.io, registry-1.docker.io) are one host.
func registryAllowed(host string, listed []string, nodeHosts map[string]bool) bool {
	h := canonicalHost(host)
	if h == "" {
		return false
	}
	if nodeHosts[h] {
		return true
	}
	name := h
	if n, _, err := net.SplitHostPort(h); err == nil {
		name = n
	}
	for _, l := range listed {
		l = canonicalHost(l)
		if l == h {
			return true
		}
		if _, _, err := net.SplitHostPort(l); err != nil && l == strings.Trim(name, "[]") {
			return true
		}
	}
	return false
}

// CheckHost returns a RegistryNotAllowedError unless host (host or
// host:port) is allowed: listed in ManagerOptions.Registries or the
// registry of an image on the node as of the last refresh. The Fetcher's
// redirects are checked with it (Options.AllowHost).
func (m *Manager) CheckHost(host string) error {
	m.mu.Lock()
	nodeHosts := make(map[string]bool, len(m.mu.node))
	for r := range m.mu.node {
		nodeHosts[canonicalHost(registryOf(r))] = true
	}
	m.mu.Unlock()
	if registryAllowed(host, m.opts.Registries, nodeHosts) {
		return nil
	}
	return &RegistryNotAllowedError{Host: host}
}

// checkRegistry returns a RegistryNotAllowedError unless ref's (a
// normalised tag's) registry is allowed: listed in
// ManagerOptions.Registries or the registry of an image on the node as
// of the last refresh.
func (m *Manager) checkRegistry(ref string) error {
	return m.CheckHost(registryOf(ref))
}
