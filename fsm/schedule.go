package fsm

import (
	"fmt"
	"slices"

	"github.com/sluicehq/sluice/policy"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/scheduler"
)

// Assignment is one Assign that PlaceQueued proposes: the leader commits
// it (admission.Dispatcher), and the simulator applies it, the same way.
// Its attempt is the job's next, which fences it against a racing
// assignment of the same job.
type Assignment struct {
	JobID    uint64
	Executor string
	Attempt  int32
	GPUs     int32 // how many it needs
}

// PlaceQueued appends to dst the assignments that place ready queued jobs
// on the free slots at time now, in dispatch order, allocating nothing
// once dst has room. It only reads; its working memory is p, the caller's.
func (r JobReads) PlaceQueued(pl *scheduler.Placer, dst []Assignment, now int64, slots []scheduler.Slot) []Assignment {
	f := r.f
	for _, p := range pl.PlaceAll(f.queue, now, slots) {
		j, ok := f.jobs[p.JobID]
		if !ok || j.State != sluicev1.JobState_JOB_STATE_QUEUED {
			continue
		}
		dst = append(dst, Assignment{JobID: p.JobID, Executor: p.Executor, Attempt: j.Attempt + 1, GPUs: j.Spec.GetGpus()})
	}
	return dst
}

// CheckBackpressure reports, as a *scheduler.BusyError, the first queue
// bound that a new job of the tenant and spec would exceed, given the
// caller's prediction of its wait (0: unknown). It only reads: the
// leader's pre-check, before the state machine checks the counts again.
func (r JobReads) CheckBackpressure(tenant string, spec *sluicev1.JobSpec, predictedWait int64) error {
	f := r.f
	t, ok := f.pix.tenants[tenant]
	if !ok {
		return nil
	}
	return f.queue.CheckAdmission(schedJob(&raftv1.JobRecord{Tenant: tenant, Tier: t.Tier, Spec: spec}, f.pix.models), predictedWait)
}

// DeadLetters lists dead-lettered jobs matching every non-empty filter,
// ascending by id.
func (r JobReads) DeadLetters(tenant, model string, ids []uint64) []uint64 {
	f := r.f
	var out []uint64
	consider := func(j *raftv1.JobRecord) {
		if j == nil || j.State != sluicev1.JobState_JOB_STATE_DEAD_LETTERED {
			return
		}
		if (tenant != "" && j.Tenant != tenant) || (model != "" && j.Spec.GetModel() != model) {
			return
		}
		out = append(out, j.Id)
	}
	if len(ids) > 0 {
		for _, id := range ids {
			consider(f.jobs[id])
		}
	} else {
		for _, js := range f.byTenant {
			for _, id := range *js {
				consider(f.jobs[id])
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// redrive puts dead-lettered jobs back in the queue. A job keeps its
// attempt count (attempt numbers only grow, so late reports stay fenced)
// and gets as many attempts again as it had; its rate-limit charge was
// settled when it died and is not taken again: a redrive is the operator's
// decision, not the tenant's request.
func (f *FSM) redrive(c *raftv1.Redrive) Result {
	reason := "redriven"
	if c.Reason != "" {
		reason = "redriven: " + c.Reason
	}
	n := 0
	for _, id := range c.JobIds {
		j, ok := f.jobs[id]
		if !ok || j.State != sluicev1.JobState_JOB_STATE_DEAD_LETTERED {
			continue
		}
		j = f.edit(j)
		per := j.Spec.GetMaxAttempts()
		if per <= 0 {
			per = f.policy.GetDefaults().GetMaxAttempts()
		}
		if per <= 0 {
			per = policy.DefaultMaxAttempts
		}
		j.MaxAttempts = j.Attempt + per
		j.FinishedNs = 0
		f.enqueue(j, f.now, reason)
		n++
	}
	if n == 0 && len(c.JobIds) > 0 {
		return Result{Err: fmt.Errorf("%w: none of the %d jobs is dead-lettered any more", ErrNotFound, len(c.JobIds))}
	}
	return Result{}
}

// QueuePage returns up to limit queued jobs in dispatch order after the
// page token (empty: from the start), and the next token ("" at the end).
func (r JobReads) QueuePage(token string, limit int) ([]JobView, string, int, error) {
	f := r.f
	var cur scheduler.Cursor
	if err := cur.UnmarshalText([]byte(token)); err != nil {
		return nil, "", 0, fmt.Errorf("page_token: %w", err)
	}
	page, next, more := f.queue.Page(cur, limit)
	out := make([]JobView, 0, len(page))
	for _, sj := range page {
		j, ok := f.jobs[sj.ID]
		if !ok {
			continue
		}
		v := JobView{Job: j}
		v.Position, _ = f.queue.Position(j.Id)
		out = append(out, v)
	}
	nextTok := ""
	if more {
		b, err := next.MarshalText()
		if err != nil {
			return nil, "", 0, err
		}
		nextTok = string(b)
	}
	return out, nextTok, f.queue.Len(), nil
}
