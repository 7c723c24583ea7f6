// Package node is one Sluice server: the raft peer (raft-wal or
// raft-boltdb/v2 and file snapshots under the data dir), the Connect services
// on one HTTP port, and the leader's loops (dispatch, timers, requeueing lost
// attempts). Nothing a client was told was admitted is lost while a majority
// keeps its disks. See docs/architecture.md.
package node
