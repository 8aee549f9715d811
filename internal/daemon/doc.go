// Package daemon is startgated: the command line, and the wiring of the
// config, the pressure sampler, the admission gate, the gRPC server, the
// metrics endpoint and systemd in one place.
//
// Run owns every goroutine it starts (the gate's controller, the API
// server, the metrics server, the systemd notifier) and returns only after
// all of them have ended. Its life:
//
//  1. Build the pressure source and sampler, the gate and, when
//     metrics.listen is set, a Prometheus registry fed by the gate.
//  2. Take the API listener: the first unix socket systemd passed in
//     (socket activation), else create daemon.socket, removing a stale
//     file only when nothing answers on it, and set its mode and group.
//  3. Serve, then tell systemd READY=1. While running, STATUS= carries the
//     figures an operator wants in `systemctl status`, and the watchdog is
//     pinged at half WATCHDOG_USEC, but only while the gate's controller
//     is ticking: a wedged gate must get the daemon restarted.
//  4. When ctx ends (SIGTERM, SIGINT): STOPPING=1, close the gate (waiters
//     fail with Unavailable, leases end), stop the server gracefully
//     within daemon.shutdown_timeout, stop the controller, and remove the
//     socket if this process created it.
//
// PSI that cannot be read is not fatal: the sampler is passed to the gate
// anyway, and the gate logs once and keeps static limits.
package daemon
