// Package fsm is Sluice's replicated state machine: the typed commands of the
// raft log, a deterministic Apply, and snapshot/restore. Every replica that
// applies the same entries holds the same jobs, queue and policy, byte for
// byte: Apply never reads the clock (each entry carries the leader's time and
// the machine's clock only moves forward), job ids come from log indexes
// (max(last id + 1, index): the index itself unless an earlier Submit of the
// same batch entry took it), and a snapshot restored elsewhere encodes to
// the same bytes.
package fsm
