package prefetch

// Push notifications from the registry (issue 4, item 2).
//
// The CNCF distribution registry POSTs an envelope of events to each
// configured endpoint, one request at a time, in order, and retries a
// failed request until it succeeds, holding every later event behind it.
// So the receiver must answer fast and must answer 200 to anything it
// merely does not care about; only requests that are not notifications at
// all (wrong token, method, content type, size, JSON) get an error.
//
// A push of an image produces a push event per blob (layers and config:
// no tag, a blob media type) and one for the manifest (a manifest media
// type, and the tag when pushed by tag). Pulls produce pull events. Only a
// tagged manifest or index push names a tag that may have a new digest;
// the Notifier hands exactly those to its callback and counts the rest as
// ignored.
//
// # The callback runs on the request goroutine and must not block
//
// The alternative was a bounded channel drained by a goroutine of the
// Notifier's own. It would still have to drop events when full (blocking
// the registry is worse: its later events wait), so it only moves the
// queue; and the consumer, the watch loop, needs its own "this ref is due
// now" state anyway, to coalesce with polls and API requests. So the
// callback is the consumer's non-blocking poke (mark the ref due, signal
// a buffered channel of size 1 with select/default) and the Notifier owns
// no goroutine. A callback that blocks stalls this registry's
// notifications, never its pushes or pulls.
//
// # Which host the reference names
//
// The event's request.host is the Host header of the push, i.e. the
// registry's name as the pushing client used it, which is how nodes name
// it too in the common case. NotifierOptions.HostAliases maps it to the
// nodes' name when they differ (CI pushes to an internal name or through a
// load balancer); NotifierOptions.DefaultHost is used when an event has no
// request.host. An event with neither is ignored. The registry's own
// listen address (source.addr) is not used: it is often 0.0.0.0 or an
// address nodes do not pull from.
//
// The sender is authenticated, but the reference it names is still only
// a hint: the consumer applies its registry allowlist (item 5) and
// resolves the tag itself before fetching anything.

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	"go.uber.org/zap"
)

const (
	// NotificationMediaType is the Content-Type of distribution's
	// notification envelopes.
	NotificationMediaType = "application/vnd.docker.distribution.events.v1+json"
	// DefaultNotifyMaxBody bounds a notification body. Distribution sends
	// one event per request with the default threshold; 1 MiB is hundreds
	// of events.
	DefaultNotifyMaxBody = 1 << 20

	notifyShutdownTimeout = 5 * time.Second
)

// notifyManifestTypes are the media types of a push that may move a tag.
// Docker schema 1 is left out: containerd 2 does not pull it.
var notifyManifestTypes = map[string]bool{
	"application/vnd.oci.image.manifest.v1+json":                true,
	"application/vnd.oci.image.index.v1+json":                   true,
	"application/vnd.docker.distribution.manifest.v2+json":      true,
	"application/vnd.docker.distribution.manifest.list.v2+json": true,
}

// NotifyFunc receives a pushed tag: ref is HOST/REPOSITORY:TAG and digest
// the manifest's (or index's) digest. It is called on the HTTP request
// goroutine and must not block; see the package notes in notify.go.
type NotifyFunc func(ref, digest string)

// NotifierOptions configure NewNotifier.
type NotifierOptions struct {
	// Token is the bearer token the registry sends ("Authorization:
	// Bearer TOKEN"). Required: the Notifier never runs unauthenticated.
	Token string
	// OnPush is called for each tagged manifest or index push. Required.
	OnPush NotifyFunc
	// HostAliases maps an event's request.host (the name the pusher used)
	// to the registry's name as this node's images use it.
	HostAliases map[string]string
	// DefaultHost names the registry for events without a request.host.
	DefaultHost string
	// MaxBody bounds the request body; 0 means DefaultNotifyMaxBody.
	MaxBody int64
	// Logger; nil means no logging.
	Logger *zap.Logger
}

// NotifierStats are the Notifier's counters since it was created.
type NotifierStats struct {
	// Accepted counts events handed to OnPush.
	Accepted uint64
	// Ignored counts events of valid requests that were not tagged
	// manifest pushes, or that named no usable reference.
	Ignored uint64
	// Rejected counts requests answered with an error (401, 405, 413,
	// 415, 400); their events are not counted.
	Rejected uint64
}

// Notifier is an http.Handler for distribution's notification webhook.
// It is safe for concurrent use.
type Notifier struct {
	tokenSum [sha256.Size]byte // of "Bearer TOKEN"
	onPush   NotifyFunc
	aliases  map[string]string
	defHost  string
	maxBody  int64
	log      *zap.Logger

	accepted, ignored, rejected atomic.Uint64
}

var _ http.Handler = (*Notifier)(nil)

