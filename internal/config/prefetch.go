package config

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/distribution/reference"

	"github.com/startgate/startgate/internal/prefetch"
)

// Prefetch is the [prefetch] section: watch the tags this node runs and
// fetch a new digest's missing layers into containerd before kubelet
// pulls it (issue 4).
type Prefetch struct {
	// Enabled runs the prefetch manager. Off by default.
	Enabled bool `toml:"enabled"`
	// ContainerdSocket is containerd's socket; "" means
	// cri.containerd_socket: prefetching into any other containerd than
	// the CRI's would be useless.
	ContainerdSocket string `toml:"containerd_socket"`
	// Snapshotter must be the one the CRI unpacks into.
	Snapshotter string   `toml:"snapshotter"`
	Interval    Duration `toml:"interval"`
	MaxBackoff  Duration `toml:"max_backoff"`
	Concurrency int      `toml:"concurrency"`
	LeaseExpiry Duration `toml:"lease_expiry"`
	// Bandwidth caps the registry bytes all fetches read together, per
	// second ("50MiB" is 50 MiB/s); 0 is unlimited.
	Bandwidth Size `toml:"bandwidth"`
	// RollbackWindow is how long the digest a tag pointed at before the
	// node moved to a new one stays protected from containerd's GC, so
	// that a rollback starts warm too; 0 turns it off.
	RollbackWindow Duration `toml:"rollback_window"`
	// MoveTag moves the tag to a prefetched digest at once (a CRI pull of
	// local content). Off by default: kubelet decides when a rollout
	// starts, and pods of the tag started meanwhile would start the new
	// digest.
	MoveTag bool `toml:"move_tag"`
	// PlainHTTP lists registry hosts (host or host:port) spoken to over
	// plain HTTP besides the loopback hosts, which always are.
	PlainHTTP []string `toml:"plain_http"`
	// Registries are the registry hosts (host or host:port; without a
	// port, any port) that API- and webhook-triggered prefetches may fetch
	// from besides the registries of the images on the node, which always
	// may. Any other host is refused.
	Registries []string `toml:"registries"`
	// Watch are tag references watched from the start besides the node's
	// own images (an image about to be deployed here, say); their
	// registries are allowed as if listed in Registries.
	Watch []string `toml:"watch"`
	// DockerConfig is a docker config.json whose "auths" give registry
	// credentials; "" means none (anonymous). Read at start.
	DockerConfig string `toml:"docker_config"`
	// CredentialHelpers maps registry hosts to docker credential helpers
	// (a name: "ecr-login" runs docker-credential-ecr-login from PATH).
	CredentialHelpers map[string]string `toml:"credential_helpers"`
	// HostsDir is containerd's registry hosts directory (its CRI
	// registry config_path): mirrors, CAs and TLS per registry, read as
	// containerd reads them; "" reads none.
	HostsDir string `toml:"hosts_dir"`
	// RequestTimeout bounds a registry's wait before answering a request,
	// and a credential helper's run.
	RequestTimeout Duration      `toml:"request_timeout"`
	Notifications  Notifications `toml:"notifications"`
}

// Notifications is [prefetch.notifications]: the listener for the
// registry's push notification webhook.
type Notifications struct {
	// Listen is a TCP address; "" turns the listener off. It must be on a
	// loopback address unless AllowRemote.
	Listen      string `toml:"listen"`
	AllowRemote bool   `toml:"allow_remote"`
	// TokenFile holds the bearer token the registry sends; required when
	// Listen is set. It is read once at start, so the secret stays out of
	// the config file, and must not be readable by others.
	TokenFile string `toml:"token_file"`
}

