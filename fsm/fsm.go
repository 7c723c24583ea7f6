package fsm

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/sluicehq/sluice/limiter"
	"github.com/sluicehq/sluice/policy"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/scheduler"
)

// Errors a command can end with. They are results, not failures of Apply:
// every replica reaches the same one.
var (
	ErrNotFound      = errors.New("job not found")
	ErrFinished      = errors.New("job already finished")
	ErrStale         = errors.New("stale report: attempt or state does not match")
	ErrNotQueued     = errors.New("job is not queued and ready")
	ErrUnknownTenant = errors.New("unknown tenant")
	ErrUnknownModel  = errors.New("unknown model")
	ErrBadCommand    = errors.New("malformed command")
)

// Result is what Apply returns for one entry.
type Result struct {
	// JobID is the job the command created or touched.
	JobID uint64
	// Deduplicated is set when a Submit matched an earlier idempotency key.
	Deduplicated bool
	// Limits are the rate-limit rules a Submit was checked against.
	Limits []limiter.RuleResult
	Err    error
	// Batch holds the results of a CmdBatch entry's commands, in order.
	Batch []Result
	// Checks holds a CmdCheck's outcomes, one per group.
	Checks []CheckOutcome
}

// FSM is the replicated state: a plain deterministic value with no lock.
// It is not safe for concurrent use: the server (node/state.go) reads it
// under its own read lock and applies under its write lock; the simulator
// uses it from one goroutine.
type FSM struct {
	now       int64
	lastIndex uint64
	lastJobID uint64 // see raftv1.Snapshot.last_job_id
	nextSeq   uint64
	policy    *sluicev1.Policy

	jobTable          // the job records and their indexes (jobs.go)
	lines    sizeBook // models that reserve by size (sizes.go)
	queue    *scheduler.FairQueue
	timers   timerHeap

	limits     *limiter.Engine
	nextSweep  int64
	members    memberBook    // raft id → addresses (members.go)
	hooks      hookBook      // webhook deliveries' state beside the records (webhooks.go)
	challenges challengeBook // the key and the answered challenges (challenges.go)

	// derived, never encoded
	commands uint64 // commands applied since this process started (a batch's each count)
	pix      policyIndex
	dec      limiter.Decision  // scratch for Apply: deciding allocates nothing
	obs      Observer          // hears of transitions (metrics); nil: none
	peek     *limiter.Decision // unspent's scratch: checks only, made at the first (a Decision is 2 KB)
}

// New returns an empty state machine.
func New() *FSM {
	f := &FSM{
		jobTable: jobTable{
			jobs:     make(map[uint64]*raftv1.JobRecord),
			byTenant: make(map[string]*[]uint64),
			idem:     make(map[idemKey]uint64),
			running:  make(map[uint64]struct{}),
		},
		queue:   scheduler.NewFairQueue(scheduler.Config{}),
		policy:  &sluicev1.Policy{},
		members: make(memberBook),
		hooks:   hookBook{gone: make(map[string]bool), hooked: make(map[uint64]struct{})},
		lines:   make(sizeBook),
	}
	f.pix = indexPolicy(f.policy)
	f.limits, _ = limiter.NewEngine(nil)
	return f
}

// SetExclusive promises that nothing reads the state machine's records
// (Job, View, a Capture) outside the caller's goroutine, nor keeps one past
// its next call: a simulator. An edit then changes a record in place rather
// than copying it for such readers (edit); every decision is the same
// (TestEncodedLogGivesTheSameReport in sim/).
func (f *FSM) SetExclusive(on bool) {
	f.exclusive = on
}

// Entry is one log entry for ApplyBatch.
type Entry struct {
	Index uint64
	Data  []byte
}

// ApplyBatch applies consecutive entries in order, exactly as Apply would
// one by one.
func (f *FSM) ApplyBatch(entries []Entry) []Result {
	out := make([]Result, len(entries))
	for i, e := range entries {
		out[i] = f.Apply(e.Index, e.Data)
	}
	return out
}

// Apply applies the log entry at index. It is deterministic: the same
// entries in the same order give the same state on every replica.
func (f *FSM) Apply(index uint64, data []byte) Result {
	if index > f.lastIndex {
		f.lastIndex = index
	}
	if len(data) >= headerLen && CommandType(data[0]) == CmdBatch {
		return f.applyBatchLocked(index, data)
	}
	t, now, msg, err := Decode(data)
	if err != nil {
		f.commands++
		return Result{Err: fmt.Errorf("%w: %v", ErrBadCommand, err)}
	}
	return f.applyCommandLocked(index, t, now, msg)
}

// ApplyCommand applies one command as Apply applies its encoding (Encode),
// without the bytes: for a log that lives in memory, as the simulator's
// does. The state machine keeps what becomes part of its state: a Submit's
// spec, an Assign's GPU list, a Complete's output, a Fail's error, a
// SetPolicy's policy, a SetMember whole. The caller must not change those
// afterwards; the rest of msg it may reuse for the next command.
// TestApplyCommandMatchesApply holds it to Apply.
func (f *FSM) ApplyCommand(index uint64, t CommandType, now int64, msg proto.Message) Result {
	if index > f.lastIndex {
		f.lastIndex = index
	}
	if want := commandMessage(t); want == nil || msg == nil || !msg.ProtoReflect().IsValid() ||
		msg.ProtoReflect().Descriptor() != want.ProtoReflect().Descriptor() {
		f.commands++
		return Result{Err: fmt.Errorf("%w: %v does not take a %T", ErrBadCommand, t, msg)}
	}
	return f.applyCommandLocked(index, t, now, msg)
}

