// Package daemon is startgated: the command line, and the wiring of the
// config, the pressure sampler, the admission gate, the gRPC server, the
// CRI proxy, image prefetch, the metrics endpoint and systemd in one
// place.
//
// Run owns every goroutine it starts (the gate's controller, the API
// server, the CRI proxy, the prefetch manager and its notification
// listener, the metrics server, the systemd notifier) and
// returns only after all of them have ended. Its life:
//
//  1. Read what the start needs besides the file (readStartInputs: the
//     pressure source, prefetch's token and docker config; `config
//     check` reads them the same way, so it refuses what a start would),
//     then build the sampler, the gate and, unless metrics.listen is ""
//     (it is 127.0.0.1:10366 by default), a Prometheus registry fed by
//     the gate (and by the proxy).
//  2. Take the listeners. systemd may pass sockets in (socket
//     activation): the first unix socket named "cri"
//     (FileDescriptorName=cri) is the CRI proxy's, the first of any other
//     name the API's. A socket not passed in is created at daemon.socket
//     (daemon.socket_mode and socket_group) or cri.socket (0600, the
//     daemon's owner and group), removing a stale file only when nothing
//     answers on it.
//  3. With cri.enabled (or --cri-socket, --containerd-socket, or a
//     passed "cri" socket), build the CRI proxy in front of
//     cri.containerd_socket. It does not dial: startgated comes up and
//     serves the CRI socket before containerd does, callers get
//     Unavailable until containerd answers, and the proxy reconnects by
//     itself (backoff capped at a second).
//  4. With prefetch.enabled, build a containerd client on
//     prefetch.containerd_socket ("" is cri.containerd_socket), namespace
//     k8s.io, the prefetch Fetcher and Manager, and with
//     prefetch.notifications.listen the registry's webhook listener,
//     whose pushes call Manager.Trigger. The client does not dial at
//     start (its dialer fails at once when the socket is missing, instead
//     of containerd's 10 s wait for the file): startgated comes up with
//     containerd down, and the Manager's cycles (interval, backoff) try
//     again. The token file was read in step 1; a bad one (missing,
//     empty, readable by others) fails the start. The webhook listener
//     takes its port in the background, as the metrics endpoint does
//     (retrylisten.go): a taken port is retried, never fatal. One
//     "prefetch on" line logs the settings.
//  5. Serve, then tell systemd READY=1. The metrics and health endpoint
//     (/metrics, /healthz, /livez, /readyz; health.go) listens beside
//     them in the background: a port it cannot take is logged, counted
//     and retried with a backoff (retrylisten.go) and never fails or delays
//     the CRI socket or READY=1. While running, STATUS= carries the
//     figures an operator wants in `systemctl status` (", cri: on" when
//     the proxy serves, the endpoint retrying when it is), and the
//     watchdog is pinged at half WATCHDOG_USEC, but only while the gate's
//     controller is ticking (controllerTicking, which /healthz answers
//     too): a wedged gate must get the daemon restarted.
//  6. When ctx ends (SIGTERM, SIGINT): STOPPING=1 (and /readyz fails
//     "shutdown", while /metrics serves until the servers have stopped); close the gate, so
//     waiters fail with Unavailable, leases end, and CRI starts waiting
//     for a slot pass through to containerd (fail open); then, side by
//     side: the API server and the proxy stop gracefully within
//     daemon.shutdown_timeout, and prefetch stops (the notification
//     listener first, answering requests in flight within 5 s, so that no
//     trigger arrives after the Manager; then the Manager, whose running
//     fetches are cancelled and delete their leases); stop the
//     controller; close the Fetcher and the containerd client once every
//     goroutine has ended; remove the sockets this process created. The gate closes first because the proxy's
//     graceful stop waits for its calls, and a start queued behind an
//     open gate would wait for a slot until the timeout cut it.
//
// PSI that cannot be read is not fatal: the sampler is passed to the gate
// anyway, and the gate logs once and keeps static limits.
package daemon
