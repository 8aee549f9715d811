// Package fleetbench is `startgate-bench fleet`: the fleet coordination of
// internal/fleet at a scale no test machine has nodes for. On a real
// kube-apiserver (the testbed's control plane, the CRDs and RBAC of
// deploy/fleet applied as an operator would) it runs N simulated nodes,
// each the project's real fleet.Node with its own API client, watch,
// budget and report, and a fetch that takes a set time instead of moving
// bytes. One announcement is made; it measures the most fetches at once
// against K, the time until every node is done against N×T/K, what a
// node killed mid-fetch costs the others, and each node's cost to the
// API server (requests by verb, watches), counted on each node's client
// and cross-checked with the API server's own request counter.
package fleetbench