func (f *FSM) applyCommandLocked(index uint64, t CommandType, now int64, msg proto.Message) Result {
	f.commands++
	f.advance(now)
	switch t {
	case CmdSubmit:
		return f.submit(index, msg.(*raftv1.Submit))
	case CmdAssign:
		return f.assign(msg.(*raftv1.Assign))
	case CmdComplete:
		return f.complete(msg.(*raftv1.Complete))
	case CmdFail:
		return f.fail(msg.(*raftv1.Fail))
	case CmdCancel:
		return f.cancel(msg.(*raftv1.Cancel))
	case CmdRequeue:
		return f.requeue(msg.(*raftv1.Requeue))
	case CmdTick:
		return Result{}
	case CmdSetPolicy:
		return f.setPolicy(msg.(*raftv1.SetPolicy))
	case CmdRedrive:
		return f.redrive(msg.(*raftv1.Redrive))
	case CmdSetMember:
		return f.members.set(msg.(*raftv1.SetMember))
	case CmdWebhookResult:
		return f.hooks.result(&f.jobTable, msg.(*raftv1.WebhookResult), f.now, policy.RetrySchedule(f.policy))
	case CmdCheck:
		return f.check(msg.(*raftv1.Check))
	}
	return Result{Err: ErrBadCommand}
}

// applyBatchLocked applies a CmdBatch entry's commands in order.
func (f *FSM) applyBatchLocked(index uint64, data []byte) Result {
	cmds, err := splitBatch(data[headerLen:])
	if err != nil {
		return Result{Err: fmt.Errorf("%w: %v", ErrBadCommand, err)}
	}
	out := make([]Result, len(cmds))
	for i, c := range cmds {
		if len(c) > 0 && CommandType(c[0]) == CmdBatch {
			out[i] = Result{Err: fmt.Errorf("%w: a batch inside a batch", ErrBadCommand)}
			continue
		}
		out[i] = f.Apply(index, c)
	}
	return Result{Batch: out}
}

// CommandsApplied counts the commands this process has applied (each
// command of a batch entry counts), for snapshotting by commands rather
// than log entries.
func (r ConfigReads) CommandsApplied() uint64 {
	f := r.f
	return f.commands
}

// advance moves the clock to max(now, entry time) and fires due timers.
func (f *FSM) advance(now int64) {
	if now > f.now {
		f.now = now
	}
	f.queue.Advance(f.now)
	if f.now >= f.nextSweep {
		f.limits.Sweep(f.now)
		f.challenges.sweep(f.now)
		f.nextSweep = f.now + sweepEvery
	}
	for len(f.timers) > 0 && f.timers[0].at <= f.now {
		tm := f.timers.pop()
		f.fire(tm)
	}
}

func (f *FSM) fire(tm timer) {
	j, ok := f.jobs[tm.job]
	if !ok {
		return
	}
	switch tm.kind {
	case timerQueueDeadline:
		if j.State == sluicev1.JobState_JOB_STATE_QUEUED && j.QueueDeadlineNs == tm.at {
			f.queue.Remove(j.Id)
			f.finish(f.edit(j), sluicev1.JobState_JOB_STATE_EXPIRED, &sluicev1.JobError{
				Code:    "queue_timeout",
				Message: fmt.Sprintf("waited longer than the queue timeout of %v", time.Duration(tm.at-j.ReadyNs)),
			}, "queue timeout")
		}
	case timerRunDeadline:
		if j.State == sluicev1.JobState_JOB_STATE_RUNNING && j.RunDeadlineNs == tm.at {
			f.retryOrDeadLetter(f.edit(j), &sluicev1.JobError{
				Code:    "run_timeout",
				Message: fmt.Sprintf("attempt %d ran longer than the run timeout of %v", j.Attempt, time.Duration(j.RunTimeoutNs)),
			}, true)
		}
	case timerRetention:
		if !isTerminal(j.State) {
			return
		}
		if at := j.FinishedNs + int64(f.pix.retention); at > tm.at {
			f.timers.push(timer{at: at, job: j.Id, kind: timerRetention})
			return
		}
		f.forget(j)
		delete(f.hooks.hooked, j.Id)
	}
}

func (f *FSM) submit(index uint64, c *raftv1.Submit) Result {
	tenant, ok := f.pix.tenants[c.Tenant]
	if !ok {
		return Result{Err: fmt.Errorf("%w %q", ErrUnknownTenant, c.Tenant)}
	}
	spec := c.Spec
	if spec == nil {
		return Result{Err: fmt.Errorf("%w: submit without a spec", ErrBadCommand)}
	}
	m, ok := f.pix.models[spec.Model]
	if !ok {
		return Result{Err: fmt.Errorf("%w %q", ErrUnknownModel, spec.Model)}
	}
	// The policy's strings, equal to the command's, in place of the decoded
	// copies: a queued job holds none of its own (BenchmarkQueuedJobMemory).
	c.Tenant, spec.Model = tenant.Name, m.Name
	if i := slices.Index(tenant.ApiKeySha256, c.ApiKeySha256); i >= 0 {
		c.ApiKeySha256 = tenant.ApiKeySha256[i]
	}
	if c.Method == policy.MethodSubmit {
		c.Method = policy.MethodSubmit // the constant's bytes, not the decoded copy's
	}
	if k := spec.IdempotencyKey; k != "" {
		if id, ok := f.idem[idemKey{c.Tenant, k}]; ok {
			return Result{JobID: id, Deduplicated: true}
		}
	}
	if err := f.queue.CheckAdmission(schedJob(&raftv1.JobRecord{Tenant: c.Tenant, Tier: tenant.Tier, Spec: spec}, f.pix.models), 0); err != nil {
		return Result{Err: err}
	}
	adm, model, err := f.admit(c, tenant)
	if err != nil {
		return Result{Err: err, Limits: decisionRules(&f.dec)}
	}
	f.lastJobID = max(f.lastJobID+1, index)
	j := f.records.new(f.exclusive)
	*j = raftv1.JobRecord{
		Id:           f.lastJobID,
		Tenant:       c.Tenant,
		Tier:         tenant.Tier,
		Spec:         spec,
		CreatedNs:    f.now,
		MaxAttempts:  spec.MaxAttempts,
		RunTimeoutNs: int64(spec.GetRunTimeout().AsDuration()),
		Charge:       adm.charge,
		Admission:    adm.admission,
	}
	if j.MaxAttempts <= 0 {
		j.MaxAttempts = f.policy.GetDefaults().GetMaxAttempts()
		if j.MaxAttempts <= 0 {
			j.MaxAttempts = policy.DefaultMaxAttempts
		}
	}
	spec.Gpus = jobGPUs(spec, model)
	if spec.GpuMemoryMb <= 0 {
		spec.GpuMemoryMb = model.GpuMemoryMb
	}
	if j.RunTimeoutNs <= 0 {
		j.RunTimeoutNs = int64(ModelRunTimeout(model))
	}
	f.jobs[j.Id] = j
	f.tenantJobs(j.Tenant, j.Id)
	if k := spec.IdempotencyKey; k != "" {
		f.idem[idemKey{c.Tenant, k}] = j.Id
	}
	f.counts[sluicev1.JobState_JOB_STATE_UNSPECIFIED]++ // enqueue moves it
	ready := max(f.now, adm.ready)
	if nb := spec.GetNotBefore(); nb != nil && nb.AsTime().UnixNano() > ready {
		ready = nb.AsTime().UnixNano()
	}
	// The first transition is not stored: Transitions derives it from the record.
	f.enterState(j, sluicev1.JobState_JOB_STATE_QUEUED, nil)
	f.place(j, ready)
	return Result{JobID: j.Id, Limits: decisionRules(&f.dec)}
}

