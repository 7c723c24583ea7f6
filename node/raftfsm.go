package node

import (
	"io"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/sluicehq/sluice/fsm"
	"github.com/sluicehq/sluice/metrics"
)

// raftFSM adapts the state machine to raft.FSM: it applies and restores
// under the state's write lock.
type raftFSM struct {
	f       *state
	snapAt  *atomic.Uint64  // f.CommandsApplied() at the last snapshot (nil: not tracked)
	metrics *metrics.Server // times snapshots (nil: off)
	changes *changes        // told of every change (nil: nobody)
}

func (a raftFSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	defer a.changes.notify()
	return a.f.Apply(l.Index, l.Data)
}

// ApplyBatch makes raftFSM a raft.BatchingFSM: raft hands over up to
// MaxAppendEntries committed entries at once, applied under one lock.
func (a raftFSM) ApplyBatch(logs []*raft.Log) []any {
	entries := make([]fsm.Entry, 0, len(logs))
	for _, l := range logs {
		if l.Type == raft.LogCommand {
			entries = append(entries, fsm.Entry{Index: l.Index, Data: l.Data})
		}
	}
	results := a.f.ApplyBatch(entries)
	a.changes.notify() // once for the batch
	out := make([]any, len(logs))
	j := 0
	for i, l := range logs {
		if l.Type == raft.LogCommand {
			out[i] = results[j]
			j++
		}
	}
	return out
}

var _ raft.BatchingFSM = raftFSM{}

func (a raftFSM) Snapshot() (raft.FSMSnapshot, error) {
	if a.snapAt != nil {
		// raft calls this on the goroutine that applies, so nothing is
		// applied between the count and the capture.
		a.snapAt.Store(a.f.CommandsApplied())
	}
	return snapshot{a.f.Capture(), a.metrics}, nil
}

func (a raftFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	defer a.changes.notify()
	return a.f.Restore(data)
}

// snapshot is the state captured on the apply goroutine, encoded and
// written out by raft on its snapshot goroutine: applies go on meanwhile
// (at 100,000 jobs the capture takes 6–8 ms; the encoding, which used to
// stop them, ~160–190). The jobs' encoding goes to the snapshot file in
// chunks of 64 KiB (fsm.Capture.WriteTo), never whole in memory.
type snapshot struct {
	c       *fsm.Capture
	metrics *metrics.Server
}

func (s snapshot) Persist(sink raft.SnapshotSink) error {
	defer func(began time.Time) { s.metrics.Snapshot(time.Since(began)) }(time.Now())
	if _, err := s.c.WriteTo(sink); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s snapshot) Release() {}
