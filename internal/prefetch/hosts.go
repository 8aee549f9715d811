package prefetch

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
)

// DefaultRequestTimeout is Options.RequestTimeout's default.
const DefaultRequestTimeout = 30 * time.Second

// hostsTTL is how long one registry's hosts (its mirrors, their TLS
// setup, their clients) are reused before its hosts directory is read
// again: a node's hosts.toml edits apply within a minute, and the
// connections of a minute's resolves and fetches are reused.
const hostsTTL = time.Minute

// registries gives each registry host the endpoints to try, in order, the
// way containerd's CRI does (config.ConfigureHosts): the mirrors of its
// hosts.toml in the hosts directory (containerd's config_path, e.g.
// /etc/containerd/certs.d/HOST/hosts.toml, with "_default"), then the
// registry itself, each with its own CA, client certificate, skip_verify,
// headers and scheme. A registry with no directory is HTTPS, or plain HTTP
// where opts.PlainHTTP says so. On every endpoint's client the Fetcher's
// own rules hold: the response-header timeout, the stall cut of a
// trickling body, redirects only to allowed hosts, and the credentials
// (the docker config's or a helper's) for the host asked.
type registries struct {
	opts      Options
	hostDir   func(host string) (string, error) // nil: no hosts directory
	configure docker.RegistryHosts
	now       func() time.Time

	mu     sync.Mutex
	byHost map[string]cachedHosts
}

type cachedHosts struct {
	hosts []docker.RegistryHost
	at    time.Time
}

func newRegistries(opts Options) *registries {
	r := &registries{opts: opts, now: time.Now, byHost: map[string]cachedHosts{}}
	if opts.HostsDir != "" {
		r.hostDir = config.HostDirFromRoot(opts.HostsDir)
	}
	check := checkRedirect(opts.AllowHost)
	r.configure = config.ConfigureHosts(context.Background(), config.HostOptions{
		HostDir:     r.hostDir,
		Credentials: opts.Credentials,
		UpdateClient: func(c *http.Client) error {
			if tr, ok := c.Transport.(*http.Transport); ok {
				// A registry that accepts and never answers must not hold
				// a fetch until its context ends.
				tr.ResponseHeaderTimeout = opts.RequestTimeout
			}
			// A body that trickles is cut (stall.go).
			c.Transport = stallTransport{rt: c.Transport, window: opts.RequestTimeout, floor: stallFloor}
			c.CheckRedirect = check
			return nil
		},
	})
	return r
}

// resolver is containerd's docker resolver on these hosts.
func (r *registries) resolver() remotes.Resolver {
	return docker.NewResolver(docker.ResolverOptions{Hosts: r.hosts})
}

// hosts is the docker.RegistryHosts of the resolver.
func (r *registries) hosts(host string) ([]docker.RegistryHost, error) {
	now := r.now()
	r.mu.Lock()
	c, ok := r.byHost[host]
	r.mu.Unlock()
	if ok && now.Sub(c.at) < hostsTTL {
		return slices.Clone(c.hosts), nil
	}
	hs, err := r.configure(host)
	if err != nil {
		return nil, fmt.Errorf("prefetch: registry %s: hosts directory %s: %w", host, r.opts.HostsDir, err)
	}
	configured, err := r.hasDir(host)
	if err != nil {
		return nil, err
	}
	if !configured {
		// No hosts.toml speaks for it: plain HTTP where the Fetcher's
		// rule says (loopback, prefetch.plain_http), as before the hosts
		// directory was read.
		for i := range hs {
			if plain, err := r.opts.PlainHTTP(hs[i].Host); err == nil && plain {
				hs[i].Scheme = "http"
			}
		}
	}
	r.mu.Lock()
	if old, ok := r.byHost[host]; ok {
		closeIdle(old.hosts)
	}
	r.byHost[host] = cachedHosts{hosts: hs, at: now}
	r.mu.Unlock()
	return slices.Clone(hs), nil
}

// hasDir says whether the hosts directory has an entry for host (its own
// or "_default").
func (r *registries) hasDir(host string) (bool, error) {
	if r.hostDir == nil {
		return false, nil
	}
	dir, err := r.hostDir(host)
	if err != nil && !errdefs.IsNotFound(err) {
		return false, fmt.Errorf("prefetch: registry %s: hosts directory %s: %w", host, r.opts.HostsDir, err)
	}
	return dir != "", nil
}

// closeIdle closes the idle connections of every cached client; fetches
// running go on.
func (r *registries) closeIdle() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.byHost {
		closeIdle(c.hosts)
	}
}

func closeIdle(hs []docker.RegistryHost) {
	for _, h := range hs {
		if h.Client != nil {
			h.Client.CloseIdleConnections()
		}
	}
}

// RedirectNotAllowedError is a fetch's error when a registry redirected a
// request to a host outside the allowlist; it names both hosts.
type RedirectNotAllowedError struct {
	From, To string
}

func (e *RedirectNotAllowedError) Error() string {
	return "prefetch: registry " + e.From + " redirected to " + e.To + ", which is not allowed (prefetch.registries)"
}

// Is makes the error match ErrRegistryNotAllowed.
func (e *RedirectNotAllowedError) Is(target error) bool { return target == ErrRegistryNotAllowed }

// maxRedirects is net/http's own limit.
const maxRedirects = 10

// checkRedirect is an http.Client's CheckRedirect that refuses a redirect
// to a host allow refuses (nil allows all), and more than maxRedirects.
func checkRedirect(allow func(host string) error) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		if len(via) >= maxRedirects {
			return fmt.Errorf("prefetch: stopped after %d redirects", maxRedirects)
		}
		if allow == nil || req.URL.Host == via[0].URL.Host {
			return nil
		}
		if err := allow(req.URL.Host); err != nil {
			return &RedirectNotAllowedError{From: via[0].URL.Host, To: req.URL.Host}
		}
		return nil
	}
}

// ViaMirror reports whether ref's registry has a mirror in the hosts
// directory, tried before it: the fleet's budget then counts only the
// first node's fetch, which fills the mirror.
func (f *Fetcher) ViaMirror(ref string) bool {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return false
	}
	hs, err := f.hosts.hosts(reference.Domain(named))
	return err == nil && len(hs) > 1
}

// ResolveDigest asks ref's registry (its mirrors first) which digest the
// tag names: the fleet's elected node resolves for the cluster with it.
func (f *Fetcher) ResolveDigest(ctx context.Context, ref string) (string, error) {
	_, desc, err := f.resolver.Resolve(ctx, ref)
	if err != nil {
		return "", fmt.Errorf("prefetch: resolve %s: %w", ref, err)
	}
	return desc.Digest.String(), nil
}