// Transitions is a job's history, oldest first. A record stores every
// transition but its first, (QUEUED, created_ns, attempt 0, "submitted…"),
// which the rest of the record implies: a queued job costs no transition.
func Transitions(j *raftv1.JobRecord) []*raftv1.TransitionRecord {
	out := make([]*raftv1.TransitionRecord, 0, len(j.Transitions)+1)
	return append(append(out, firstTransition(j)), j.Transitions...)
}

func firstTransition(j *raftv1.JobRecord) *raftv1.TransitionRecord {
	reason := "submitted"
	switch a := j.Admission; {
	case a.GetDelayedBy() != "":
		reason = fmt.Sprintf("submitted; delayed by rule %q", a.DelayedBy)
	case a.GetDegradedBy() != "":
		reason = fmt.Sprintf("submitted; degraded from %s to %s by rule %q", a.RequestedModel, j.Spec.GetModel(), a.DegradedBy)
	}
	return &raftv1.TransitionRecord{State: sluicev1.JobState_JOB_STATE_QUEUED, AtNs: j.CreatedNs, Reason: reason}
}

// storedFirst is true when a record restored from a snapshot of an older
// version stores its first transition (Transitions derives it now).
func storedFirst(j *raftv1.JobRecord) bool {
	if len(j.Transitions) == 0 {
		return false
	}
	t := j.Transitions[0]
	return t.State == sluicev1.JobState_JOB_STATE_QUEUED && t.AtNs == j.CreatedNs && t.Attempt == 0 &&
		t.Executor == "" && strings.HasPrefix(t.Reason, "submitted")
}

// sweepEvery is how often (in log time) the limiter drops idle keys.
const sweepEvery = int64(time.Minute)

// maxDegrades bounds a chain of fallback models.
const maxDegrades = 4

type admission struct {
	charge    *raftv1.Charge
	admission *sluicev1.Admission
	ready     int64
}

// admit runs the rate limits on a submission: admitted (now or delayed),
// degraded to a fallback model and checked again, or rejected with a
// *LimitError. It may change spec.Model (degrade) and returns the model the
// job will run.
func (f *FSM) admit(c *raftv1.Submit, tenant *sluicev1.Tenant) (admission, *sluicev1.Model, error) {
	spec := c.Spec
	model := f.pix.models[spec.Model]
	exempt, err := f.challenges.spendable(c, f.now)
	if err != nil {
		return admission{}, nil, err
	}
	req := limiter.Request{
		Tenant: c.Tenant, APIKey: c.ApiKeySha256, Tier: tenant.Tier, ClientIP: c.ClientIp,
		Method: c.Method, Model: spec.Model, Cost: f.lines.reserveCost(spec, model), Exempt: exempt,
	}
	if req.Method == "" {
		req.Method = policy.MethodSubmit // as the API sends it (concurrency caps match only Submits)
	}
	adm := admission{ready: f.now}
	for hops := 0; ; hops++ {
		f.limits.Admit(&req, f.now, &f.dec)
		switch f.dec.Verdict {
		case limiter.Admitted, limiter.Delayed:
			if f.dec.Verdict == limiter.Delayed {
				adm.ready = f.dec.At
				adm.admission = ensureAdmission(adm.admission)
				adm.admission.DelayedBy = f.dec.Rule
			}
			// The record keeps an Admission only when admission did more than charge
			// (a delay, a degrade): the reserved cost is the charge's (JobAdmission).
			ch := f.charges.new(f.exclusive)
			ch.ApiKeySha256, ch.ClientIp, ch.Method, ch.Model, ch.Cost, ch.AtNs = req.APIKey, req.ClientIP, req.Method, req.Model, req.Cost, f.dec.At
			adm.charge = ch
			f.challenges.spend(c.Spend)
			return adm, model, nil
		case limiter.Degraded:
			fb, ok := f.pix.models[f.dec.Fallback]
			if !ok || hops >= maxDegrades {
				return adm, nil, &LimitError{Rule: f.dec.Rule, Verdict: VerdictRejected, RetryAt: f.dec.RetryAt,
					Detail: fmt.Sprintf("fallback model %q is not available", f.dec.Fallback)}
			}
			adm.admission = ensureAdmission(adm.admission)
			if adm.admission.RequestedModel == "" {
				adm.admission.RequestedModel = spec.Model
			}
			adm.admission.DegradedBy = f.dec.Rule
			spec.Model, model = fb.Name, fb
			req.Model, req.Cost = fb.Name, f.lines.reserveCost(spec, fb)
		case limiter.Challenged:
			return adm, nil, &LimitError{Rule: f.dec.Rule, Verdict: VerdictChallenged, RetryAt: f.dec.RetryAt}
		default:
			return adm, nil, &LimitError{Rule: f.dec.Rule, Verdict: VerdictRejected, RetryAt: f.dec.RetryAt}
		}
	}
}

