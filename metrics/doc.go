// Package metrics exposes a Sluice server's and an executor's figures to
// Prometheus: the replicated state read at scrape time, the leader's soft
// state, and counters and histograms fed by the state machine's transitions,
// the leader's admissions and the API. Every series but sluice_build_info
// carries scope="replica" (the same on every node: aggregate with max),
// "leader" (only the leader counts or reports it: sum) or "node" (this
// process). Label values are bounded; docs/operations.md lists every metric.
package metrics
