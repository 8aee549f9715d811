package prefetch

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"sync"
	"time"

	"github.com/docker/docker-credential-helpers/client"
	"github.com/docker/docker-credential-helpers/credentials"
)

// CredentialHelpers runs docker credential helpers
// (docker-credential-NAME get, the protocol of docker and of kubelet's
// image credential providers' predecessors) for the registry hosts an
// operator mapped to them in startgated's own root-owned config: helpers
// named in a docker config.json are never run (DockerConfig). A helper's
// answer is kept for CacheFor; a helper that fails is asked again next
// time, and one that knows no credentials for the host means anonymous.
type CredentialHelpers struct {
	// ByHost maps a registry host (as DockerConfig keys it) to a helper
	// name: "ecr-login" runs docker-credential-ecr-login from PATH.
	ByHost map[string]string
	// Fallback answers the hosts no helper is mapped to (the docker
	// config's Credentials); nil means anonymous.
	Fallback func(host string) (string, string, error)
	// Timeout bounds one run of a helper; 0 is 30 s.
	Timeout time.Duration
	// CacheFor is how long a helper's answer is reused; 0 is a minute.
	CacheFor time.Duration

	mu    sync.Mutex
	cache map[string]cachedCred
	now   func() time.Time // time.Now when nil
}

type cachedCred struct {
	user, secret string
	at           time.Time
}

// validHelperName is what may follow docker-credential- in a helper's
// program name: no path, no option.
var validHelperName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// ValidHelperName reports whether name can name a helper.
func ValidHelperName(name string) bool { return validHelperName.MatchString(name) }

// Credentials is containerd's docker.WithAuthCreds function.
func (h *CredentialHelpers) Credentials(host string) (string, string, error) {
	name, ok := h.ByHost[canonicalHost(host)]
	if !ok {
		if h.Fallback == nil {
			return "", "", nil
		}
		return h.Fallback(host)
	}
	now := time.Now
	if h.now != nil {
		now = h.now
	}
	cacheFor := h.CacheFor
	if cacheFor <= 0 {
		cacheFor = time.Minute
	}
	key := canonicalHost(host)
	h.mu.Lock()
	c, ok := h.cache[key]
	h.mu.Unlock()
	if ok && now().Sub(c.at) < cacheFor {
		return c.user, c.secret, nil
	}
	user, secret, err := h.run(name, host)
	if err != nil {
		return "", "", err
	}
	h.mu.Lock()
	if h.cache == nil {
		h.cache = map[string]cachedCred{}
	}
	h.cache[key] = cachedCred{user: user, secret: secret, at: now()}
	h.mu.Unlock()
	return user, secret, nil
}

// run asks helper name for host's credentials.
func (h *CredentialHelpers) run(name, host string) (string, string, error) {
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	prog := "docker-credential-" + name
	c, err := client.Get(func(args ...string) client.Program {
		return &helperProgram{cmd: exec.CommandContext(ctx, prog, args...)}
	}, host)
	switch {
	case credentials.IsErrCredentialsNotFound(err):
		return "", "", nil
	case ctx.Err() != nil:
		return "", "", fmt.Errorf("prefetch: credential helper %s for %s: no answer within %v", prog, host, timeout)
	case err != nil:
		// The helper's own message: it names no secret.
		return "", "", fmt.Errorf("prefetch: credential helper %s for %s: %w", prog, host, err)
	}
	if c.Username == "<token>" {
		// docker's convention for an identity (refresh) token.
		return "", c.Secret, nil
	}
	return c.Username, c.Secret, nil
}

// helperProgram is client.Program on an exec.Cmd: its stdout is the
// answer; its stderr is kept for the error, bounded.
type helperProgram struct {
	cmd *exec.Cmd
}

func (p *helperProgram) Input(in io.Reader) { p.cmd.Stdin = in }

func (p *helperProgram) Output() ([]byte, error) {
	var stderr bytes.Buffer
	p.cmd.Stderr = &limitedWriter{w: &stderr, n: 4096}
	out, err := p.cmd.Output()
	if err != nil && len(out) == 0 && stderr.Len() > 0 {
		// client.Get reads the helper's message from what it returns.
		return stderr.Bytes(), err
	}
	return out, err
}

// limitedWriter keeps the first n bytes and drops the rest.
type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(b []byte) (int, error) {
	if l.n > 0 {
		k := min(len(b), l.n)
		l.n -= k
		if _, err := l.w.Write(b[:k]); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}