// defaultPrefetch is the [prefetch] section of a node with no config
// file; the durations are the prefetch package's own defaults.
func defaultPrefetch() Prefetch {
	return Prefetch{
		Enabled:           false,
		ContainerdSocket:  "",
		Snapshotter:       "overlayfs",
		Interval:          Duration(prefetch.DefaultInterval),
		MaxBackoff:        Duration(prefetch.DefaultMaxBackoff),
		Concurrency:       1,
		LeaseExpiry:       Duration(prefetch.DefaultLeaseExpiry),
		Bandwidth:         DefaultBandwidth,
		RollbackWindow:    Duration(DefaultRollbackWindow),
		MoveTag:           false,
		PlainHTTP:         []string{},
		Registries:        []string{},
		Watch:             []string{},
		DockerConfig:      "",
		CredentialHelpers: map[string]string{},
		HostsDir:          DefaultHostsDir,
		RequestTimeout:    Duration(prefetch.DefaultRequestTimeout),
		Notifications:     Notifications{Listen: "", AllowRemote: false, TokenFile: ""},
	}
}

// DefaultBandwidth is prefetch.bandwidth's default: 100 MiB/s, about a
// tenth of a 10 Gbit/s link, so that background fetching never fills a
// node's network while its pods start; a 20 MB patch still lands in a
// fraction of a second.
const DefaultBandwidth = Size(100 << 20)

// DefaultHostsDir is prefetch.hosts_dir's default, where containerd's
// documentation and kubeadm-style setups put the registry hosts
// directory. A node whose containerd has no config_path has no such
// directory, and nothing is read.
const DefaultHostsDir = "/etc/containerd/certs.d"

// DefaultRollbackWindow is prefetch.rollback_window's default: a day
// covers a rollout noticed bad the next morning.
const DefaultRollbackWindow = 24 * time.Hour

var prefetchDocs = map[string]string{
	"prefetch": "Prefetch: watch the tags this node's images use (containerd namespace k8s.io)\n" +
		"and fetch a new digest's missing layers into containerd before kubelet pulls it.\n" +
		"The tag is not moved: kubelet still decides when a rollout starts.",
	"prefetch.enabled": "Run the prefetch manager. Off by default.",
	"prefetch.containerd_socket": "containerd's socket; \"\" is cri.containerd_socket, the same containerd as the\n" +
		"CRI's (prefetching into another would be useless). containerd may start after\n" +
		"startgated: prefetch retries with backoff until it answers.",
	"prefetch.snapshotter":  "Snapshotter to unpack into; it must be the one the CRI uses.",
	"prefetch.interval":     "How often every watched tag is resolved against its registry (jittered ±20%).",
	"prefetch.max_backoff":  "Cap of the wait before a failing registry is tried again; the wait starts at\ninterval and doubles per failure.",
	"prefetch.concurrency":  "Most fetches at once.",
	"prefetch.lease_expiry": "How long prefetched content is kept from containerd's GC if kubelet never\npulls it.",
	"prefetch.bandwidth": "Cap of the registry bytes per second all fetches read together, in docker's\n" +
		"size notation (\"50MiB\", \"50MB\" and \"50m\" all mean 50 MiB/s); \"0\" is unlimited.",
	"prefetch.rollback_window": "How long the digest a tag ran before the node moved to a new one stays\n" +
		"protected from containerd's GC (a lease), so a rollback starts warm; \"0s\" is off.",
	"prefetch.move_tag": "Move the tag to the prefetched digest at once (a CRI pull of local content).\n" +
		"Off: kubelet decides when a rollout starts.",
	"prefetch.plain_http": "Registry hosts (host or host:port) spoken to over plain HTTP besides the\nloopback hosts, which always are. All others are HTTPS.",
	"prefetch.registries": "Registry hosts (host or host:port; without a port, any port) that prefetches\n" +
		"asked for through the API or the webhook may fetch from, besides the registries\n" +
		"of the images on this node, which always may. Any other host is refused, and so\n" +
		"is a registry's redirect to it: list the host a registry serves its blobs from\n" +
		"when it is another (a CDN).",
	"prefetch.watch": "Tag references watched from the start besides the node's own images (an image\n" +
		"about to be deployed here); their registries are allowed for requests too.",
	"prefetch.docker_config": "A docker config.json whose \"auths\" (auth, username/password, identitytoken)\n" +
		"give registry credentials; \"\" is none. Read at start. The helpers it names\n" +
		"(credsStore, credHelpers) are not run: map them in credential_helpers.",
	"prefetch.credential_helpers": "Docker credential helpers by registry host, e.g.\n" +
		"{ \"123456789012.dkr.ecr.eu-west-1.amazonaws.com\" = \"ecr-login\" } runs\n" +
		"docker-credential-ecr-login get (from PATH, inside the unit's sandbox) for that\n" +
		"host and its mirrors' hosts if listed; an answer is reused for a minute. Hosts\n" +
		"without a helper use docker_config.",
	"prefetch.hosts_dir": "containerd's registry hosts directory (the CRI's registry config_path):\n" +
		"HOST/hosts.toml gives the mirrors tried before the registry, and the CA,\n" +
		"client certificate, skip_verify and headers of each, as containerd reads them;\n" +
		"\"_default\" applies to registries without a directory. Set it to containerd's\n" +
		"config_path; \"\" reads none. Re-read within a minute of an edit.",
	"prefetch.request_timeout": "Longest wait for a registry to answer a request, and for a credential helper;\n" +
		"a blob's download is not cut by it (a trickling one is).",
	"prefetch.notifications": "The registry's push notifications (distribution's webhook): a push of a\n" +
		"watched tag triggers a resolve at once. Point the registry's notifications\n" +
		"endpoint at http://LISTEN/ with header Authorization: Bearer TOKEN.",
	"prefetch.notifications.listen":       "TCP address of the webhook listener; \"\" is off. Must be a loopback address\nunless allow_remote = true.",
	"prefetch.notifications.allow_remote": "Allow a listen address beyond loopback (the registry is on another host).",
	"prefetch.notifications.token_file": "File holding the bearer token the registry sends; required when listen is\n" +
		"set. Read once at start; it must not be readable by others (0600 or 0640).",
}

