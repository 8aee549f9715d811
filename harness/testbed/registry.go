package testbed

// The registry (issue 4, item 7): Debian's docker-registry, CNCF
// distribution 2.8, for the prefetch e2e tests and benchmarks.
//
// StartRegistry creates /tmp/sgreg-NNN, writes config.yml (registryYAML
// says what is in it and why), runs `docker-registry serve DIR/config.yml`
// with its output in DIR/registry.log, and polls GET /v2/ until it answers
// 200 with this registry's own X-Startgate-Registry header. Its address
// cannot be 127.0.0.1:0 (nothing would tell us the port), so a free port
// is picked by listening and closing, and picked again if the registry
// then fails to bind it. Errors carry the log's tail.
//
// Push and Patch use go-containerregistry's remote.Write over plain HTTP.
// A patch is the same tag pushed again with the last layer replaced;
// RandomLayer makes layers of incompressible, seeded data of a given size.
// containerd 1.6's CRI pulls from 127.0.0.1:PORT over plain HTTP with no
// registry config (TestCRIPullsFromRegistry).
//
// Stop SIGKILLs the registry, waits until it is reaped and removes DIR:
// no process names DIR afterwards and the port is closed. The registry is
// started with Pdeathsig, like containerd.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

const (
	registryLog    = "registry.log"
	registryConfig = "config.yml"
	// tokenRootFile holds the token server's certificate, the registry's
	// auth.token.rootcertbundle.
	tokenRootFile = "token-root.pem"
	// registryIDHeader is set by the generated config on every response:
	// the readiness probe checks it, so a port taken over by another
	// process (or another testbed registry) between the pick and the bind
	// is never mistaken for ours.
	registryIDHeader = "X-Startgate-Registry"
	// portAttempts bounds the retries when the picked port is taken
	// before the registry binds it.
	portAttempts = 5
)

// RegistryOptions configure StartRegistry. The zero value is usable.
type RegistryOptions struct {
	// Parent is where the registry's directory is created; "" means /tmp.
	Parent string
	// Binary is the registry binary; "" looks up docker-registry in PATH
	// (Debian's docker-registry package: CNCF distribution 2.8).
	Binary string
	// NotifyURL, when set, receives the registry's notifications (the
	// distribution webhook: a POST of an events envelope per event).
	NotifyURL string
	// NotifyToken, when set with NotifyURL, is sent on every notification
	// as "Authorization: Bearer NotifyToken".
	NotifyToken string
	// StartTimeout bounds the wait for GET /v2/ to answer 200; 0 means 15s.
	StartTimeout time.Duration
	// Debug sets the registry's log level to debug.
	Debug bool
	// Token makes the registry ask for a bearer token on every request,
	// as public registries do, from a token service on its own host
	// (token.go): Host is then a front that serves /token and forwards
	// the rest to docker-registry.
	Token bool
}

// Registry is a CNCF distribution registry on a loopback port, serving
// plain HTTP from a directory of its own. Its methods are safe for
// concurrent use; Stop may be called more than once.
type Registry struct {
	dir     string
	logPath string
	host    string // 127.0.0.1:PORT
	id      string // the registryIDHeader value
	// backend is docker-registry's own address; host, without token
	// auth. With it, auth's front is host.
	backend string
	auth    *tokenAuth

	// transport is the registry's own, so Stop can close its idle
	// connections (their goroutines would otherwise outlive the test).
	transport *http.Transport

	mu     sync.Mutex // guards the fields below, replaced on a port retry
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
	logf   *os.File

	stopOnce sync.Once
	stopErr  error
}

// StartRegistry starts docker-registry in a new directory under
// opts.Parent on a free loopback port and waits until GET /v2/ answers 200.
// On error nothing is left behind, and the error carries the tail of the
// registry's log.
func StartRegistry(ctx context.Context, opts RegistryOptions) (*Registry, error) {
	return startRegistry(ctx, opts, freeLoopbackPort)
}

