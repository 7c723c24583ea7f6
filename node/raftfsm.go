package node

import (
	"io"

	"github.com/hashicorp/raft"

	"github.com/sluicehq/sluice/fsm"
)

// raftFSM adapts fsm.FSM to raft.FSM.
type raftFSM struct{ f *fsm.FSM }

func (a raftFSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	return a.f.Apply(l.Index, l.Data)
}

func (a raftFSM) Snapshot() (raft.FSMSnapshot, error) {
	return snapshot(a.f.Snapshot()), nil
}

func (a raftFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	return a.f.Restore(data)
}

// snapshot is an encoded state, written out by raft off the apply path.
type snapshot []byte

func (s snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s snapshot) Release() {}
