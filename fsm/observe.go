package fsm

import (
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/scheduler"
)

// Observer hears of every job transition as it is applied, for metrics. It
// is called during Apply (under the caller's write lock), after the job record has its
// new state and transition: it must be quick, must not call back into the
// FSM, and must not change the record. It sees the log index of the entry
// that made the change, so that it can tell a replay at start from new work.
type Observer interface {
	Transition(index uint64, j *raftv1.JobRecord, from sluicev1.JobState)
}

// SetObserver installs o (nil: none). Install it before the log is applied.
func (f *FSM) SetObserver(o Observer) {
	f.obs = o
}

// EachQueued calls fn for every queued job, in queue order, with what the
// queue metrics count by: its tier, tenant, model and when it was submitted.
// fn runs during the call (under the caller's read lock).
func (r JobReads) EachQueued(fn func(tier, tenant, model string, createdNs int64)) {
	f := r.f
	f.queue.Ascend(func(q scheduler.Job) bool {
		if j, ok := f.jobs[q.ID]; ok {
			fn(j.Tier, j.Tenant, j.Spec.GetModel(), j.CreatedNs)
		}
		return true
	})
}