// startRegistry takes the port picker so tests can hand it a taken port.
func startRegistry(ctx context.Context, opts RegistryOptions, pickPort func() (int, error)) (_ *Registry, err error) {
	bin := opts.Binary
	if bin == "" {
		bin = "docker-registry"
	}
	if bin, err = exec.LookPath(bin); err != nil {
		return nil, fmt.Errorf("%w: %w (apt-get install docker-registry)", ErrUnsupported, err)
	}
	if opts.Parent == "" {
		opts.Parent = "/tmp"
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 15 * time.Second
	}
	if opts.NotifyToken != "" && opts.NotifyURL == "" {
		return nil, errors.New("testbed: registry: NotifyToken without NotifyURL")
	}
	dir, err := os.MkdirTemp(opts.Parent, "sgreg-")
	if err != nil {
		return nil, fmt.Errorf("testbed: registry: %w", err)
	}
	if dir, err = filepath.Abs(dir); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("testbed: registry: %w", err)
	}
	r := &Registry{
		dir:       dir,
		logPath:   filepath.Join(dir, registryLog),
		id:        randomHex(8),
		transport: http.DefaultTransport.(*http.Transport).Clone(),
		exited:    closedChan(),
	}
	defer func() {
		if err != nil {
			if serr := r.Stop(context.WithoutCancel(ctx)); serr != nil {
				err = errors.Join(err, serr)
			}
		}
	}()
	if err := os.Mkdir(filepath.Join(dir, "data"), 0o700); err != nil {
		return nil, fmt.Errorf("testbed: registry: %w", err)
	}
	if opts.Token {
		if r.auth, err = newTokenAuth(); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, tokenRootFile), r.auth.rootPEM(), 0o600); err != nil {
			return nil, fmt.Errorf("testbed: registry: %w", err)
		}
	}

	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	for attempt := 1; ; attempt++ {
		port, err := pickPort()
		if err != nil {
			return nil, fmt.Errorf("testbed: registry: pick a port: %w", err)
		}
		r.backend = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		r.host = r.backend
		cfg := registryYAML(dir, r.backend, r.id, randomHex(16), opts)
		if err := os.WriteFile(filepath.Join(dir, registryConfig), []byte(cfg), 0o600); err != nil {
			return nil, fmt.Errorf("testbed: registry: %w", err)
		}
		if err := r.startProcess(bin); err != nil {
			return nil, err
		}
		err = r.waitReady(ctx)
		if err == nil && r.auth != nil {
			if err = r.auth.start(r.backend, r.transport); err == nil {
				r.host = r.auth.host()
			}
		}
		if err == nil {
			return r, nil
		}
		// Between our pick and its bind, someone else took the port: the
		// registry exits with EADDRINUSE. Anything else is fatal.
		tail, _ := tailOf(r.logPath, 4<<10)
		if attempt < portAttempts && r.hasExited() && strings.Contains(string(tail), "address already in use") {
			continue
		}
		return nil, r.withLogTail(err)
	}
}

// freeLoopbackPort asks the kernel for a free port on 127.0.0.1 and gives
// it back: distribution's config takes an address, and ":0" would leave us
// no way to learn which port it bound. The port may be taken again before
// the registry binds it; startRegistry retries then.
func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}

// registryYAML renders distribution's config (version 0.1). The registry
// reads this file only: startProcess strips REGISTRY_* variables, each of
// which would override a config key.
//
//   - storage: the filesystem driver under DIR/data; delete enabled, so
//     tests can remove manifests and blobs; no blob descriptor cache (a
//     cache goes stale across deletes, and the disk is fast enough here);
//     no upload purging (a background walker, for day-old uploads).
//   - http.secret: random, set so the registry does not warn about it.
//   - notifications: one endpoint with a 1 s timeout, a threshold of 1
//     and a 200 ms backoff, so a receiver that was briefly down gets the
//     event again within a fraction of a second. Distribution sends events
//     one POST at a time, in order, and retries a failed one forever,
//     holding the events behind it: a receiver that stays down stalls all
//     later notifications of this registry, never its pushes and pulls.
func registryYAML(dir, host, id, secret string, opts RegistryOptions) string {
	q := strconv.Quote // a JSON-style double-quoted string is valid YAML
	level := "info"
	if opts.Debug {
		level = "debug"
	}
	var b strings.Builder
	fmt.Fprintf(&b, `version: 0.1
log:
  level: %s
  formatter: text
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: %s
  headers:
    %s: [%s]
`, level, q(filepath.Join(dir, "data")), q(host), q(secret), registryIDHeader, q(id))
	if opts.Token {
		// The front rewrites the realm to the host each client asked.
		realm := host
		fmt.Fprintf(&b, `auth:
  token:
    realm: %s
    service: %s
    issuer: %s
    rootcertbundle: %s
`, q("http://"+realm+"/token"), q(tokenService), q(tokenIssuer), q(filepath.Join(dir, tokenRootFile)))
	}
	if opts.NotifyURL != "" {
		fmt.Fprintf(&b, `notifications:
  endpoints:
    - name: startgate
      url: %s
      timeout: 1s
      threshold: 1
      backoff: 200ms
`, q(opts.NotifyURL))
		if opts.NotifyToken != "" {
			fmt.Fprintf(&b, `      headers:
        Authorization: [%s]
`, q("Bearer "+opts.NotifyToken))
		}
	}
	return b.String()
}

