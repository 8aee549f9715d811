// Package healthz serves health checks in the form kubelet and the
// Kubernetes API server use, so that the probes, scripts and habits
// written for them work on startgated unchanged.
//
// Install puts a root handler on a path (/healthz, /livez, /readyz) and
// one handler per check under it (/readyz/containerd). The root runs
// every check on each request:
//
//	GET /readyz            200 "ok", or 500 with every check's line
//	GET /readyz?verbose    200 and every check's line, then "readyz check passed"
//	GET /readyz?exclude=X  the same without check X (repeatable)
//	GET /readyz/X          200 "ok", or 500 "internal server error: <reason>"
//
// A check's line is "[+]name ok" or "[-]name failed: reason". A failing
// check always makes the answer verbose, as the API server's does.
//
// Two choices differ from k8s.io/apiserver/pkg/server/healthz, and are
// why this is not that package:
//   - The reason of a failed check is in the body. The API server withholds
//     it because its endpoints answer anyone who can reach them;
//     startgated's answer on the node's loopback by default, and the
//     reason ("containerd: connection refused") is what the operator
//     reading it needs.
//   - A check may pass with a warning (Warning): the check is healthy,
//     and the verbose body says what the operator should know in a
//     "warn: name: ..." line, the form the API server uses for its own
//     notes. startgated uses it for a gate an operator bypassed, which
//     is healthy by design and must not be hidden.
//
// The package itself would also cost 377 packages (component-base's
// global metrics registry, kube-openapi, OpenTelemetry) and 15 MB of
// binary for a hundred lines of format.
package healthz
