package node

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// LogReader reads a stopped node's data dir for a replay (sluice sim
// replay): its latest snapshot and the raft log's command entries after it.
type LogReader struct {
	st *stores
	// Snapshot is the latest snapshot's state (fsm.Restore's), nil for none.
	Snapshot []byte
	after    uint64
}

// OpenLog opens dir's stores as the node would, so a node running on dir
// makes it fail ("locked by another process").
func OpenLog(dir string) (*LogReader, error) {
	// openStores would make a new, empty log in a directory that has none.
	if _, err := os.Stat(filepath.Join(dir, "raft.db")); err != nil {
		return nil, fmt.Errorf("not a Sluice data dir (no raft.db): %w", err)
	}
	st, err := openStores(osDisk{}, dir, "", 0, hclog.NewNullLogger())
	if err != nil {
		return nil, err
	}
	r := &LogReader{st: st}
	snaps, err := raft.NewFileSnapshotStore(dir, 2, io.Discard)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("snapshots in %s: %w", filepath.Join(dir, "snapshots"), err)
	}
	list, err := snaps.List()
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("snapshots in %s: %w", dir, err)
	}
	if len(list) > 0 {
		meta, rc, err := snaps.Open(list[0].ID)
		if err != nil {
			st.Close()
			return nil, fmt.Errorf("snapshot %s: %w", list[0].ID, err)
		}
		r.Snapshot, err = io.ReadAll(rc)
		rc.Close()
		if err != nil {
			st.Close()
			return nil, fmt.Errorf("snapshot %s: %w", meta.ID, err)
		}
		r.after = meta.Index
	}
	return r, nil
}

// Entries hands each every command entry after the snapshot, in order.
func (r *LogReader) Entries(each func(index uint64, data []byte) error) error {
	first, err := r.st.log.FirstIndex()
	if err != nil {
		return err
	}
	last, err := r.st.log.LastIndex()
	if err != nil {
		return err
	}
	var l raft.Log
	for i := max(first, r.after+1); i <= last && i > 0; i++ {
		if err := r.st.log.GetLog(i, &l); err != nil {
			return fmt.Errorf("log entry %d: %w", i, err)
		}
		if l.Type != raft.LogCommand {
			continue
		}
		if err := each(i, l.Data); err != nil {
			return err
		}
	}
	return nil
}

// Close closes the stores.
func (r *LogReader) Close() error { return r.st.Close() }
