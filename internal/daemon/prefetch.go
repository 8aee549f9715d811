package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/startgate/startgate/internal/admission"
	"github.com/startgate/startgate/internal/config"
	"github.com/startgate/startgate/internal/prefetch"
	"github.com/startgate/startgate/internal/pressure"
)

// prefetcher is the [prefetch] section wired up: the containerd client,
// the Fetcher, the Manager and, when prefetch.notifications.listen is
// set, the webhook listener. Run owns its goroutines (start) and stops
// them in order (stop).
type prefetcher struct {
	client   *containerd.Client
	fetcher  *prefetch.Fetcher
	manager  *prefetch.Manager
	notifier *prefetch.Notifier
	// notify takes prefetch.notifications.listen in the background;
	// nil without notifications.
	notify *retryListener
	fleet  *fleetPart  // nil without [fleet]
	fields []zap.Field // the "prefetch on" line
	log    *zap.Logger

	stopNotify, stopManager, stopFleet context.CancelFunc
	notifyDone, managerDone, fleetDone chan struct{}
}

// newPrefetch builds the prefetcher, or returns nil when prefetch is off.
// It contacts no one: the containerd client connects on first use, so
// startgated starts while containerd is down and the Manager's next
// cycle tries again (it logs the failure and keeps its watch set). The
// token file and the docker config were read by readStartInputs, where a
// bad one fails the start; the notification listener is bound by start,
// in the background.
func newPrefetch(cfg *config.Config, in startInputs, log *zap.Logger, gate *admission.Gate, obs prefetch.Observer) (_ *prefetcher, err error) {
	pc := cfg.Prefetch
	if !pc.Enabled {
		return nil, nil
	}
	log = log.Named("prefetch")
	pf := &prefetcher{log: log}
	defer func() {
		if err != nil {
			pf.close()
		}
	}()
	// The token and the docker config were read at start
	// (readStartInputs), where a bad one fails the start.
	token := in.token
	sock := cfg.PrefetchContainerdSocket()
	// containerd.New does not dial (grpc.NewClient), but its dialer
	// retries a missing socket file every 10 ms until its timeout (10 s)
	// and ignores the context: a call while containerd is down would wait
	// that long, and shutdown would leave the dialling goroutine behind.
	// This dialer fails at once and honours cancellation; gRPC reconnects
	// with backoff.
	pf.client, err = containerd.New(sock,
		containerd.WithDefaultNamespace(prefetch.DefaultNamespace),
		containerd.WithExtraDialOpts([]grpc.DialOption{grpc.WithContextDialer(dialUnix)}),
	)
	if err != nil {
		return nil, fmt.Errorf("daemon: prefetch: containerd client on %s: %w", sock, err)
	}
	// Only the docker config's hosts are ever logged.
	var creds func(string) (string, string, error)
	credHosts := []string{}
	if dc := in.docker; dc != nil {
		creds, credHosts = dc.Credentials, dc.Hosts()
		slices.Sort(credHosts)
	}
	if len(pc.CredentialHelpers) > 0 {
		h := &prefetch.CredentialHelpers{ByHost: pc.CredentialHelpers, Fallback: creds, Timeout: pc.RequestTimeout.Std()}
		creds = h.Credentials
	}
	// Prefetch yields to starts: it pauses while IO pressure is above the
	// gate's own IO target, waits in the gate's background class, and all
	// fetches together read at most prefetch.bandwidth bytes a second.
	throttle, err := prefetch.NewThrottle(prefetch.ThrottleOptions{
		BytesPerSecond: int64(pc.Bandwidth),
		IOPressure:     func() float64 { return gate.Status().Pressure.Some[pressure.IO] },
		IOTarget:       cfg.Admission.Targets.IO,
	})
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	pf.fetcher, err = prefetch.New(pf.client, prefetch.Options{
		WrapReader:     throttle.Reader,
		Snapshotter:    pc.Snapshotter,
		Namespace:      prefetch.DefaultNamespace,
		LeaseExpiry:    pc.LeaseExpiry.Std(),
		PlainHTTP:      plainHTTP(pc.PlainHTTP),
		HostsDir:       pc.HostsDir,
		Credentials:    creds,
		RequestTimeout: pc.RequestTimeout.Std(),
		// The Manager is made below, before any fetch: a redirect may
		// go only where a fetch may.
		AllowHost: func(host string) error { return pf.manager.CheckHost(host) },
		Logger:    log,
	})
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	mopts := prefetch.ManagerOptions{
		Interval:    pc.Interval.Std(),
		MaxBackoff:  pc.MaxBackoff.Std(),
		Concurrency: pc.Concurrency,
		// prefetch.watch's registries are the operator's choice as much
		// as prefetch.registries.
		Registries:     append(slices.Clone(pc.Registries), pc.WatchRegistries()...),
		Admitter:       gate,
		Throttle:       throttle,
		RollbackWindow: pc.RollbackWindow.Std(),
		Observer:       obs,
		Logger:         log,
	}
	if cfg.Fleet.Enabled {
		// Every fetch from a registry asks the fleet first (at most
		// fleet.upstream_slots nodes at once); until the fleet runs,
		// nothing beyond this node bounds it.
		pf.fleet = newFleetPart(cfg, log)
		mopts.Upstream = pf.fleet
	}
	if pc.MoveTag {
		if mopts.MoveTag, err = moveTag(pf.client.Conn(), log); err != nil {
			return nil, err
		}
	}
	pf.manager, err = prefetch.NewManager(pf.fetcher, mopts)
	if err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	if pf.fleet != nil {
		pf.fleet.manager, pf.fleet.fetcher = pf.manager, pf.fetcher
	}
	for _, ref := range pc.Watch {
		// Queued for the Manager's first cycle; validated with the config.
		if err := pf.manager.Add(ref); err != nil {
			return nil, fmt.Errorf("daemon: prefetch.watch: %w", err)
		}
	}
	notifications := "off"
	if pc.Notifications.Listen != "" {
		m := pf.manager
		pf.notifier, err = prefetch.NewNotifier(prefetch.NotifierOptions{
			Token: token,
			// Notify does not block: it queues the ref for the
			// Manager's loop.
			OnPush: func(ref, dgst string) {
				if pf.fleet != nil && dgst != "" {
					// The cluster learns of it too: every node that
					// runs the tag, through one announcement.
					pf.fleet.Announce(ref, dgst)
				}
				if err := m.Notify(ref, dgst); errors.Is(err, prefetch.ErrRegistryNotAllowed) {
					log.Warn("prefetch: notification refused", zap.String("ref", ref), zap.Error(err))
				} else if err != nil {
					log.Debug("prefetch: notification not triggered", zap.String("ref", ref), zap.Error(err))
				}
			},
			Logger: log,
		})
		if err != nil {
			return nil, fmt.Errorf("daemon: %w", err)
		}
		// Bound in the background (start), as the metrics endpoint is: a
		// port another process holds must not keep kubelet from its
		// runtime; the registry's pushes wait, and the Manager's polling
		// goes on meanwhile.
		pf.notify = newRetryListener(pc.Notifications.Listen, "prefetch notifications listener", log, nil)
		notifications = pc.Notifications.Listen
	}
	pf.fields = []zap.Field{
		zap.String("containerd_socket", sock),
		zap.String("namespace", prefetch.DefaultNamespace),
		zap.String("snapshotter", pc.Snapshotter),
		zap.Duration("interval", pc.Interval.Std()),
		zap.Duration("max_backoff", pc.MaxBackoff.Std()),
		zap.Int("concurrency", pc.Concurrency),
		zap.Duration("lease_expiry", pc.LeaseExpiry.Std()),
		zap.Int64("bandwidth_bytes_per_second", int64(pc.Bandwidth)),
		zap.Duration("rollback_window", pc.RollbackWindow.Std()),
		zap.Bool("move_tag", pc.MoveTag),
		zap.Strings("plain_http", append([]string{"loopback"}, pc.PlainHTTP...)),
		zap.Strings("registries", append([]string{"node's"}, pc.Registries...)),
		zap.Strings("watch", pc.Watch),
		zap.Strings("credentials_for", credHosts),
		zap.Any("credential_helpers", pc.CredentialHelpers),
		zap.String("hosts_dir", pc.HostsDir),
		zap.Duration("request_timeout", pc.RequestTimeout.Std()),
		zap.String("notifications", notifications),
	}
	return pf, nil
}