func ensureAdmission(a *sluicev1.Admission) *sluicev1.Admission {
	if a == nil {
		return &sluicev1.Admission{}
	}
	return a
}

// decisionRules copies a decision's per-rule results.
func decisionRules(d *limiter.Decision) []limiter.RuleResult {
	rs := d.Rules()
	if len(rs) == 0 {
		return nil
	}
	return append([]limiter.RuleResult(nil), rs...)
}

// jobGPUs is the GPUs a job needs: its spec's, else its model's, else 1.
// JobGPUs is how many GPUs a job of spec and model asks for.
func JobGPUs(spec *sluicev1.JobSpec, m *sluicev1.Model) int32 { return jobGPUs(spec, m) }

// JobGPUMemory is the GPU memory (MiB, per GPU) a job of spec and model asks for.
func JobGPUMemory(spec *sluicev1.JobSpec, m *sluicev1.Model) int64 {
	if spec.GetGpuMemoryMb() > 0 {
		return spec.GpuMemoryMb
	}
	return m.GetGpuMemoryMb()
}

func jobGPUs(spec *sluicev1.JobSpec, m *sluicev1.Model) int32 {
	switch {
	case spec.GetGpus() > 0:
		return spec.Gpus
	case m.GetGpus() > 0:
		return m.Gpus
	}
	return policy.DefaultGPUs
}

// EstimateCost is what admission charges rules that count cost: the
// declared cost, else the job's GPU-milliseconds at the model's expected
// duration (at least 1).
func EstimateCost(spec *sluicev1.JobSpec, m *sluicev1.Model) int64 {
	if spec.GetDeclaredCost() > 0 {
		return spec.DeclaredCost
	}
	return max(1, int64(jobGPUs(spec, m))*m.GetDefaultDuration().AsDuration().Milliseconds())
}

// LimitError is a submission refused by a rate limit.
type LimitError struct {
	Rule    string
	Verdict string // VerdictRejected, VerdictChallenged, VerdictReplayed or VerdictExpired
	// RetryAt is when the request would fit (unix ns); limiter.Never when
	// it never will, 0 when unknown.
	RetryAt int64
	Detail  string
}

// LimitError's verdicts: refused; refused with a challenge to answer; an
// answered challenge refused, answered before or expired by the time its
// entry applied.
const (
	VerdictRejected   = "rejected"
	VerdictChallenged = "challenged"
	VerdictReplayed   = "replayed"
	VerdictExpired    = "expired"
)