// validate checks the [prefetch] section, whether or not it is enabled.
func (p Prefetch) validate(metricsListen string) []error {
	var errs problems
	if p.ContainerdSocket != "" && !filepath.IsAbs(p.ContainerdSocket) {
		errs.add("prefetch.containerd_socket", "%q is not an absolute path (\"\" is cri.containerd_socket)", p.ContainerdSocket)
	}
	if p.Snapshotter == "" {
		errs.add("prefetch.snapshotter", "must not be empty (it must be the CRI's)")
	}
	errs.duration("prefetch.interval", p.Interval, 100*time.Millisecond, 24*time.Hour)
	errs.duration("prefetch.max_backoff", p.MaxBackoff, 100*time.Millisecond, 24*time.Hour)
	if p.MaxBackoff < p.Interval {
		errs.add("prefetch.max_backoff", "%v is shorter than prefetch.interval %v", p.MaxBackoff.Std(), p.Interval.Std())
	}
	errs.count("prefetch.concurrency", p.Concurrency, 1, 64)
	errs.duration("prefetch.lease_expiry", p.LeaseExpiry, time.Second, 30*24*time.Hour)
	// 0s is off.
	errs.duration("prefetch.rollback_window", p.RollbackWindow, 0, 30*24*time.Hour)
	for i, h := range p.PlainHTTP {
		if !validHost(h) {
			errs.add(fmt.Sprintf("prefetch.plain_http[%d]", i+1), "%q is not a host or host:port", h)
		}
	}
	for i, h := range p.Registries {
		if !validHost(h) {
			errs.add(fmt.Sprintf("prefetch.registries[%d]", i+1), "%q is not a host or host:port", h)
		}
	}
	for i, ref := range p.Watch {
		named, err := reference.ParseDockerRef(ref)
		switch {
		case err != nil:
			errs.add(fmt.Sprintf("prefetch.watch[%d]", i+1), "%q is not an image reference: %v", ref, err)
		case isCanonical(named):
			errs.add(fmt.Sprintf("prefetch.watch[%d]", i+1), "%q names a digest; want a tag (a digest never changes)", ref)
		}
	}
	if p.DockerConfig != "" && !filepath.IsAbs(p.DockerConfig) {
		errs.add("prefetch.docker_config", "%q is not an absolute path (\"\" is none)", p.DockerConfig)
	}
	for _, h := range slices.Sorted(maps.Keys(p.CredentialHelpers)) {
		key := fmt.Sprintf("prefetch.credential_helpers.%q", h)
		if !validHost(h) {
			errs.add(key, "%q is not a host or host:port", h)
		}
		if name := p.CredentialHelpers[h]; !prefetch.ValidHelperName(name) {
			errs.add(key, "%q is not a helper name (the part after docker-credential-: letters, digits, '.', '_', '-')", name)
		}
	}
	if p.HostsDir != "" && !filepath.IsAbs(p.HostsDir) {
		errs.add("prefetch.hosts_dir", "%q is not an absolute path (\"\" reads none)", p.HostsDir)
	}
	errs.duration("prefetch.request_timeout", p.RequestTimeout, time.Second, time.Hour)
	n := p.Notifications
	if n.Listen == "" {
		return errs
	}
	if host, ok := errs.listenAddr("prefetch.notifications.listen", n.Listen); ok && !n.AllowRemote && !loopbackHost(host) {
		errs.add("prefetch.notifications.listen", "%q is not a loopback address (set prefetch.notifications.allow_remote = true to listen beyond the node)", n.Listen)
	}
	if metricsListen != "" && n.Listen == metricsListen {
		errs.add("prefetch.notifications.listen", "%q is also metrics.listen", n.Listen)
	}
	switch {
	case n.TokenFile == "":
		errs.add("prefetch.notifications.token_file", "must be set when prefetch.notifications.listen is")
	case !filepath.IsAbs(n.TokenFile):
		errs.add("prefetch.notifications.token_file", "%q is not an absolute path", n.TokenFile)
	}
	return errs
}