func (r *Registry) startProcess(bin string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.logf != nil {
		r.logf.Close()
	}
	f, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("testbed: registry: %w", err)
	}
	r.logf = f
	cmd := exec.Command(bin, "serve", filepath.Join(r.dir, registryConfig))
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = r.dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REGISTRY_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// As containerd's: a test binary killed by its timeout takes the
	// registry with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("testbed: start registry: %w", err)
	}
	exited := make(chan struct{})
	r.cmd, r.exited = cmd, exited
	go func() {
		_ = cmd.Wait() // the exit status is in the log
		close(exited)
	}()
	return nil
}

func (r *Registry) proc() (*exec.Cmd, chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cmd, r.exited
}

func (r *Registry) hasExited() bool {
	_, exited := r.proc()
	return isClosed(exited)
}

// waitReady polls GET /v2/ until our registry answers 200 (401 with token
// auth: the challenge), it exits or ctx ends.
func (r *Registry) waitReady(ctx context.Context) error {
	_, exited := r.proc()
	// A probe in flight ends when the registry exits: whoever holds the
	// port it failed to bind may accept and never answer.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-exited:
			cancel()
		case <-ctx.Done():
		}
	}()
	client := &http.Client{Transport: r.transport, Timeout: time.Second}
	url := "http://" + r.backend + "/v2/"
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("testbed: registry: %w", err)
		}
		resp, err := client.Do(req)
		switch {
		case err != nil:
			last = err
		case resp.StatusCode != http.StatusOK && !(r.auth != nil && resp.StatusCode == http.StatusUnauthorized):
			last = fmt.Errorf("GET %s: %s", url, resp.Status)
		case resp.Header.Get(registryIDHeader) != r.id:
			last = fmt.Errorf("GET %s: answered by another server (%s %q, want %q)", url, registryIDHeader, resp.Header.Get(registryIDHeader), r.id)
		}
		if resp != nil {
			resp.Body.Close()
		}
		if err == nil && last == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("testbed: registry exited before it answered: %w", last)
		case <-ctx.Done():
			return fmt.Errorf("testbed: registry did not answer GET /v2/: %w (last error: %w)", ctx.Err(), last)
		case <-tick.C:
		}
		last = nil
	}
}

// Host is the registry's address, "127.0.0.1:PORT": the registry part of
// image references. containerd and go-containerregistry both use plain
// HTTP for loopback hosts.
func (r *Registry) Host() string { return r.host }

// Ref is the full reference of repoTag ("app:1") in this registry,
// "127.0.0.1:PORT/app:1".
func (r *Registry) Ref(repoTag string) string { return r.host + "/" + repoTag }

// Dir is the registry's directory (config, log, storage); Stop removes it.
func (r *Registry) Dir() string { return r.dir }

// TokensIssued counts the bearer tokens the registry's token service has
// handed out (0 without RegistryOptions.Token): one per pull that
// authenticated.
func (r *Registry) TokensIssued() int64 {
	if r.auth == nil {
		return 0
	}
	return r.auth.issued.Load()
}

// LogPath is the registry's log file.
func (r *Registry) LogPath() string { return r.logPath }