func (e *LimitError) Error() string {
	msg := fmt.Sprintf("rate limited by rule %q", e.Rule)
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

// ModelRunTimeout is a model's run timeout when a spec gives none.
func ModelRunTimeout(m *sluicev1.Model) time.Duration {
	if d := m.GetRunTimeout(); d != nil && d.AsDuration() > 0 {
		return d.AsDuration()
	}
	d := 10 * m.GetDefaultDuration().AsDuration()
	if d < policy.MinRunTimeout {
		d = policy.MinRunTimeout
	}
	return d
}

// enqueue puts j in the queue, ready at the given time.
func (f *FSM) enqueue(j *raftv1.JobRecord, ready int64, reason string) {
	f.setState(j, sluicev1.JobState_JOB_STATE_QUEUED, reason)
	f.place(j, ready)
}

// place puts a job that just became QUEUED in the queue, ready at ready.
func (f *FSM) place(j *raftv1.JobRecord, ready int64) {
	j.Executor = ""
	j.RunDeadlineNs = 0
	j.Gpus = nil
	j.ReadyNs = ready
	j.QueueSeq = f.nextSeq
	f.nextSeq++
	j.QueueDeadlineNs = 0
	var qt time.Duration
	if d := j.Spec.GetQueueTimeout(); d != nil {
		qt = d.AsDuration()
	}
	if qt <= 0 {
		qt = f.pix.queueTimeout
	}
	if qt > 0 {
		j.QueueDeadlineNs = ready + int64(qt)
		f.timers.push(timer{at: j.QueueDeadlineNs, job: j.Id, kind: timerQueueDeadline})
	}
	f.queue.Enqueue(schedJob(j, f.pix.models))
	if ready > f.now {
		f.timers.push(timer{at: ready, job: j.Id, kind: timerReady})
	}
}

// schedJob is what the queue knows of j; models are the policy's, by name.
func schedJob(j *raftv1.JobRecord, models map[string]*sluicev1.Model) scheduler.Job {
	return scheduler.Job{
		Cost:        EstimateCost(j.Spec, models[j.Spec.GetModel()]),
		ID:          j.Id,
		Tenant:      j.Tenant,
		Tier:        j.Tier,
		Model:       j.Spec.GetModel(),
		Priority:    j.Spec.GetPriority(),
		GPUs:        j.Spec.GetGpus(),
		GPUMemoryMB: j.Spec.GetGpuMemoryMb(),
		Ready:       j.ReadyNs,
		Seq:         j.QueueSeq,
	}
}

func (f *FSM) setState(j *raftv1.JobRecord, s sluicev1.JobState, reason string) {
	tr := f.transitions.new(f.exclusive)
	tr.State, tr.AtNs, tr.Attempt, tr.Executor, tr.Reason = s, f.now, j.Attempt, j.Executor, reason
	f.enterState(j, s, tr)
}

// enterState moves j to state s and records the transition tr: nil for a
// job's first, which Transitions derives.
func (f *FSM) enterState(j *raftv1.JobRecord, s sluicev1.JobState, tr *raftv1.TransitionRecord) {
	f.counts[j.State]--
	f.counts[s]++
	if j.State == sluicev1.JobState_JOB_STATE_RUNNING {
		delete(f.running, j.Id)
		f.queue.Stopped(j.Tenant)
	}
	if s == sluicev1.JobState_JOB_STATE_RUNNING {
		f.running[j.Id] = struct{}{}
	}
	from := j.State
	j.State = s
	if tr != nil {
		if j.Transitions == nil {
			j.Transitions = f.transitionPairs.new(f.exclusive)[:0] // started, then ended, most often
		}
		j.Transitions = append(j.Transitions, tr)
	}
	if j.Spec.GetWebhook() != nil || f.pix.webhooks {
		f.hooks.transition(j, from, s, webhookOf(j, f.pix.tenants), f.now)
	}
	if f.obs != nil {
		f.obs.Transition(f.lastIndex, j, from)
	}
}

func (f *FSM) assign(c *raftv1.Assign) Result {
	j, ok := f.jobs[c.JobId]
	if !ok {
		return Result{JobID: c.JobId, Err: ErrNotFound}
	}
	if j.State != sluicev1.JobState_JOB_STATE_QUEUED || j.ReadyNs > f.now || c.Attempt != j.Attempt+1 {
		return Result{JobID: j.Id, Err: ErrNotQueued}
	}
	j = f.edit(j)
	f.queue.Start(j.Id, f.now)
	j.Attempt = c.Attempt
	j.Executor = c.Executor
	j.Gpus = c.Gpus
	j.StartedNs = f.now
	j.QueueDeadlineNs = 0
	j.RunDeadlineNs = f.now + j.RunTimeoutNs
	f.timers.push(timer{at: j.RunDeadlineNs, job: j.Id, kind: timerRunDeadline})
	f.setState(j, sluicev1.JobState_JOB_STATE_RUNNING, "assigned")
	return Result{JobID: j.Id}
}

func (f *FSM) complete(c *raftv1.Complete) Result {
	j, err := f.runningAttempt(c.JobId, c.Attempt)
	if err != nil {
		return Result{JobID: c.JobId, Err: err}
	}
	j.Output = c.Output
	f.lines.learn(j, f.now)
	f.finishReported(j, sluicev1.JobState_JOB_STATE_SUCCEEDED, nil, "completed", c.Cost)
	return Result{JobID: j.Id}
}

func (f *FSM) fail(c *raftv1.Fail) Result {
	j, err := f.runningAttempt(c.JobId, c.Attempt)
	if err != nil {
		return Result{JobID: c.JobId, Err: err}
	}
	e := c.Error
	if e == nil {
		e = &sluicev1.JobError{Code: "runner_error", Message: "the runner reported a failure without detail"}
	}
	if !c.Retryable {
		f.finish(j, sluicev1.JobState_JOB_STATE_FAILED, e, e.Code)
		return Result{JobID: j.Id}
	}
	f.retryOrDeadLetter(j, e, true)
	return Result{JobID: j.Id}
}

func (f *FSM) requeue(c *raftv1.Requeue) Result {
	j, err := f.runningAttempt(c.JobId, c.Attempt)
	if err != nil {
		return Result{JobID: c.JobId, Err: err}
	}
	reason := c.Reason
	if reason == "" {
		reason = "executor lost"
	}
	f.retryOrDeadLetter(j, &sluicev1.JobError{Code: "executor_lost", Message: reason}, false)
	return Result{JobID: j.Id}
}

// retryOrDeadLetter ends a failed attempt: back to the queue (after a
// backoff when asked) while attempts remain, else DEAD_LETTERED.
func (f *FSM) retryOrDeadLetter(j *raftv1.JobRecord, e *sluicev1.JobError, backoff bool) {
	j.RunDeadlineNs = 0
	if j.Attempt >= j.MaxAttempts {
		f.finish(j, sluicev1.JobState_JOB_STATE_DEAD_LETTERED, &sluicev1.JobError{
			Code:    e.Code,
			Message: fmt.Sprintf("gave up after %d attempts; last: %s", j.Attempt, e.Message),
		}, e.Code)
		return
	}
	stopRunning(j, f.now)
	j.Error = e
	ready := f.now
	if backoff {
		ready += int64(retryBackoff(f.policy, j.Id, j.Attempt))
	}
	f.enqueue(j, ready, "retry: "+e.Code)
}

// retryBackoff is the wait before retrying after the given attempt failed:
// exponential from pol's retry_backoff, capped at max_backoff, with a
// deterministic jitter in [d/2, d] derived from the job id and attempt.
func retryBackoff(pol *sluicev1.Policy, id uint64, attempt int32) time.Duration {
	base := pol.GetDefaults().GetRetryBackoff().AsDuration()
	if base <= 0 {
		base = policy.DefaultRetryBackoff
	}
	maxB := pol.GetDefaults().GetMaxBackoff().AsDuration()
	if maxB <= 0 {
		maxB = policy.DefaultMaxBackoff
	}
	d := base
	for i := int32(1); i < attempt && d < maxB; i++ {
		d *= 2
	}
	if d > maxB {
		d = maxB
	}
	// splitmix64 of (id, attempt): same on every replica, spread across jobs.
	x := id*0x9E3779B97F4A7C15 + uint64(attempt)
	x ^= x >> 30
	x *= 0xBF58476D1CE4E5B9
	x ^= x >> 27
	x *= 0x94D049BB133111EB
	x ^= x >> 31
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + time.Duration(x%uint64(half+1))
}

func (f *FSM) cancel(c *raftv1.Cancel) Result {
	j, ok := f.jobs[c.JobId]
	if !ok || j.Tenant != c.Tenant {
		return Result{JobID: c.JobId, Err: ErrNotFound}
	}
	switch j.State {
	case sluicev1.JobState_JOB_STATE_QUEUED:
		f.queue.Remove(j.Id)
	case sluicev1.JobState_JOB_STATE_RUNNING:
	case sluicev1.JobState_JOB_STATE_CANCELED:
		return Result{JobID: j.Id}
	default:
		return Result{JobID: j.Id, Err: fmt.Errorf("%w: it is %s", ErrFinished, StateName(j.State))}
	}
	f.finish(f.edit(j), sluicev1.JobState_JOB_STATE_CANCELED, &sluicev1.JobError{Code: "canceled", Message: "canceled by its owner"}, "canceled")
	return Result{JobID: j.Id}
}

func (f *FSM) finish(j *raftv1.JobRecord, s sluicev1.JobState, e *sluicev1.JobError, reason string) {
	f.finishReported(j, s, e, reason, 0)
}

// finishReported ends a job; reported is the real cost an executor gave.
func (f *FSM) finishReported(j *raftv1.JobRecord, s sluicev1.JobState, e *sluicev1.JobError, reason string, reported int64) {
	stopRunning(j, f.now)
	f.closeCharge(j, reported)
	j.Error = e
	j.FinishedNs = f.now
	j.RunDeadlineNs = 0
	j.QueueDeadlineNs = 0
	f.setState(j, s, reason)
	f.timers.push(timer{at: j.FinishedNs + int64(f.pix.retention), job: j.Id, kind: timerRetention})
}

// stopRunning adds a running attempt's time, up to now, to the job's total.
func stopRunning(j *raftv1.JobRecord, now int64) {
	if j.State == sluicev1.JobState_JOB_STATE_RUNNING && now > j.StartedNs {
		j.RanNs += now - j.StartedNs
	}
}

// closeCharge settles a finished job's rate-limit charge. Rules that count
// cost are charged the real cost (reported, else declared, else measured
// GPU-milliseconds; nothing for a job that never ran), so a cancel, expiry
// or dead-letter refunds what was not used; concurrency caps are released.
// Rules that count requests keep their charge: the request was made, and
// refunding it would let submit-then-cancel dodge a rate limit.
func (f *FSM) closeCharge(j *raftv1.JobRecord, reported int64) {
	if j.Charge == nil || j.Charge.Closed {
		return
	}
	c := j.Charge
	if !f.exclusive {
		c = copyCharge(c) // shared with earlier versions of the record (edit)
	}
	c.Closed = true
	j.Charge = c
	req := limiter.Request{Tenant: j.Tenant, APIKey: c.ApiKeySha256, Tier: j.Tier, ClientIP: c.ClientIp,
		Method: c.Method, Model: c.Model, Cost: c.Cost}
	var actual int64
	switch {
	case reported > 0:
		actual = reported
	case j.RanNs == 0:
	case j.Spec.GetDeclaredCost() > 0:
		actual = j.Spec.DeclaredCost
	default:
		actual = max(1, int64(j.Spec.GetGpus())*(j.RanNs/int64(time.Millisecond)))
	}
	// Every rule was charged when the job was admitted (CreatedNs), a rule that delayed it
	// too; AtNs, when it may start, is later for a delayed job, and a refund as of then would
	// miss the sliding log's entry or land in a window that never held the charge.
	f.limits.Settle(&req, f.now, j.CreatedNs, actual)
	f.limits.Release(&req, f.now)
	var a *sluicev1.Admission
	if j.Admission == nil {
		a = f.settled.new(f.exclusive)
	} else {
		a = j.Admission
		if !f.exclusive {
			a = copyAdmission(a) // shared with earlier versions of the record (edit)
		}
	}
	a.SettledCost = actual
	j.Admission = a
}

// JobAdmission is a job's admission as the API shows it. A record keeps an
// Admission only once admission did more than charge (a delay, a degrade) or
// the charge is settled; the reserved cost is the charge's. Records written
// before that kept reserved_cost too, the same number.
func JobAdmission(j *raftv1.JobRecord) *sluicev1.Admission {
	if j.Charge == nil {
		return j.Admission
	}
	a := &sluicev1.Admission{}
	if j.Admission != nil {
		a = copyAdmission(j.Admission)
	}
	a.ReservedCost = j.Charge.Cost
	return a
}

func (f *FSM) setPolicy(c *raftv1.SetPolicy) Result {
	if err := policy.Validate(c.Policy); err != nil {
		return Result{Err: err}
	}
	rules, err := policy.LimiterRules(c.Policy)
	if err == nil {
		err = f.limits.SetRules(rules)
	}
	if err != nil {
		return Result{Err: err}
	}
	f.challenges.takeKey(c.ChallengeKey)
	old := f.pix.retention
	f.policy = c.Policy
	f.pix = indexPolicy(f.policy)
	f.lines.sync(f.policy, f.pix.models)
	f.queue.SetConfig(policy.SchedulerConfig(f.policy))
	if r := f.pix.retention; r != old {
		// Finished jobs keep one effective retention timer: push the new
		// due times so that a shorter retention takes effect now, exactly as
		// it would on a replica restored from a snapshot.
		for _, ids := range f.byTenant {
			for _, id := range *ids {
				if j := f.jobs[id]; isTerminal(j.State) {
					f.timers.push(timer{at: j.FinishedNs + int64(r), job: id, kind: timerRetention})
				}
			}
		}
	}
	return Result{}
}

// StateName is the short name of a job state ("QUEUED").
func StateName(s sluicev1.JobState) string {
	const prefix = "JOB_STATE_"
	n := s.String()
	if len(n) > len(prefix) {
		return n[len(prefix):]
	}
	return n
}

func isTerminal(s sluicev1.JobState) bool {
	return s != sluicev1.JobState_JOB_STATE_QUEUED && s != sluicev1.JobState_JOB_STATE_RUNNING &&
		s != sluicev1.JobState_JOB_STATE_UNSPECIFIED
}

// IsTerminal reports whether s is a final state.
func IsTerminal(s sluicev1.JobState) bool { return isTerminal(s) }

// Snapshot encodes the whole state deterministically.
func (f *FSM) Snapshot() []byte {
	return f.Capture().Encode()
}

// copyRecord is edit's copy of a job record: every field, lists in arrays
// of their own (the transitions' with room for the one an edit usually
// adds), sub-messages shared (they are replaced, never changed).
// Written out rather than through protoreflect, which cost the simulator
// half its time (issue 25); TestEditCopiesShallowly checks that it copies
// every field, so a field added to JobRecord and not here fails it.
func copyRecord(j *raftv1.JobRecord) *raftv1.JobRecord {
	return &raftv1.JobRecord{
		Id: j.Id, Tenant: j.Tenant, Tier: j.Tier, Spec: j.Spec, State: j.State, Attempt: j.Attempt,
		Executor: j.Executor, CreatedNs: j.CreatedNs, StartedNs: j.StartedNs, FinishedNs: j.FinishedNs,
		ReadyNs: j.ReadyNs, QueueDeadlineNs: j.QueueDeadlineNs, RunDeadlineNs: j.RunDeadlineNs,
		Transitions: append(make([]*raftv1.TransitionRecord, 0, len(j.Transitions)+1), j.Transitions...), Output: j.Output, Error: j.Error, QueueSeq: j.QueueSeq,
		Gpus: slices.Clone(j.Gpus), MaxAttempts: j.MaxAttempts, RunTimeoutNs: j.RunTimeoutNs,
		Charge: j.Charge, Admission: j.Admission, RanNs: j.RanNs, Deliveries: slices.Clone(j.Deliveries),
	}
}

// copyCharge and copyAdmission copy a record's charge and admission before
// closeCharge changes them (as copyRecord, without protoreflect);
// TestCopiesCoverEveryField checks that they copy every field.
func copyCharge(c *raftv1.Charge) *raftv1.Charge {
	return &raftv1.Charge{ApiKeySha256: c.ApiKeySha256, ClientIp: c.ClientIp, Method: c.Method, Model: c.Model,
		Cost: c.Cost, AtNs: c.AtNs, Closed: c.Closed}
}

func copyAdmission(a *sluicev1.Admission) *sluicev1.Admission {
	return &sluicev1.Admission{ReservedCost: a.ReservedCost, SettledCost: a.SettledCost, DelayedBy: a.DelayedBy,
		DegradedBy: a.DegradedBy, RequestedModel: a.RequestedModel}
}

// shallowCopy copies a message's fields: scalars by value, message fields
// by pointer, lists and maps into new ones holding the same elements.
func shallowCopy[M proto.Message](src M) M {
	s := src.ProtoReflect()
	d := s.New()
	s.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList():
			from, to := v.List(), d.Mutable(fd).List()
			for i := range from.Len() {
				to.Append(from.Get(i))
			}
		case fd.IsMap():
			to := d.Mutable(fd).Map()
			v.Map().Range(func(k protoreflect.MapKey, e protoreflect.Value) bool {
				to.Set(k, e)
				return true
			})
		default:
			d.Set(fd, v)
		}
		return true
	})
	d.SetUnknown(s.GetUnknown())
	return d.Interface().(M)
}

