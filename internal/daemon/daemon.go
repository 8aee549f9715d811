package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/startgate/startgate/internal/admission"
	"github.com/startgate/startgate/internal/config"
	"github.com/startgate/startgate/internal/criproxy"
	"github.com/startgate/startgate/internal/kube"
	"github.com/startgate/startgate/internal/metrics"
	"github.com/startgate/startgate/internal/prefetch"
	"github.com/startgate/startgate/internal/pressure"
	"github.com/startgate/startgate/internal/server"
	"github.com/startgate/startgate/internal/version"
)

// Run serves until ctx ends, then shuts down and returns nil; it returns
// an error when the daemon cannot start or a server fails. cfg must be
// validated. reload, when not nil, re-reads the configuration on its
// signals.
func Run(ctx context.Context, cfg *config.Config, log *zap.Logger, reload *Reload) error {
	mode, err := cfg.SocketFileMode()
	if err != nil {
		return err
	}
	gid, err := cfg.SocketGID()
	if err != nil {
		return err
	}
	// What `startgated config check` reads too, so that it refuses what
	// this start would.
	in, err := readStartInputs(cfg)
	if err != nil {
		return err
	}
	src := in.src
	sampler, err := pressure.NewSampler(src, cfg.Pressure.Smoothing)
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}

	gcfg := admission.Config{
		Logger:   log.Named("admission"),
		Policy:   cfg.Policy(),
		Cores:    runtime.NumCPU(),
		Interval: cfg.Pressure.Interval.Std(),
		// A sampler whose first read fails is still passed: the gate logs
		// once and keeps static limits until PSI can be read.
		Pressure: sampler,
	}
	var reg *prometheus.Registry
	var m *metrics.Metrics
	var epMetrics *metrics.Endpoint
	if cfg.Metrics.Listen != "" {
		reg = prometheus.NewRegistry()
		metrics.RegisterProcess(reg)
		m = metrics.New(reg)
		epMetrics = metrics.NewEndpoint(reg)
		gcfg.Observer = m
	}
	gate, err := admission.New(gcfg)
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	// Close is idempotent; this covers the error returns below.
	defer gate.Close()
	if m != nil {
		m.WatchGate(gate)
	}

	var pfObserver prefetch.Observer
	if reg != nil {
		pfObserver = metrics.NewPrefetch(reg)
	}
	pf, err := newPrefetch(cfg, in, log, gate, pfObserver)
	if err != nil {
		return err
	}
	if pf != nil {
		// Closes the notification listener when Run returns before serving
		// it, then the Fetcher's idle connections and the containerd
		// client, after the goroutines below have ended (wg.Wait).
		defer pf.close()
	}

	scfg := server.Config{Gate: gate, Logger: log.Named("server"), AdminGID: gid, Limits: cfg.Daemon.Limits(), CRIUpstream: cfg.CRI.ContainerdSocket}
	if pf != nil {
		// Only when on: the prefetch RPCs answer FailedPrecondition
		// without it.
		scfg.Prefetch = pf.manager
	}
	srv, err := server.New(scfg)
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	// The gRPC server starts its stream workers in New: an error return
	// before the orderly stop below must still stop them. Stop is
	// idempotent.
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		srv.Stop(stopCtx)
	}()

	act, err := activatedListeners()
	if err != nil {
		return err
	}
	if act.cri != nil {
		// Closing ours would not close systemd's: kubelet's connections
		// would queue on a socket nobody serves. A CRI socket passed in is
		// served, whatever cri.enabled says.
		defer act.cri.Close()
	}
	api := act.api
	if api == nil {
		if api, err = listenSocket(cfg.Daemon.Socket, mode, gid); err != nil {
			return err
		}
	}
	// grpc.Server closes the listener on Stop; this covers the error
	// returns before Serve.
	defer api.Close()

	var proxy *criproxy.Proxy
	var criLis *apiListener
	var pods *kube.Pods
	if cfg.CRI.Enabled || act.cri != nil {
		pods = newPods(cfg, log)
		pcfg := criproxy.Config{
			Upstream:   cfg.CRI.ContainerdSocket,
			Gate:       gate,
			Logger:     log.Named("cri"),
			Classifier: cfg.Classifier(),
			Warmup:     cfg.Warmup(),
			Pulls:      cfg.Pulls(),
			// Status takes the gate's lock, once per pull lane interval.
			IOPressure: func() float64 { return gate.Status().Pressure.Some[pressure.IO] },
		}
		if m != nil {
			// Only when set: a nil *Metrics in the interface is not nil.
			pcfg.Observer = m
		}
		if pf != nil {
			// A pull of an image being prefetched joins the fetch; pulls
			// that succeed tell the manager (hits, early lease release).
			pcfg.Prefetch = pf.manager
		}
		if pods != nil {
			// Only when set: a nil *kube.Pods in the interface is not nil.
			pcfg.Pods = pods
			pcfg.Events, pcfg.HeldEventAfter, pcfg.Explain = pods, cfg.Kubernetes.EventAfter.Std(), gate.Explain
		}
		// New does not dial: containerd may come up after startgated, and
		// the proxy answers Unavailable until it does.
		if proxy, err = criproxy.New(pcfg); err != nil {
			return fmt.Errorf("daemon: cri proxy: %w", err)
		}
		// Stop is idempotent; this covers the error returns below.
		defer func() {
			stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
			proxy.Stop(stopCtx)
		}()
		criLis = act.cri
		if criLis == nil {
			// 0600 and the daemon's group: only root (kubelet) may start
			// containers through it, as with containerd's own socket.
			if criLis, err = listenSocket(cfg.CRI.Socket, 0o600, -1); err != nil {
				return err
			}
			defer criLis.Close()
		}
	}

	// The metrics and health endpoint listens in the background, once
	// everything above serves: a port it cannot take is retried, and
	// never fails or delays the start (endpoint).
	hlth := &health{gate: gate, now: time.Now}
	var ep *endpoint
	if reg != nil {
		if proxy != nil {
			if hlth.cri, err = newCRIReadiness(criLis.path, cfg.CRI.ContainerdSocket); err != nil {
				return err
			}
			defer hlth.cri.close()
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		hlth.install(mux, log.Named("health"))
		ep = newEndpoint(cfg.Metrics.Listen, mux, log, epMetrics.ListenFailed)
	}

	fields := []zap.Field{
		zap.Stringer("version", version.Get()),
		zap.String("socket", api.path),
		zap.Bool("socket_activated", api.activated),
		zap.String("socket_mode", fmt.Sprintf("%04o", mode)),
		zap.Int("admin_gid", gid),
	}
	if proxy != nil {
		fields = append(fields,
			zap.String("cri_socket", criLis.path),
			zap.Bool("cri_socket_activated", criLis.activated),
			zap.String("containerd_socket", cfg.CRI.ContainerdSocket))
	} else {
		fields = append(fields, zap.String("cri", "off"))
	}
	fields = append(fields,
		zap.String("metrics", metricsAddr(cfg.Metrics.Listen)),
		zap.String("pressure_source", src.String()),
		zap.Duration("interval", cfg.Pressure.Interval.Std()),
		zap.Float64("smoothing", cfg.Pressure.Smoothing),
		zap.Int("cores", gate.Cores()),
		zap.Float64s("targets", []float64{cfg.Admission.Targets.CPU, cfg.Admission.Targets.IO, cfg.Admission.Targets.Memory}),
		zap.Int("max_queue", cfg.Admission.MaxQueue),
		zap.String("on_deadline", cfg.Admission.OnDeadline),
		zap.Int("inflight_fixed", cfg.Admission.Limits.InFlight),
		zap.Float64("rate_fixed", cfg.Admission.Limits.Rate),
	)
	log.Info("startgated starting", fields...)
	if pf != nil {
		log.Info("prefetch on", pf.fields...)
	}
	if cfg.Kubernetes.Enabled && proxy == nil {
		log.Warn("kubernetes.enabled without the CRI proxy: the pod watch has no starts to act on and is not run")
	}
	if act.cri != nil && !cfg.CRI.Enabled {
		log.Info("systemd passed a socket named cri: serving the CRI proxy although cri.enabled is false")
	}

	var stopping sync.WaitGroup
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	var wg sync.WaitGroup
	// failed carries the first unexpected end of a server.
	failed := make(chan error, 4)
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = gate.Run(runCtx)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(api); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			failed <- fmt.Errorf("daemon: api server: %w", err)
		}
	}()
	if proxy != nil {
		// Before the first CRI call is served: the starts still warming
		// up from before a restart hold their slots again, so kubelet's
		// retries queue behind them instead of all being admitted.
		restoreProxy(ctx, proxy, log)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if hlth.cri != nil {
				hlth.cri.serving.Store(true)
				defer hlth.cri.serving.Store(false)
			}
			if err := proxy.Serve(criLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				failed <- fmt.Errorf("daemon: cri proxy: %w", err)
			}
		}()
	}
	// The endpoint outlives ctx: it serves /metrics and /readyz
	// ("shutting down") until the servers have stopped.
	epCtx, stopEndpoint := context.WithCancel(context.WithoutCancel(ctx))
	defer stopEndpoint()
	if ep != nil {
		wg.Go(func() { ep.run(epCtx) })
	}
	if pf != nil {
		pf.start(runCtx, &wg)
	}
	if pods != nil {
		startPods(runCtx, &wg, pods, proxy)
	}
	n := notifier{log: log, cri: proxy != nil, alive: func(now time.Time) error { return controllerTicking(gate, now) }}
	n.note = func() string {
		var notes []string
		if ep != nil {
			notes = append(notes, ep.statusNote())
		}
		if pf != nil && pf.notify != nil {
			notes = append(notes, pf.notify.note("prefetch notifications"))
		}
		return strings.Join(slices.DeleteFunc(notes, func(s string) bool { return s == "" }), ", ")
	}
	n.send("READY=1")
	wg.Add(1)
	go func() {
		defer wg.Done()
		n.run(runCtx, gate)
	}()
	if reload != nil {
		r := &reloader{Reload: *reload, log: log.Named("reload"), n: n, gate: gate, proxy: proxy, cur: cfg}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.run(runCtx)
		}()
	}
	log.Info("startgated ready")

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case runErr = <-failed:
		log.Error("shutting down after a server failed", zap.Error(runErr))
	}
	n.send("STOPPING=1")
	hlth.stopping.Store(true)
	// The order matters. The gate closes first: queued Acquire streams
	// fail with Unavailable, leases end, and CRI starts waiting for a
	// slot get ErrClosed and pass straight through to containerd (fail
	// open), as does any start that arrives from now on. Only then do the
	// servers stop gracefully: the API's waits only for calls already on
	// their way out, the proxy's for CRI calls that containerd is now
	// answering, so kubelet gets containerd's result rather than a cut
	// connection. Stopping the proxy before closing the gate would
	// instead wait on starts queued for slots that never come, until the
	// shutdown timeout cut them.
	gate.Close()
	// Prefetch stops beside the servers: first the notification
	// listener (no new triggers; requests in flight get their answer),
	// then the manager, whose fetches are cancelled and whose leases
	// containerd's GC drops once expired. Neither holds a start.
	if pf != nil {
		stopping.Go(pf.stop)
	}
	// ctx is done; the shutdown gets a fresh deadline of its own, shared
	// by both servers, which stop side by side so that a long image pull
	// in the proxy does not eat the API's share.
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.Daemon.ShutdownTimeout.Std())
	defer cancel()
	if proxy != nil {
		stopping.Go(func() { proxy.Stop(stopCtx) })
	}
	srv.Stop(stopCtx)
	stopping.Wait()
	stopEndpoint()
	stopRun()
	wg.Wait()
	for _, l := range []*apiListener{api, criLis} {
		if l == nil || l.activated {
			continue
		}
		// The listener unlinks on close; this catches a file left when
		// the server failed before closing it.
		if err := os.Remove(l.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			log.Warn("socket not removed", zap.String("socket", l.path), zap.Error(err))
		}
	}
	log.Info("startgated stopped")
	return runErr
}