// start runs the Manager and the notification listener under wg, each
// with a context of its own below ctx so that stop can end them in turn.
// The listener takes its address in the background, and one that stops
// serving is logged and listened for again: neither ends the daemon.
func (pf *prefetcher) start(ctx context.Context, wg *sync.WaitGroup) {
	var mctx context.Context
	mctx, pf.stopManager = context.WithCancel(ctx)
	pf.managerDone = make(chan struct{})
	wg.Go(func() {
		defer close(pf.managerDone)
		_ = pf.manager.Run(mctx)
	})
	if pf.fleet != nil {
		var fctx context.Context
		fctx, pf.stopFleet = context.WithCancel(ctx)
		pf.fleetDone = make(chan struct{})
		wg.Go(func() {
			defer close(pf.fleetDone)
			pf.fleet.run(fctx)
		})
	}
	if pf.notify == nil {
		return
	}
	var nctx context.Context
	nctx, pf.stopNotify = context.WithCancel(ctx)
	pf.notifyDone = make(chan struct{})
	wg.Go(func() {
		defer close(pf.notifyDone)
		for {
			lis, err := pf.notify.listen(nctx)
			if err != nil {
				return // stopped
			}
			// ServeNotifications closes lis.
			err = prefetch.ServeNotifications(nctx, lis, pf.notifier)
			if nctx.Err() != nil {
				return
			}
			pf.notify.setErr(err)
			pf.log.Error("prefetch notifications listener stopped serving; listening again", zap.String("address", pf.notify.addr), zap.Error(err))
		}
	})
}