// Capture is the state at one point, taken quickly (pointers to the job
// records, which are never changed in place; a copy of the queue's arrays;
// a copy of the rate limiter's keys, limiter.Engine.Freeze) so that the
// slow part, encoding, runs later without holding up Apply: at 100,000 jobs
// the encoding takes ~160–190 ms, the capture 6–8 (BenchmarkSnapshot); at a
// million limiter keys, encoding them took 0.3–0.5 s on the apply goroutine
// before they were copied instead (a gateway's checks wait on Apply).
// Encode gives the bytes Snapshot gave at that point.
type Capture struct {
	s       *raftv1.Snapshot // all but Jobs, Queue and Limiter
	jobs    []*raftv1.JobRecord
	queue   *scheduler.Image
	limiter func([]byte) []byte
}

// Capture takes the state for a later Encode.
func (f *FSM) Capture() *Capture {
	c := &Capture{
		s: &raftv1.Snapshot{
			NowNs:        f.now,
			NextQueueSeq: f.nextSeq,
			Policy:       f.policy, // replaced, never changed in place
			LastIndex:    f.lastIndex,
			LastJobId:    f.lastJobID,
			NextSweepNs:  f.nextSweep,
		},
		jobs:    slices.AppendSeq(make([]*raftv1.JobRecord, 0, len(f.jobs)), maps.Values(f.jobs)),
		queue:   f.queue.Image(),
		limiter: f.limits.Freeze(),
	}
	for _, id := range sortedKeys(f.members) {
		c.s.Members = append(c.s.Members, f.members[id]) // replaced, never changed in place
	}
	c.s.GoneWebhooks = sortedKeys(f.hooks.gone)
	c.s.ChallengeKey, c.s.SpentChallenges = f.challenges.key, f.challenges.spentList()
	c.s.SizeLines = f.lines.image()
	return c
}

