// Package metrics exposes a Sluice server's and an executor's figures to
// Prometheus. Every series but sluice_build_info carries scope="replica"
// (aggregate with max), "leader" (sum) or "node" (this process); label
// values are bounded. docs/operations.md lists every metric.
package metrics
