// Package fsm is Sluice's replicated state machine: the typed commands of
// the raft log, a deterministic Apply (the leader's time in each entry, job
// ids from log indexes), and snapshot/restore that encodes to the same bytes
// on every replica. Who waits for a change is woken by the caller that
// applies (node). See docs/architecture.md.
package fsm
