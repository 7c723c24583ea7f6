package node

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"connectrpc.com/connect"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
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
	if err == nil {
		r.Snapshot, r.after, err = latestSnapshot(snaps)
	}
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("snapshots in %s: %w", dir, err)
	}
	return r, nil
}

// latestSnapshot is the latest snapshot's state and index; nil and 0 when
// there is none.
func latestSnapshot(snaps raft.SnapshotStore) ([]byte, uint64, error) {
	list, err := snaps.List()
	if err != nil || len(list) == 0 {
		return nil, 0, err
	}
	meta, rc, err := snaps.Open(list[0].ID)
	if err != nil {
		return nil, 0, fmt.Errorf("snapshot %s: %w", list[0].ID, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return nil, 0, fmt.Errorf("snapshot %s: %w", meta.ID, err)
	}
	return data, meta.Index, nil
}

// Entries hands each every command entry after the snapshot, in order.
func (r *LogReader) Entries(each func(index uint64, data []byte) error) error {
	return commandEntries(r.st.log, r.after, each)
}

// commandEntries hands each the command entries of log after index after,
// up to its last entry as of the call.
func commandEntries(log raft.LogStore, after uint64, each func(index uint64, data []byte) error) error {
	first, err := log.FirstIndex()
	if err != nil {
		return err
	}
	last, err := log.LastIndex()
	if err != nil {
		return err
	}
	var l raft.Log
	for i := max(first, after+1); i <= last && i > 0; i++ {
		if err := log.GetLog(i, &l); err != nil {
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

// exportChunk bounds the bytes of one ExportLog message.
const exportChunk = 1 << 20

func (s *adminService) ExportLog(ctx context.Context, req *connect.Request[sluicev1.ExportLogRequest], stream *connect.ServerStream[sluicev1.ExportLogResponse]) error {
	n := s.n
	if err := n.admin(req.Header()); err != nil {
		return err
	}
	snap, after, err := latestSnapshot(n.snaps)
	if err != nil {
		return connect.NewError(connect.CodeInternal, err)
	}
	for len(snap) > 0 {
		k := min(len(snap), exportChunk)
		if err := stream.Send(&sluicev1.ExportLogResponse{Snapshot: snap[:k]}); err != nil {
			return err
		}
		snap = snap[k:]
	}
	msg, size := &sluicev1.ExportLogResponse{}, 0
	flush := func() error {
		if len(msg.Entries) == 0 {
			return nil
		}
		err := stream.Send(msg)
		msg, size = &sluicev1.ExportLogResponse{}, 0
		return err
	}
	err = commandEntries(n.store.log, after, func(index uint64, data []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		msg.Entries = append(msg.Entries, &sluicev1.LogEntry{Index: index, Data: slices.Clone(data)})
		if size += len(data) + 16; size >= exportChunk {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	return err
}