// NewNotifier returns a Notifier. It refuses an empty token or a nil
// callback.
func NewNotifier(opts NotifierOptions) (*Notifier, error) {
	if opts.Token == "" {
		return nil, errors.New("prefetch: notifier: empty token")
	}
	if opts.OnPush == nil {
		return nil, errors.New("prefetch: notifier: no OnPush callback")
	}
	if opts.MaxBody <= 0 {
		opts.MaxBody = DefaultNotifyMaxBody
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	aliases := make(map[string]string, len(opts.HostAliases))
	for k, v := range opts.HostAliases {
		aliases[k] = v
	}
	return &Notifier{
		tokenSum: sha256.Sum256([]byte("Bearer " + opts.Token)),
		onPush:   opts.OnPush,
		aliases:  aliases,
		defHost:  opts.DefaultHost,
		maxBody:  opts.MaxBody,
		log:      opts.Logger,
	}, nil
}

// Stats returns the counters.
func (n *Notifier) Stats() NotifierStats {
	return NotifierStats{
		Accepted: n.accepted.Load(),
		Ignored:  n.ignored.Load(),
		Rejected: n.rejected.Load(),
	}
}

// notifyEnvelope is the part of distribution's notifications.Envelope
// that the Notifier reads. Events is a pointer so that a body without it
// is told apart from an empty list.
type notifyEnvelope struct {
	Events *[]notifyEvent `json:"events"`
}

type notifyEvent struct {
	Action string `json:"action"`
	Target struct {
		MediaType  string `json:"mediaType"`
		Digest     string `json:"digest"`
		Repository string `json:"repository"`
		Tag        string `json:"tag"`
	} `json:"target"`
	Request struct {
		Addr string `json:"addr"`
		Host string `json:"host"`
	} `json:"request"`
	Source struct {
		Addr string `json:"addr"`
	} `json:"source"`
}

func (n *Notifier) reject(w http.ResponseWriter, code int, msg string) {
	n.rejected.Add(1)
	http.Error(w, msg, code)
}

// ServeHTTP checks the request in the order that leaks least: the token
// before anything else, so an unauthenticated client learns nothing about
// what else would be accepted.
func (n *Notifier) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	// Hashing both sides makes the compare constant-time in the length too.
	got := sha256.Sum256([]byte(req.Header.Get("Authorization")))
	if subtle.ConstantTimeCompare(got[:], n.tokenSum[:]) != 1 {
		n.log.Debug("notification: unauthorized", zap.String("remote", req.RemoteAddr))
		w.Header().Set("WWW-Authenticate", `Bearer realm="startgate"`)
		n.reject(w, http.StatusUnauthorized, "unauthorized")
		return
	}
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		n.reject(w, http.StatusMethodNotAllowed, "method not allowed: notifications are POSTed")
		return
	}
	if ct := req.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != NotificationMediaType && mt != "application/json") {
			n.reject(w, http.StatusUnsupportedMediaType, fmt.Sprintf("unsupported content type %q, want %s", ct, NotificationMediaType))
			return
		}
	}
	if req.ContentLength > n.maxBody {
		n.reject(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body of %d bytes exceeds %d", req.ContentLength, n.maxBody))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, n.maxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			n.reject(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds %d bytes", n.maxBody))
			return
		}
		n.reject(w, http.StatusBadRequest, "reading body: "+err.Error())
		return
	}
	var env notifyEnvelope
	if err := json.Unmarshal(body, &env); err != nil {
		n.reject(w, http.StatusBadRequest, "malformed notification: "+err.Error())
		return
	}
	if env.Events == nil {
		n.reject(w, http.StatusBadRequest, `malformed notification: no "events" list`)
		return
	}
	for i := range *env.Events {
		ev := &(*env.Events)[i]
		ref, dgst, why := n.pushedTag(ev)
		if why != "" {
			n.ignored.Add(1)
			n.log.Debug("notification: event ignored", zap.String("why", why),
				zap.String("action", ev.Action), zap.String("mediaType", ev.Target.MediaType),
				zap.String("repository", ev.Target.Repository), zap.String("digest", ev.Target.Digest))
			continue
		}
		n.accepted.Add(1)
		n.log.Debug("notification: tag pushed", zap.String("ref", ref), zap.String("digest", dgst))
		n.onPush(ref, dgst)
	}
	w.WriteHeader(http.StatusOK)
}

// pushedTag returns the reference and digest a tagged manifest push
// names, or why the event is ignored.
func (n *Notifier) pushedTag(ev *notifyEvent) (ref, dgst, why string) {
	if ev.Action != "push" {
		return "", "", "not a push"
	}
	mt, _, _ := strings.Cut(ev.Target.MediaType, ";")
	if !notifyManifestTypes[strings.TrimSpace(mt)] {
		return "", "", "not a manifest"
	}
	if ev.Target.Tag == "" {
		return "", "", "no tag"
	}
	d, err := digest.Parse(ev.Target.Digest)
	if err != nil {
		return "", "", "bad digest"
	}
	host := ev.Request.Host
	if alias, ok := n.aliases[host]; ok {
		host = alias
	}
	if host == "" {
		host = n.defHost
	}
	if host == "" {
		return "", "", "no host"
	}
	s := host + "/" + ev.Target.Repository + ":" + ev.Target.Tag
	// ParseNamed refuses anything but a canonical HOST/REPO:TAG, so a
	// request.host or repository with a path, digest or bad character in
	// it never reaches the callback.
	named, err := reference.ParseNamed(s)
	if err != nil {
		return "", "", "bad reference"
	}
	if _, ok := named.(reference.Tagged); !ok {
		return "", "", "bad reference"
	}
	if _, ok := named.(reference.Digested); ok {
		return "", "", "bad reference"
	}
	if reference.Domain(named) != host {
		return "", "", "bad reference"
	}
	return named.String(), d.String(), ""
}

// ServeNotifications serves h on lis until ctx ends, then shuts the server
// down (waiting up to 5 s for requests in flight) and returns nil. It
// returns Serve's error if serving fails first. It closes lis.
func ServeNotifications(ctx context.Context, lis net.Listener, h http.Handler) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       time.Minute,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	select {
	case err := <-served:
		return fmt.Errorf("prefetch: serve notifications: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), notifyShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		err = errors.Join(err, srv.Close())
	}
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return fmt.Errorf("prefetch: shut down notifications: %w", err)
	}
	return nil
}