// stop ends the notification listener (requests in flight are answered,
// within 5 s), then the fleet's part (its slots are released), then the
// Manager (its fetches are cancelled; a cancelled fetch deletes its
// lease). Notifications go first so that no trigger arrives for a
// Manager that is gone.
func (pf *prefetcher) stop() {
	if pf.stopNotify != nil {
		pf.stopNotify()
		<-pf.notifyDone
	}
	if pf.stopFleet != nil {
		pf.stopFleet()
		<-pf.fleetDone
	}
	if pf.stopManager != nil {
		pf.stopManager()
		<-pf.managerDone
	}
}

// close releases what newPrefetch took; call after the goroutines have
// ended.
func (pf *prefetcher) close() {
	if pf.fetcher != nil {
		pf.fetcher.Close()
	}
	if pf.client != nil {
		if err := pf.client.Close(); err != nil {
			pf.log.Debug("prefetch: containerd client close", zap.Error(err))
		}
	}
}

// dialUnix dials containerd's unix socket, failing at once when nothing
// is there.
func dialUnix(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", strings.TrimPrefix(addr, "unix://"))
}

// plainHTTP is prefetch.plain_http as the Fetcher's PlainHTTP: loopback
// hosts (containerd's rule) and the listed hosts; a listed host without a
// port matches it on any port.
func plainHTTP(hosts []string) func(string) (bool, error) {
	listed := slices.Clone(hosts)
	return func(host string) (bool, error) {
		if ok, err := docker.MatchLocalhost(host); ok || err != nil {
			return ok, err
		}
		if slices.Contains(listed, host) {
			return true, nil
		}
		if h, _, err := net.SplitHostPort(host); err == nil {
			return slices.Contains(listed, h), nil
		}
		return false, nil
	}
}