// Encode encodes the captured state deterministically. It may run on any
// goroutine, beside Apply.
func (c *Capture) Encode() []byte {
	b := bytes.NewBuffer(make([]byte, 0, c.sizeHint()))
	if _, err := c.WriteTo(b); err != nil {
		panic(fmt.Sprintf("fsm: snapshot: %v", err)) // bytes.Buffer does not fail
	}
	return b.Bytes()
}

// sizeHint guesses the encoding's size from the number of jobs (a queued
// job takes ~105 bytes, BenchmarkSnapshot), so that Encode's buffer seldom
// grows.
func (c *Capture) sizeHint() int { return 4096 + 128*len(c.jobs) }

// snapshotJobsField is raftv1.Snapshot's jobs field: WriteTo writes the
// fields before it, then each job, then the fields after it, which is the
// order a deterministic proto.Marshal of the whole message writes them in.
const snapshotJobsField = 4

// snapshotChunk is about how many bytes WriteTo hands w at a time.
const snapshotChunk = 64 << 10

// WriteTo writes what Encode returns to w: the jobs a job at a time, in
// chunks of about snapshotChunk bytes, so that their encoding (~10 MB at
// 100,000 queued jobs) is never in memory whole; the queue's image (~2 MB
// there) goes in the last write. It may run on any goroutine, beside Apply,
// and more than once.
func (c *Capture) WriteTo(w io.Writer) (int64, error) {
	q, err := c.queue.AppendBinary(nil)
	if err != nil {
		return 0, fmt.Errorf("fsm: snapshot the queue: %w", err)
	}
	head, tail := &raftv1.Snapshot{}, shallowCopy(c.s) // set on copies: WriteTo may run again
	tail.Queue = q
	tail.Limiter = c.limiter(nil)
	head.NowNs, head.NextQueueSeq, head.Policy = tail.NowNs, tail.NextQueueSeq, tail.Policy
	tail.NowNs, tail.NextQueueSeq, tail.Policy = 0, 0, nil
	opts := proto.MarshalOptions{Deterministic: true}
	buf, err := opts.MarshalAppend(make([]byte, 0, snapshotChunk+4096), head)
	if err != nil {
		return 0, fmt.Errorf("fsm: snapshot: %w", err)
	}
	var written int64
	flush := func() error {
		n, err := w.Write(buf)
		written += int64(n)
		if err == nil && n < len(buf) {
			err = io.ErrShortWrite
		}
		buf = buf[:0]
		return err
	}
	// Sorted by id: with the ids beside the pointers, comparing two jobs does
	// not read either record.
	type idJob struct {
		id uint64
		j  *raftv1.JobRecord
	}
	jobs := make([]idJob, len(c.jobs))
	for i, j := range c.jobs {
		jobs[i] = idJob{j.Id, j}
	}
	slices.SortFunc(jobs, func(a, b idJob) int { return cmp.Compare(a.id, b.id) })
	sized := proto.MarshalOptions{Deterministic: true, UseCachedSize: true}
	for _, ij := range jobs {
		j := ij.j
		buf = protowire.AppendTag(buf, snapshotJobsField, protowire.BytesType)
		buf = protowire.AppendVarint(buf, uint64(opts.Size(j)))
		if buf, err = sized.MarshalAppend(buf, j); err != nil {
			return written, fmt.Errorf("fsm: snapshot job %d: %w", j.Id, err)
		}
		if len(buf) >= snapshotChunk {
			if err := flush(); err != nil {
				return written, err
			}
		}
	}
	if buf, err = opts.MarshalAppend(buf, tail); err != nil {
		return written, fmt.Errorf("fsm: snapshot: %w", err)
	}
	err = flush()
	return written, err
}

