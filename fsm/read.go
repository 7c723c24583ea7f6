package fsm

import (
	"cmp"
	"slices"
	"sort"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluicehq/sluice/scheduler"

	"github.com/sluicehq/sluice/limiter"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// Reads are the state machine's read side, grouped by what they read: what
// the API, the leader's loops, the metrics and the simulator look at. They
// change nothing (PlaceQueued's working memory is the caller's Placer); the
// caller keeps them from overlapping an Apply (node/state.go: a read lock).
type Reads struct {
	JobReads
	ConfigReads
}

// JobReads reads jobs, the queue and webhook deliveries.
type JobReads struct{ f *FSM }

// ConfigReads reads the policy, the limits, the members and the log's place.
type ConfigReads struct{ f *FSM }

// Reads returns the state machine's read side.
func (f *FSM) Reads() Reads { return Reads{JobReads{f}, ConfigReads{f}} }

// Job returns the job with the given id. The record is shared: the state
// machine never changes a record in place (it replaces it), and callers
// must not change it either.
func (r JobReads) Job(id uint64) (*raftv1.JobRecord, bool) {
	f := r.f
	j, ok := f.jobs[id]
	if !ok {
		return nil, false
	}
	return j, true
}

// JobView is a job with its place in line, read at one instant. Job is
// shared with the state machine, read-only (see Job).
type JobView struct {
	Job      *raftv1.JobRecord
	Position int // 0 when not queued
}

// View returns the job (shared, read-only: see Job) and its position in line.
func (r JobReads) View(id uint64) (JobView, bool) {
	f := r.f
	j, ok := f.jobs[id]
	if !ok {
		return JobView{}, false
	}
	v := JobView{Job: j}
	if j.State == sluicev1.JobState_JOB_STATE_QUEUED {
		v.Position, _ = f.queue.Position(id)
	}
	return v, true
}

// Position is the job's 1-based place in queue order among its model's
// queued jobs, if it is queued (a node's answers tell the projected
// dispatch order where they can: admission.QueuedPlace).
func (r JobReads) Position(id uint64) (int, bool) {
	f := r.f
	return f.queue.Position(id)
}

// AheadOf calls each with how many queued jobs of each model come before
// the queued job id in queue order (scheduler.FairQueue.AheadOf); each
// must not call the FSM.
func (r JobReads) AheadOf(id uint64, each func(model string, n int)) bool {
	f := r.f
	return f.queue.AheadOf(id, each)
}

// CountAhead calls each with, for every model, how many queued jobs would
// start before id as the fair queue's tiers dispatch them
// (scheduler.FairQueue.CountAhead), if at most limit do; false, nothing
// called, otherwise or when id is not queued and ready.
func (r JobReads) CountAhead(id uint64, limit int, each func(model string, n int)) bool {
	reached, _ := r.f.queue.CountAhead(id, limit, each)
	return reached
}

// Behind is scheduler.FairQueue.Behind: how far job id is past its
// tier's virtual time, the weight of the tier's backlogged tenants and its
// own tenant's.
func (r JobReads) Behind(id uint64) (lead, backlog, weight int64, ok bool) {
	return r.f.queue.Behind(id)
}

// EachReady calls each with the id, model (and its rank in the order
// CountAhead names models) and input of the ready queued jobs in dispatch
// order (scheduler.FairQueue.DispatchOrder), at most limit of them, and
// where until names jobs only until the last of those that are queued and
// ready; each must not call the FSM. EachAhead(id) of a ready job is the
// jobs before id here. It reports whether it came to the end.
func (r JobReads) EachReady(limit int, until []uint64, each func(id uint64, model string, rank int, input *structpb.Struct)) bool {
	f := r.f
	return f.queue.DispatchOrder(limit, until, func(id uint64, rank int) {
		if j, ok := f.jobs[id]; ok {
			each(id, j.Spec.GetModel(), rank, j.Spec.GetInput())
		}
	})
}

// EachAhead calls each with the model and input of the queued jobs before
// id in dispatch order (scheduler.FairQueue.DispatchAhead; queue order for
// a delayed job, or id 0, the whole queue), at most limit of them; each
// must not call the FSM. It reports whether it came to id (id 0: to the
// end of the queue).
func (r JobReads) EachAhead(id uint64, limit int, each func(model string, input *structpb.Struct)) bool {
	f := r.f
	if id != 0 {
		reached, ok := f.queue.DispatchAhead(id, limit, func(ahead uint64) {
			if j, ok := f.jobs[ahead]; ok {
				each(j.Spec.GetModel(), j.Spec.GetInput())
			}
		})
		if ok {
			return reached
		}
	}
	var cur scheduler.Cursor
	for seen := 0; seen < limit; {
		page, next, more := f.queue.Page(cur, min(256, limit-seen))
		for _, sj := range page {
			if sj.ID == id {
				return true
			}
			if j, ok := f.jobs[sj.ID]; ok {
				each(j.Spec.GetModel(), j.Spec.GetInput())
			}
			seen++
		}
		if !more || len(page) == 0 {
			return id == 0
		}
		cur = next
	}
	return false
}

// FinishedRun is a succeeded job's last attempt, as a new leader relearns
// run times from it.
type FinishedRun struct {
	Model      string
	Input      *structpb.Struct
	Ran        time.Duration
	FinishedNs int64
}

// Succeeded lists, for each model, its last perModel succeeded jobs the
// state machine still holds (retention), oldest first.
func (r JobReads) Succeeded(perModel int) []FinishedRun {
	f := r.f
	by := map[string][]FinishedRun{}
	for _, j := range f.jobs {
		if j.State != sluicev1.JobState_JOB_STATE_SUCCEEDED || j.StartedNs <= 0 || j.FinishedNs < j.StartedNs {
			continue
		}
		m := j.Spec.GetModel()
		by[m] = append(by[m], FinishedRun{Model: m, Input: j.Spec.GetInput(), Ran: time.Duration(j.FinishedNs - j.StartedNs), FinishedNs: j.FinishedNs})
	}
	var out []FinishedRun
	for _, runs := range by {
		slices.SortFunc(runs, func(a, b FinishedRun) int { return cmp.Compare(a.FinishedNs, b.FinishedNs) })
		out = append(out, runs[max(0, len(runs)-perModel):]...)
	}
	slices.SortStableFunc(out, func(a, b FinishedRun) int { return cmp.Compare(a.FinishedNs, b.FinishedNs) })
	return out
}

// QueueLen is the number of queued jobs.
func (r JobReads) QueueLen() int {
	f := r.f
	return f.queue.Len()
}

// QueuedOfModel is the number of queued jobs of a model.
func (r JobReads) QueuedOfModel(model string) int {
	f := r.f
	return f.queue.QueuedOfModel(model)
}

// Count is the number of jobs in state s.
func (r JobReads) Count(s sluicev1.JobState) int64 {
	f := r.f
	if int(s) >= len(f.counts) || s < 0 {
		return 0
	}
	return f.counts[s]
}

// ListJobs returns up to limit of the tenant's jobs with id < before (0: no
// bound), newest first, in the given states (none: all), and whether more
// remain.
func (r JobReads) ListJobs(tenant string, states []sluicev1.JobState, before uint64, limit int) ([]JobView, bool) {
	f := r.f
	ids := f.idsOf(tenant)
	end := len(ids)
	if before > 0 {
		end = sort.Search(len(ids), func(i int) bool { return ids[i] >= before })
	}
	var out []JobView
	for i := end - 1; i >= 0; i-- {
		j := f.jobs[ids[i]]
		if len(states) > 0 && !hasState(states, j.State) {
			continue
		}
		if len(out) == limit {
			return out, true
		}
		v := JobView{Job: j}
		if j.State == sluicev1.JobState_JOB_STATE_QUEUED {
			v.Position, _ = f.queue.Position(j.Id)
		}
		out = append(out, v)
	}
	return out, false
}

func hasState(states []sluicev1.JobState, s sluicev1.JobState) bool {
	for _, x := range states {
		if x == s {
			return true
		}
	}
	return false
}

// Running returns the ids and attempts of all running jobs, ascending by id.
func (r JobReads) Running() []RunningJob {
	f := r.f
	out := make([]RunningJob, 0, len(f.running))
	for id := range f.running {
		j := f.jobs[id]
		out = append(out, RunningJob{ID: id, Attempt: j.Attempt, Executor: j.Executor})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	return out
}

// RunningJob identifies one running attempt.
type RunningJob struct {
	ID       uint64
	Attempt  int32
	Executor string
}

// NextDeadline is the earliest time at which a timer is due or a queued job
// becomes ready; the leader proposes a Tick then. ok is false when none.
func (r JobReads) NextDeadline() (int64, bool) {
	f := r.f
	if len(f.timers) == 0 {
		return 0, false
	}
	return f.timers[0].at, true
}

// Now is the state machine's clock: the latest entry time applied.
func (r ConfigReads) Now() int64 {
	f := r.f
	return f.now
}

// LastIndex is the index of the last applied entry.
func (r ConfigReads) LastIndex() uint64 {
	f := r.f
	return f.lastIndex
}

// Policy returns the current policy. Callers must not modify it.
func (r ConfigReads) Policy() *sluicev1.Policy {
	f := r.f
	return f.policy
}

// TenantByKeyHash finds the tenant owning an API key hash.
func (r ConfigReads) TenantByKeyHash(h string) (*sluicev1.Tenant, bool) {
	f := r.f
	t, ok := f.pix.byKeyHash[h]
	return t, ok
}

// Tenant looks up a tenant by name.
func (r ConfigReads) Tenant(name string) (*sluicev1.Tenant, bool) {
	f := r.f
	t, ok := f.pix.tenants[name]
	return t, ok
}

// Model looks up a model by name.
func (r ConfigReads) Model(name string) (*sluicev1.Model, bool) {
	f := r.f
	m, ok := f.pix.models[name]
	return m, ok
}

// RunningAttempt reports the job's current attempt if it is running.
func (r JobReads) RunningAttempt(id uint64) (int32, bool) {
	f := r.f
	j, ok := f.jobs[id]
	if !ok || j.State != sluicev1.JobState_JOB_STATE_RUNNING {
		return 0, false
	}
	return j.Attempt, true
}

// QueuedAttempt reports the attempts made so far by a queued job.
func (r JobReads) QueuedAttempt(id uint64) (int32, bool) {
	f := r.f
	j, ok := f.jobs[id]
	if !ok || j.State != sluicev1.JobState_JOB_STATE_QUEUED {
		return 0, false
	}
	return j.Attempt, true
}

// CheckLimitsInto decides a submission against the rate limits into d
// without charging anything: the leader's pre-check, so that clear
// rejections never touch the log. The state machine decides again when the
// entry applies.
func (r ConfigReads) CheckLimitsInto(req limiter.Request, now int64, d *limiter.Decision) {
	f := r.f
	f.limits.Check(&req, max(now, f.now), d)
}

// Usage reports every rule that applies to req, as of now.
func (r ConfigReads) Usage(req limiter.Request, now int64) []limiter.Usage {
	f := r.f
	return f.limits.Usage(&req, max(now, f.now), nil)
}

// Rule looks up a policy rule by name.
func (r ConfigReads) Rule(name string) (*sluicev1.Rule, bool) {
	rule, ok := r.f.pix.rules[name]
	return rule, ok
}

// IdempotentJob finds the tenant's job with the given idempotency key.
func (r JobReads) IdempotentJob(tenant, key string) (uint64, bool) {
	f := r.f
	if key == "" {
		return 0, false
	}
	id, ok := f.idem[idemKey{tenant, key}]
	return id, ok
}

// JobCount is the number of jobs the tenant has in the state machine, in
// any state (finished ones until their retention ends).
func (r JobReads) JobCount(tenant string) int {
	f := r.f
	return len(f.idsOf(tenant))
}

// ActiveJobs counts the tenant's queued and running jobs.
func (r JobReads) ActiveJobs(tenant string) (queued, running int64) {
	f := r.f
	for _, id := range f.idsOf(tenant) {
		switch f.jobs[id].GetState() {
		case sluicev1.JobState_JOB_STATE_QUEUED:
			queued++
		case sluicev1.JobState_JOB_STATE_RUNNING:
			running++
		}
	}
	return queued, running
}