// reference parses repoTag ("app:1", "app@sha256:...", or either with
// this registry's host in front) and refuses references to other hosts.
func (r *Registry) reference(repoTag string) (name.Reference, error) {
	ref, err := name.ParseReference(repoTag, name.WithDefaultRegistry(r.host))
	if err != nil {
		return nil, fmt.Errorf("testbed: registry: reference %q: %w", repoTag, err)
	}
	// A missing tag is an error, not a silent ":latest".
	if tag, ok := ref.(name.Tag); ok && !strings.HasSuffix(repoTag, ":"+tag.TagStr()) {
		return nil, fmt.Errorf("testbed: registry: reference %q has no tag", repoTag)
	}
	if got := ref.Context().RegistryStr(); got != r.host {
		return nil, fmt.Errorf("testbed: registry: reference %q names registry %s, not this one (%s)", repoTag, got, r.host)
	}
	return ref, nil
}

// Push uploads img (missing blobs, then the manifest) under repoTag and
// returns the manifest digest.
func (r *Registry) Push(ctx context.Context, repoTag string, img v1.Image) (string, error) {
	ref, err := r.reference(repoTag)
	if err != nil {
		return "", err
	}
	// No name.Insecure needed: go-containerregistry, like containerd,
	// speaks plain HTTP to loopback registries.
	if err := remote.Write(ref, img, remote.WithContext(ctx), remote.WithTransport(r.transport)); err != nil {
		return "", fmt.Errorf("testbed: push %s: %w", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		return "", fmt.Errorf("testbed: push %s: %w", ref, err)
	}
	return d.String(), nil
}

// Patch pushes base with its last layer replaced by changed under repoTag,
// and returns the new image and its manifest digest. This is what a
// security patch looks like to a node: the same tag, a new digest, every
// layer but one already there. Only changed's blob (and the new config and
// manifest) cross the wire.
func (r *Registry) Patch(ctx context.Context, repoTag string, base v1.Image, changed v1.Layer) (v1.Image, string, error) {
	img, err := ReplaceLastLayer(base, changed)
	if err != nil {
		return nil, "", err
	}
	d, err := r.Push(ctx, repoTag, img)
	if err != nil {
		return nil, "", err
	}
	return img, d, nil
}

// Stop kills the registry (SIGKILL: it holds nothing worth a clean
// shutdown), waits until it is reaped and removes its directory. It goes on
// after errors and returns them all; later calls return the first call's
// result.
func (r *Registry) Stop(ctx context.Context) error {
	r.stopOnce.Do(func() { r.stopErr = r.stop(ctx) })
	return r.stopErr
}

func (r *Registry) stop(ctx context.Context) error {
	var errs []error
	cmd, exited := r.proc()
	if cmd != nil && !isClosed(exited) {
		_ = cmd.Process.Kill()
		select {
		case <-exited:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("testbed: registry (pid %d) not reaped after SIGKILL: %w", cmd.Process.Pid, ctx.Err()))
		case <-time.After(5 * time.Second):
			errs = append(errs, fmt.Errorf("testbed: registry (pid %d) survived SIGKILL", cmd.Process.Pid))
		}
	}
	if r.auth != nil {
		errs = append(errs, r.auth.close())
	}
	r.transport.CloseIdleConnections()
	r.mu.Lock()
	if r.logf != nil {
		errs = append(errs, r.logf.Close())
		r.logf = nil
	}
	r.mu.Unlock()
	if err := os.RemoveAll(r.dir); err != nil {
		errs = append(errs, fmt.Errorf("testbed: remove %s: %w", r.dir, err))
	}
	return errors.Join(errs...)
}

// withLogTail appends the end of the registry's log to err.
func (r *Registry) withLogTail(err error) error { return WithLogTail(err, r.logPath) }

// StartRegistryT starts a registry for a test and stops it in t.Cleanup.
// It follows StartT: when this machine lacks docker-registry it skips the
// test, except under CI=true, where it fails. Any other start error fails
// the test.
func StartRegistryT(t testing.TB, opts RegistryOptions) *Registry {
	t.Helper()
	r, err := StartRegistry(context.Background(), opts)
	if err != nil {
		if errors.Is(err, ErrUnsupported) && os.Getenv("CI") != "true" {
			t.Skipf("testbed: cannot start a registry here (set CI=true to make this a failure): %v", err)
		}
		t.Fatalf("testbed: start registry: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := r.Stop(ctx); err != nil {
			t.Errorf("testbed: stop registry: %v", err)
		}
	})
	return r
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand panics instead)
	return hex.EncodeToString(b)
}

func closedChan() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}