func isCanonical(n reference.Named) bool {
	_, ok := n.(reference.Canonical)
	return ok
}

// loopbackHost says whether a listen address's host is this node only:
// localhost or a loopback IP. "" (every interface) is not.
func loopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// validHost accepts a registry host as containerd names it: host or
// host:port, no scheme, path or spaces.
func validHost(h string) bool {
	if h == "" || strings.ContainsAny(h, "/ \t@") {
		return false
	}
	if host, port, err := net.SplitHostPort(h); err == nil {
		_, perr := strconv.ParseUint(port, 10, 16)
		return host != "" && perr == nil
	}
	return !strings.Contains(h, ":") || net.ParseIP(h) != nil
}

// WatchRegistries are the registry hosts of prefetch.watch.
func (p Prefetch) WatchRegistries() []string {
	var hosts []string
	for _, ref := range p.Watch {
		if named, err := reference.ParseDockerRef(ref); err == nil && !slices.Contains(hosts, reference.Domain(named)) {
			hosts = append(hosts, reference.Domain(named))
		}
	}
	return hosts
}

// PrefetchContainerdSocket is prefetch.containerd_socket, or
// cri.containerd_socket when that is "".
func (c *Config) PrefetchContainerdSocket() string {
	if c.Prefetch.ContainerdSocket != "" {
		return c.Prefetch.ContainerdSocket
	}
	return c.CRI.ContainerdSocket
}

// NotificationToken reads prefetch.notifications.token_file: the token is
// its content without surrounding white space. It refuses an empty token
// and a file others may read or write, since the token is what keeps
// anyone else on the network from triggering fetches.
func (c *Config) NotificationToken() (string, error) {
	path := c.Prefetch.Notifications.TokenFile
	if path == "" {
		return "", errors.New("config: prefetch.notifications.token_file: not set")
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("config: prefetch.notifications.token_file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("config: prefetch.notifications.token_file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("config: prefetch.notifications.token_file: %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o007 != 0 {
		return "", fmt.Errorf("config: prefetch.notifications.token_file: %s has mode %04o; others must have no access (chmod 0600 or 0640)", path, perm)
	}
	b, err := io.ReadAll(io.LimitReader(f, 4097))
	if err != nil {
		return "", fmt.Errorf("config: prefetch.notifications.token_file: %w", err)
	}
	if len(b) > 4096 {
		return "", fmt.Errorf("config: prefetch.notifications.token_file: %s is longer than 4096 bytes", path)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("config: prefetch.notifications.token_file: %s is empty", path)
	}
	if strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("config: prefetch.notifications.token_file: %s holds more than one word", path)
	}
	return tok, nil
}
