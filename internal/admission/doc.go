// Package admission is startgate's gate: it decides when a container start
// may proceed so that a burst of starts runs at the concurrency the node can
// take, not all at once.
//
// # Goals
//
//   - Starts under a burst reach ready sooner than when all run at once,
//     with no longer a makespan.
//   - The concurrency follows live pressure, because the right limit
//     depends on the work (see docs/testbed.md).
//   - The gate is never why a start fails: critical starts bypass it, a
//     waiter whose deadline comes near is admitted (or, by policy, refused
//     with a clear error) before it would time out, at least one start is
//     always in flight, and no slot can leak.
//
// # Roles
//
// Three roles, as in CockroachDB's admission control, each small:
//
//   - The controller (controller.go, Gate.tick): every Interval it takes a
//     pressure sample (PSI stall fractions, package pressure) and resizes
//     the limits: multiplicative decrease when any resource is above its
//     target, additive increase while all are below and a limit actually
//     held a waiter back, within per-core floor and ceiling. Without PSI it
//     keeps static limits and says so once in the log.
//   - The granter (Gate.admissibleLocked): a token bucket
//     (golang.org/x/time/rate, driven with explicit times) for the rate of
//     starts, and an in-flight limit on leases held.
//   - The queue (queue.go): classes in priority order with aging (a waiter
//     competes as if it had arrived class × Policy.Aging later than it
//     did, so a long wait makes up for a low class and none starves),
//     round robin across tenants within a class, FIFO within a tenant. It is bounded by Policy.MaxQueue.
//
// A grant is a Lease, ended by its holder (Release), by its hold cap
// (Policy.MaxHold or Request.Hold) or by Close; the server ties a lease to
// its gRPC stream so that a holder that goes away releases it.
//
// # Concurrency
//
// One mutex, Gate.mu, guards all state; the critical sections are short and
// allocation-light, so the uncontended acquire and release path stays in
// the low microseconds (BenchmarkAcquireRelease). The clock's and the rate
// limiter's own locks are taken under it, never the other way round.
// Callers block on a per-waiter channel outside the lock. Time comes from
// the injected clock (k8s.io/utils/clock), so tests step a FakeClock
// instead of sleeping (testdata/ holds the scenario scripts). Besides the
// caller's own Run, the package starts one goroutine, while timers have
// fired: it runs their callbacks in the order they fired (timers.go), off
// the goroutine that fired them, which for FakeClock holds the clock's
// lock.
//
// # Use
//
//	g, err := admission.New(admission.Config{Policy: admission.DefaultPolicy(), Pressure: sampler, Logger: log})
//	go g.Run(ctx)
//	lease, err := g.Acquire(ctx, admission.Request{Class: admission.Normal, Tenant: "default", Description: "start web-0"})
//	if err != nil { ... }
//	defer lease.Release()
package admission