// StateHash is a hex SHA-256 of the snapshot: equal on replicas that have
// applied the same entries.
func (r ConfigReads) StateHash() string {
	f := r.f
	h := sha256.New()
	if _, err := f.Capture().WriteTo(h); err != nil {
		panic(fmt.Sprintf("fsm: state hash: %v", err)) // a hash does not fail
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Restore replaces the state with a snapshot's.
func (f *FSM) Restore(data []byte) error {
	s := &raftv1.Snapshot{}
	if err := proto.Unmarshal(data, s); err != nil {
		return fmt.Errorf("fsm: restore: %w", err)
	}
	n := New()
	n.now = s.NowNs
	n.nextSeq = s.NextQueueSeq
	n.lastIndex = s.LastIndex
	n.lastJobID = s.LastJobId
	if s.Policy != nil {
		n.policy = s.Policy
	}
	n.pix = indexPolicy(n.policy)
	rules, err := policy.LimiterRules(n.policy)
	if err == nil {
		err = n.limits.SetRules(rules)
	}
	if err == nil {
		err = n.limits.Restore(s.Limiter)
	}
	if err != nil {
		return fmt.Errorf("fsm: restore rate limits: %w", err)
	}
	n.nextSweep = s.NextSweepNs
	for _, m := range s.Members {
		n.members[m.Id] = m
	}
	for _, g := range s.GoneWebhooks {
		n.hooks.gone[g] = true
	}
	n.challenges.key = s.ChallengeKey
	for _, sp := range s.SpentChallenges {
		n.challenges.spend(sp)
	}
	n.lines.restore(s.SizeLines, n.policy, n.pix.models)
	n.queue.SetConfig(policy.SchedulerConfig(n.policy))
	if err := n.queue.UnmarshalBinary(s.Queue); err != nil {
		return fmt.Errorf("fsm: restore the queue: %w", err)
	}
	for _, j := range s.Jobs {
		if storedFirst(j) {
			j.Transitions = slices.Clip(j.Transitions[1:])
			if len(j.Transitions) == 0 {
				j.Transitions = nil
			}
		}
		n.jobs[j.Id] = j
		n.tenantJobs(j.Tenant, j.Id)
		if k := j.Spec.GetIdempotencyKey(); k != "" {
			n.idem[idemKey{j.Tenant, k}] = j.Id
		}
		n.counts[j.State]++
		if _, ok := n.hooks.hooked[j.Id]; !ok && slices.ContainsFunc(j.Deliveries, func(d *raftv1.Delivery) bool { return d.State == DeliveryPending }) {
			n.hooks.hooked[j.Id] = struct{}{}
		}
		switch j.State {
		case sluicev1.JobState_JOB_STATE_QUEUED:
			if j.ReadyNs > n.now {
				n.timers = append(n.timers, timer{at: j.ReadyNs, job: j.Id, kind: timerReady})
			}
			if j.QueueDeadlineNs != 0 {
				n.timers = append(n.timers, timer{at: j.QueueDeadlineNs, job: j.Id, kind: timerQueueDeadline})
			}
		case sluicev1.JobState_JOB_STATE_RUNNING:
			n.running[j.Id] = struct{}{}
			if j.RunDeadlineNs != 0 {
				n.timers = append(n.timers, timer{at: j.RunDeadlineNs, job: j.Id, kind: timerRunDeadline})
			}
		default:
			if isTerminal(j.State) {
				n.timers = append(n.timers, timer{at: j.FinishedNs + int64(n.pix.retention), job: j.Id, kind: timerRetention})
			}
		}
	}
	n.timers.init()

	f.now, f.lastIndex, f.lastJobID, f.nextSeq, f.policy = n.now, n.lastIndex, n.lastJobID, n.nextSeq, n.policy
	f.jobs, f.byTenant, f.idem, f.queue, f.timers, f.counts, f.pix = n.jobs, n.byTenant, n.idem, n.queue, n.timers, n.counts, n.pix
	f.running = n.running
	f.limits, f.nextSweep = n.limits, n.nextSweep
	f.members, f.hooks = n.members, n.hooks
	f.challenges = n.challenges
	f.lines = n.lines
	return nil
}