func pressureSource(c config.Pressure) (pressure.Source, error) {
	switch c.Source {
	case "cgroup":
		return pressure.NewCgroupSource(c.CgroupDir), nil
	case "proc", "":
		s, err := pressure.NewProcSource(c.ProcRoot)
		if err != nil {
			return nil, fmt.Errorf("daemon: %w", err)
		}
		return s, nil
	default:
		return nil, fmt.Errorf("daemon: unknown pressure source %q", c.Source)
	}
}

func metricsAddr(listen string) string {
	if listen == "" {
		return "off"
	}
	return listen
}

// restoreTimeout bounds Proxy.Restore at start: containerd down or slow
// must not keep kubelet's calls waiting on the socket.
const restoreTimeout = 10 * time.Second

// restoreProxy takes back the slots of the starts that were warming up
// before this daemon started (criproxy.Proxy.Restore); on failure it says
// so and serves as if none were (fail open).
func restoreProxy(ctx context.Context, proxy *criproxy.Proxy, log *zap.Logger) {
	rctx, cancel := context.WithTimeout(ctx, restoreTimeout)
	defer cancel()
	start := time.Now()
	r, err := proxy.Restore(rctx)
	if err != nil {
		log.Warn("could not restore the slots of starts warming up before this start: admitting as if none were",
			zap.Error(err), zap.Int("pods_restored", r.Pods), zap.Duration("took", time.Since(start)))
		return
	}
	log.Info("restored the slots of starts warming up before this start", zap.Int("pods", r.Pods), zap.Int("containers", r.Containers),
		zap.Duration("took", time.Since(start)))
}
