package node

import (
	"io"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/types"
)

// disk is where a node keeps its raft state: raft.db, the WAL's segment files and its
// wal-meta.db, the snapshots. osDisk, the operating
// system's file system, is the only one outside tests; the power-loss test
// (powerloss_test.go) puts in its place one that forgets, when it cuts the power, every
// write that was not synced.
type disk interface {
	// openStable opens raft.db's store: raft's term and vote, and the log with the bolt log
	// store.
	openStable(raftboltdb.Options) (boltStore, error)
	// walFiles is the file system the WAL keeps its segment files in, walMeta the store of
	// its metadata (wal-meta.db).
	walFiles() types.VFS
	walMeta() types.MetaStore
	// snapshots wraps the snapshot store.
	snapshots(raft.SnapshotStore) raft.SnapshotStore
}

// boltStore is raft.db's store as a node uses it.
type boltStore interface {
	raft.StableStore
	raft.LogStore
	io.Closer
}

// osDisk is the operating system's file system, with raft-wal's own defaults.
type osDisk struct{}

func (osDisk) openStable(opts raftboltdb.Options) (boltStore, error) {
	s, err := raftboltdb.New(opts)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (osDisk) walFiles() types.VFS                               { return fs.New() }
func (osDisk) walMeta() types.MetaStore                          { return &metadb.BoltMetaDB{} }
func (osDisk) snapshots(s raft.SnapshotStore) raft.SnapshotStore { return s }
