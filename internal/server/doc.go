// Package server serves the startgate gRPC API (proto/startgate/v1) on a
// unix socket, on top of one *admission.Gate.
//
// A start slot is an open Acquire stream rather than a lease ID with a
// timeout: when a holder crashes, its connection closes, gRPC cancels the
// stream and the handler releases the slot at once. The stream's gRPC
// deadline is the caller's deadline, handed to the gate as the context of
// Acquire, so deadline-aware admission needs no extra field.
//
// A client holding many slots (a CI runner, a batch launcher) uses
// AcquireMany instead: one stream carries many tagged starts, each a
// gate.AcquireFunc waiter with no goroutine behind it, so 10,000 waiters
// cost queue entries rather than 10,000 blocked handlers. Ending that
// stream withdraws and releases everything it had, as ending an Acquire
// stream does for its one slot.
//
// Cross-cutting steps live in one interceptor pair (interceptors.go):
// authorize, call, map errors to codes, log at debug. Handlers return
// admission and context errors unchanged; toStatus is the only place they
// become gRPC codes.
//
// Authorization trusts the kernel, not the client: peerCredentials, a
// TransportCredentials with no wire handshake, reads SO_PEERCRED from each
// accepted unix connection. Reads are open to anyone who can connect (the
// socket's file mode decides that); calls that change the gate need uid 0
// or membership of the admin group, primary or supplementary (from
// /proc/PID/status, since SO_PEERCRED carries no supplementary groups).
// authorize is a pure function so the denial path is testable as root.
package server
