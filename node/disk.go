package node

import (
	"io"
	"os"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/types"
)

// disk is where a node keeps its raft state: raft.db, the WAL's segment files and its
// wal-meta.db, the snapshots, and the data dir's entries for them. osDisk, the operating
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
	// syncDir makes the entries of dir (the files made, renamed or removed in it) durable.
	syncDir(dir string) error
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
func (osDisk) syncDir(dir string) error                          { return syncDir(dir) }

// syncDir fsyncs a directory: a file just made there survives a power cut only once its
// directory entry does, whatever was synced in the file itself.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
