// Package node is one Sluice server: the raft peer (hashicorp/raft with its
// log in hashicorp/raft-wal, or raft-boltdb/v2 with --raft-log-store=bolt,
// its term and vote in raft-boltdb/v2, and file snapshots, all under the
// data dir), the Connect
// services on one HTTP port (Connect, gRPC and gRPC-Web over HTTP/1.1 and
// h2c, or HTTP/2 and HTTP/1.1 over TLS, with reflection and health; mutual TLS
// between servers under a peer CA), and the leader's loops: dispatching
// queued jobs to executor slots, ticking timers, and requeueing attempts
// whose executor was lost. Nothing a client was told was admitted is lost
// while a majority of the raft group keeps its disks.
package node
