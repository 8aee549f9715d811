package testbed

// Token auth: the bearer-token service a public registry sends its
// clients to (issue 10). Docker Hub, ghcr.io, quay.io and most private
// registries answer an anonymous pull with 401 and a
// `WWW-Authenticate: Bearer realm=...,service=...,scope=...` challenge;
// the client fetches a token from the realm and asks again
// (RegistryOptions.Token). containerd's
// CRI builds a new resolver, and so a new token, for every PullImage:
// this is part of what a pull costs when every layer is already local.
//
// Distribution's token auth (auth.token in its config) accepts a JWT
// signed by a key whose certificate chains to its rootcertbundle; the
// server signs with an ECDSA P-256 key whose self-signed certificate is
// the bundle and rides in the token's x5c header. It grants every action
// asked for on every repository, anonymously, for five minutes, as a
// public registry grants pulls; the tests' pushes go through the same
// flow (go-containerregistry follows the challenge too).

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Token service names, as they appear in the registry's config and the
// tokens' iss and aud claims.
const (
	tokenService = "startgate-testbed-registry"
	tokenIssuer  = "startgate-testbed-token"
	// TokenTTL is how long a token is valid (Docker Hub's is 300 s).
	TokenTTL = 5 * time.Minute
)

// tokenAuth is a registry's token service and the front that serves it
// on the registry's own host: GET (and POST, the OAuth2 form) /token
// issues tokens, every other request goes to docker-registry, and the
// realm in its 401 challenges is rewritten to the host the client asked
// (its Host header), so a client that reached the registry through a
// Link's forwarder fetches its token through the same link, as far away
// as the registry. The same host also because go-containerregistry (the
// tests' pushes) refuses a realm on another loopback host (an SSRF
// guard); Harbor and GitLab serve their token service beside their
// registry too.
type tokenAuth struct {
	key    *ecdsa.PrivateKey
	cert   []byte // DER, self-signed: the registry's root and the x5c
	issued atomic.Int64

	l       net.Listener
	srv     *http.Server
	serving chan struct{} // closed when Serve returned
}

// newTokenAuth generates a signing key and its certificate.
func newTokenAuth() (*tokenAuth, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("testbed: token service: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(now.UnixNano()),
		Subject:               pkix.Name{CommonName: tokenIssuer},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("testbed: token service: certificate: %w", err)
	}
	return &tokenAuth{key: key, cert: der}, nil
}

// start serves the front on a new loopback port, forwarding to backend
// (docker-registry's own address) with tr.
func (ta *tokenAuth) start(backend string, tr http.RoundTripper) error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("testbed: token service: %w", err)
	}
	ta.l, ta.serving = l, make(chan struct{})
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: backend})
	rp.Transport = tr
	rp.ModifyResponse = func(resp *http.Response) error {
		if c := resp.Header.Get("Www-Authenticate"); c != "" {
			resp.Header.Set("Www-Authenticate", rewriteRealm(c, "http://"+resp.Request.Host+"/token"))
		}
		return nil
	}
	// The proxy's outgoing request keeps the client's Host header
	// (SetURL would replace it), so the rewrite above sees it.
	director := rp.Director
	rp.Director = func(r *http.Request) {
		host := r.Host
		director(r)
		r.Host = host
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/token", ta.serveToken)
	mux.Handle("/", rp)
	ta.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(ta.serving)
		_ = ta.srv.Serve(l) // ErrServerClosed after close
	}()
	return nil
}

// host is the front's address, 127.0.0.1:PORT: the registry's host.
func (ta *tokenAuth) host() string { return ta.l.Addr().String() }

// rootPEM is the certificate the registry trusts tokens from.
func (ta *tokenAuth) rootPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ta.cert})
}

// close stops serving, if it started, and waits for the server's
// goroutine. It shuts down gracefully for up to 5 s, then closes what is
// left: a client that keeps a request going (containerd behind a slow
// Link, on a loaded machine) is cut, which is not the front's failure.
func (ta *tokenAuth) close() error {
	if ta.srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var err error
	if ta.srv.Shutdown(ctx) != nil {
		err = ta.srv.Close()
	}
	<-ta.serving
	return err
}

// rewriteRealm replaces the realm="..." parameter of a Bearer challenge.
func rewriteRealm(challenge, realm string) string {
	i := strings.Index(challenge, `realm="`)
	if i < 0 {
		return challenge
	}
	j := strings.Index(challenge[i+len(`realm="`):], `"`)
	if j < 0 {
		return challenge
	}
	return challenge[:i] + `realm="` + realm + `"` + challenge[i+len(`realm="`)+j+1:]
}

// access is one entry of a token's access claim.
type access struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// parseScope reads "repository:NAME:pull,push" (the docker token
// protocol's scope); NAME may not hold a colon in a repository scope,
// but a registry:catalog:* scope has one part fewer, so the type is the
// first field and the actions the last.
func parseScope(s string) (access, error) {
	first := strings.Index(s, ":")
	last := strings.LastIndex(s, ":")
	if first < 0 || first == last {
		return access{}, fmt.Errorf("scope %q: want type:name:actions", s)
	}
	return access{Type: s[:first], Name: s[first+1 : last], Actions: strings.Split(s[last+1:], ",")}, nil
}

func (ta *tokenAuth) serveToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if svc := r.Form.Get("service"); svc != tokenService {
		http.Error(w, fmt.Sprintf("service %q: this server issues tokens for %q", svc, tokenService), http.StatusBadRequest)
		return
	}
	grants := []access{}
	for _, s := range r.Form["scope"] {
		for _, one := range strings.Fields(s) { // several scopes may share one parameter
			a, err := parseScope(one)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			grants = append(grants, a)
		}
	}
	now := time.Now()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"iss":    tokenIssuer,
		"sub":    "",
		"aud":    tokenService, // distribution 2.8 reads a string
		"exp":    now.Add(TokenTTL).Unix(),
		"nbf":    now.Add(-time.Minute).Unix(),
		"iat":    now.Unix(),
		"jti":    randomHex(8),
		"access": grants,
	})
	tok.Header["x5c"] = []string{base64.StdEncoding.EncodeToString(ta.cert)}
	signed, err := tok.SignedString(ta.key)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	ta.issued.Add(1)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"token":        signed,
		"access_token": signed,
		"expires_in":   int(TokenTTL.Seconds()),
		"issued_at":    now.UTC().Format(time.RFC3339),
	})
}
