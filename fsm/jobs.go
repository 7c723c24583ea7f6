package fsm

import (
	"sort"

	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

type idemKey struct{ tenant, key string }

// jobTable is the state machine's job records and their indexes: by id, by
// tenant (ascending ids), by idempotency key, counts by state, the running
// set, and the blocks the simulator's records come from.
type jobTable struct {
	jobs map[uint64]*raftv1.JobRecord
	// Blocks of the records every job gets, in the simulator's exclusive
	// state (blocks.go).
	records         blocks[raftv1.JobRecord]
	transitions     blocks[raftv1.TransitionRecord]
	transitionPairs blocks[[2]*raftv1.TransitionRecord]
	charges         blocks[raftv1.Charge]
	settled         blocks[sluicev1.Admission]
	byTenant        map[string]*[]uint64 // ascending ids (a pointer: appending assigns nothing to the map)
	idem            map[idemKey]uint64
	counts          [8]int64 // by sluicev1.JobState
	running         map[uint64]struct{}
	exclusive       bool // SetExclusive: edits change records in place
}

// tenantJobs adds a job, newer than the tenant's others, to its list.
func (t *jobTable) tenantJobs(tenant string, id uint64) {
	p := t.byTenant[tenant]
	if p == nil {
		p = new([]uint64)
		t.byTenant[tenant] = p
	}
	*p = append(*p, id)
}

// idsOf is the tenant's jobs, oldest first; the state machine's slice.
func (t *jobTable) idsOf(tenant string) []uint64 {
	if p := t.byTenant[tenant]; p != nil {
		return *p
	}
	return nil
}

// forget drops a finished job past its retention.
func (t *jobTable) forget(j *raftv1.JobRecord) {
	delete(t.jobs, j.Id)
	t.counts[j.State]--
	if p := t.byTenant[j.Tenant]; p != nil {
		ids := *p
		i := sort.Search(len(ids), func(i int) bool { return ids[i] >= j.Id })
		switch {
		case i == 0 && len(ids) > 0 && ids[0] == j.Id:
			ids = ids[1:] // the oldest, most often: no copy (append drops the front when it grows)
		case i < len(ids) && ids[i] == j.Id:
			ids = append(ids[:i], ids[i+1:]...)
		}
		if len(ids) == 0 {
			delete(t.byTenant, j.Tenant)
		} else {
			*p = ids
		}
	}
	if k := j.Spec.GetIdempotencyKey(); k != "" {
		ik := idemKey{j.Tenant, k}
		if t.idem[ik] == j.Id {
			delete(t.idem, ik)
		}
	}
}

// edit replaces a job's record with a copy and returns the copy, to be
// changed. Records are never changed in place: readers (View, Job, a
// Capture being encoded) share them without copying, outside the lock.
// Every change to an existing record goes through edit.
//
// The copy is shallow: it shares the sub-messages (the spec with its input
// of up to 64 KiB, the output, the error, the transitions), which are
// replaced, never changed; a change to a sub-message copies it first
// (closeCharge). Lists get their own backing arrays, so appending to the
// copy's leaves the original alone.
//
// With SetExclusive, nobody reads a record outside the caller's goroutine
// between two calls, and edit changes it in place.
func (t *jobTable) edit(j *raftv1.JobRecord) *raftv1.JobRecord {
	if t.exclusive {
		return j
	}
	j = copyRecord(j)
	t.jobs[j.Id] = j
	return j
}

// runningAttempt returns the job, to be changed, if the report is for its
// current running attempt.
func (t *jobTable) runningAttempt(id uint64, attempt int32) (*raftv1.JobRecord, error) {
	j, ok := t.jobs[id]
	if !ok {
		return nil, ErrNotFound
	}
	if j.State != sluicev1.JobState_JOB_STATE_RUNNING || j.Attempt != attempt {
		return nil, ErrStale
	}
	return t.edit(j), nil
}
