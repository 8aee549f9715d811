// Package clock injects time into startgate so that admission, the
// pressure controller and lease expiry can be tested by advancing a manual
// clock instead of sleeping.
//
// Real wraps the time package. Manual is for tests: Advance moves time
// forward and fires due AfterFunc callbacks and tickers in time order, on the
// caller's goroutine and outside the clock's own lock, so a callback may call
// back into the clock. (k8s.io/utils/clock/testing.FakeClock runs callbacks
// while holding its lock and in registration order, which deadlocks a
// callback that asks for Now; that is why this package exists.)
package clock
