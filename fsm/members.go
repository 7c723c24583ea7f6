package fsm

import (
	"slices"

	"google.golang.org/protobuf/proto"

	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
)

// memberBook is the raft servers' addresses by raft id.
type memberBook map[string]*raftv1.SetMember

// set records or forgets a raft server's addresses.
func (b memberBook) set(c *raftv1.SetMember) Result {
	if c.Remove {
		delete(b, c.Id)
		return Result{}
	}
	if c.Id == "" {
		return Result{Err: ErrBadCommand}
	}
	b[c.Id] = c
	return Result{}
}

// Member returns the addresses recorded for a raft server id.
func (r ConfigReads) Member(id string) (*raftv1.SetMember, bool) {
	f := r.f
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
func (r ConfigReads) Members() []*raftv1.SetMember {
	f := r.f
	out := make([]*raftv1.SetMember, 0, len(f.members))
	for _, id := range sortedKeys(f.members) {
		out = append(out, proto.Clone(f.members[id]).(*raftv1.SetMember))
	}
	return out
}
