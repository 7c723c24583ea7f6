package fsm

import (
	"slices"

	"google.golang.org/protobuf/proto"

	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
)

// setMember records or forgets a raft server's addresses.
func (f *FSM) setMember(c *raftv1.SetMember) Result {
	if c.Remove {
		delete(f.members, c.Id)
		return Result{}
	}
	if c.Id == "" {
		return Result{Err: ErrBadCommand}
	}
	f.members[c.Id] = c
	return Result{}
}

// Member returns the addresses recorded for a raft server id.
func (f *FSM) Member(id string) (*raftv1.SetMember, bool) {
	m, ok := f.members[id]
	if !ok {
		return nil, false
	}
	return proto.Clone(m).(*raftv1.SetMember), true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Members returns every recorded raft server, sorted by id.
func (f *FSM) Members() []*raftv1.SetMember {
	out := make([]*raftv1.SetMember, 0, len(f.members))
	for _, id := range sortedKeys(f.members) {
		out = append(out, proto.Clone(f.members[id]).(*raftv1.SetMember))
	}
	return out
}
