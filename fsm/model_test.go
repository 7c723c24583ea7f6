package fsm

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"pgregory.net/rapid"

	"github.com/sluicehq/sluice/policy"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// The job lifecycle as the rules in fsm.go state it, kept as plain values:
// no queue, no timers, no protobuf. The test below drives the real FSM and
// this model with the same commands and compares them after every step.

const (
	mQueued       = sluicev1.JobState_JOB_STATE_QUEUED
	mRunning      = sluicev1.JobState_JOB_STATE_RUNNING
	mSucceeded    = sluicev1.JobState_JOB_STATE_SUCCEEDED
	mFailed       = sluicev1.JobState_JOB_STATE_FAILED
	mCanceled     = sluicev1.JobState_JOB_STATE_CANCELED
	mExpired      = sluicev1.JobState_JOB_STATE_EXPIRED
	mDeadLettered = sluicev1.JobState_JOB_STATE_DEAD_LETTERED
)

// modelRetention is short enough that runs of the test see finished jobs
// forgotten, long enough that most of them are still there to check.
const modelRetention = 3 * time.Minute

type modelJob struct {
	id     uint64
	tenant string
	key    string // idempotency key, "" for none

	state       sluicev1.JobState
	attempt     int32 // attempts started so far
	maxAttempts int32
	perRedrive  int32 // attempts a redrive adds: the spec's, else the default

	queueTimeout int64 // 0: none
	runTimeout   int64

	readyAt       int64 // while queued
	queueDeadline int64 // while queued; 0: none
	runDeadline   int64 // while running
	executor      string
	finishedAt    int64 // while terminal

	output      string // tag of the accepted Complete; "" for none
	errCode     string // code of the error that ended the job
	transitions int
	redrives    int

	model     string // the model it runs: the fallback when a rule degraded it
	declared  int64  // the spec's declared cost
	startedAt int64  // while running
	ranNs     int64  // time its attempts ran, summed as each ended
}

type lifecycleModel struct {
	now       int64
	defaultQT int64
	backoff   func(id uint64, attempt int32) int64
	jobs      map[uint64]*modelJob // jobs the state machine still holds
	idem      map[[2]string]uint64 // (tenant, key) → first job
	// ledger, when the policy has rate-limit rules, admits submissions and
	// settles their charges (settlement_model_test.go); nil without rules.
	ledger *ledger
}

// outcome is what the model expects a command to return. noop: the
// command must leave the state exactly as it was (if time did not move).
type outcome struct {
	id    uint64
	dedup bool
	err   error
	noop  bool
}

func modelTerminal(s sluicev1.JobState) bool { return s != mQueued && s != mRunning }

// advance moves the clock and fires, for each job, the one deadline that
// is due: a queued job past its queue deadline expires, a running attempt
// past its run deadline fails retryably, a finished job past its
// retention is forgotten. Each touches only its own job, but the charges
// they settle share the rate limits' state, so they fire in the order of
// their due times (then job ids), as the state machine's timers do.
func (m *lifecycleModel) advance(at int64) {
	m.now = max(m.now, at)
	type due struct {
		at int64
		j  *modelJob
	}
	var fire []due
	for _, j := range m.jobs {
		switch {
		case j.state == mQueued && j.queueDeadline != 0 && j.queueDeadline <= m.now:
			fire = append(fire, due{j.queueDeadline, j})
		case j.state == mRunning && j.runDeadline <= m.now:
			fire = append(fire, due{j.runDeadline, j})
		case modelTerminal(j.state) && j.finishedAt+int64(modelRetention) <= m.now:
			fire = append(fire, due{j.finishedAt + int64(modelRetention), j})
		}
	}
	slices.SortFunc(fire, func(a, b due) int { return cmp.Or(cmp.Compare(a.at, b.at), cmp.Compare(a.j.id, b.j.id)) })
	for _, d := range fire {
		switch j := d.j; j.state {
		case mQueued:
			m.finish(j, mExpired, "queue_timeout", 0)
		case mRunning:
			m.retry(j, "run_timeout", true)
		default:
			delete(m.jobs, j.id)
			if k := [2]string{j.tenant, j.key}; j.key != "" && m.idem[k] == j.id {
				delete(m.idem, k)
			}
		}
	}
}

var modelDefaultDuration = map[string]time.Duration{"sdxl": 2 * time.Second, "llama-8b": 500 * time.Millisecond}

func (m *lifecycleModel) submit(id uint64, c *raftv1.Submit) outcome {
	tenant, spec := c.Tenant, c.Spec
	if k := spec.IdempotencyKey; k != "" {
		if first, ok := m.idem[[2]string{tenant, k}]; ok {
			return outcome{id: first, dedup: true, noop: true}
		}
	}
	ready := m.now
	model := spec.Model
	if m.ledger != nil {
		adm := m.ledger.admit(id, c, m.now)
		if adm.err != nil {
			return outcome{err: adm.err, noop: true}
		}
		ready, model = adm.ready, adm.model
	}
	j := &modelJob{id: id, tenant: tenant, key: spec.IdempotencyKey, maxAttempts: spec.MaxAttempts,
		model: model, declared: spec.DeclaredCost}
	if j.maxAttempts <= 0 {
		j.maxAttempts = policy.DefaultMaxAttempts // the test policy sets no default
	}
	j.perRedrive = j.maxAttempts
	j.queueTimeout = int64(spec.GetQueueTimeout().AsDuration())
	if j.queueTimeout <= 0 {
		j.queueTimeout = m.defaultQT
	}
	j.runTimeout = int64(spec.GetRunTimeout().AsDuration())
	if j.runTimeout <= 0 {
		// The model's run timeout: 10× its default duration, at least policy.MinRunTimeout.
		j.runTimeout = int64(max(10*modelDefaultDuration[model], policy.MinRunTimeout))
	}
	if nb := spec.GetNotBefore(); nb != nil {
		ready = max(ready, nb.AsTime().UnixNano())
	}
	m.jobs[id] = j
	if j.key != "" {
		m.idem[[2]string{tenant, j.key}] = id
	}
	m.enqueue(j, ready)
	return outcome{id: id}
}

func (m *lifecycleModel) enqueue(j *modelJob, ready int64) {
	j.state = mQueued
	j.readyAt = ready
	j.queueDeadline = 0
	if j.queueTimeout > 0 {
		j.queueDeadline = ready + j.queueTimeout
	}
	j.runDeadline = 0
	j.executor = ""
	j.finishedAt = 0
	j.transitions++
}

// finish ends a job; reported is the cost its executor reported (0: none).
func (m *lifecycleModel) finish(j *modelJob, s sluicev1.JobState, code string, reported int64) {
	m.stopRunning(j)
	if m.ledger != nil {
		m.ledger.settle(j, reported, m.now)
	}
	j.state = s
	j.errCode = code
	j.finishedAt = m.now
	j.queueDeadline, j.runDeadline = 0, 0
	j.transitions++
}

// retry ends a failed attempt: queued again (after the backoff, if asked)
// while attempts remain, else dead-lettered.
func (m *lifecycleModel) retry(j *modelJob, code string, backoff bool) {
	if j.attempt >= j.maxAttempts {
		m.finish(j, mDeadLettered, code, 0)
		return
	}
	m.stopRunning(j)
	j.errCode = code
	ready := m.now
	if backoff {
		ready += m.backoff(j.id, j.attempt)
	}
	m.enqueue(j, ready)
}

func (m *lifecycleModel) assign(id uint64, attempt int32, executor string) outcome {
	j, ok := m.jobs[id]
	if !ok {
		return outcome{id: id, err: ErrNotFound, noop: true}
	}
	if j.state != mQueued || j.readyAt > m.now || attempt != j.attempt+1 {
		return outcome{id: id, err: ErrNotQueued, noop: true}
	}
	j.state = mRunning
	j.attempt = attempt
	j.startedAt = m.now
	j.executor = executor
	j.queueDeadline = 0
	j.runDeadline = m.now + j.runTimeout
	j.transitions++
	return outcome{id: id}
}

// reported finds the running attempt a report is about.
func (m *lifecycleModel) reported(id uint64, attempt int32) (*modelJob, outcome) {
	j, ok := m.jobs[id]
	if !ok {
		return nil, outcome{id: id, err: ErrNotFound, noop: true}
	}
	if j.state != mRunning || j.attempt != attempt {
		return nil, outcome{id: id, err: ErrStale, noop: true}
	}
	return j, outcome{id: id}
}

// stopRunning adds a running attempt's time to the job's total.
func (m *lifecycleModel) stopRunning(j *modelJob) {
	if j.state == mRunning {
		j.ranNs += max(0, m.now-j.startedAt)
	}
}

func (m *lifecycleModel) complete(id uint64, attempt int32, tag string, cost int64) outcome {
	j, o := m.reported(id, attempt)
	if j != nil {
		j.output = tag
		m.finish(j, mSucceeded, "", cost)
	}
	return o
}

func (m *lifecycleModel) fail(id uint64, attempt int32, retryable bool, code string) outcome {
	j, o := m.reported(id, attempt)
	switch {
	case j == nil:
	case retryable:
		m.retry(j, code, true)
	default:
		m.finish(j, mFailed, code, 0)
	}
	return o
}

// requeue is a lost lease: the attempt counts, but there is no backoff.
func (m *lifecycleModel) requeue(id uint64, attempt int32) outcome {
	j, o := m.reported(id, attempt)
	if j != nil {
		m.retry(j, "executor_lost", false)
	}
	return o
}

func (m *lifecycleModel) cancel(id uint64, tenant string) outcome {
	j, ok := m.jobs[id]
	if !ok || j.tenant != tenant {
		return outcome{id: id, err: ErrNotFound, noop: true}
	}
	switch j.state {
	case mQueued, mRunning:
		m.finish(j, mCanceled, "canceled", 0)
		return outcome{id: id}
	case mCanceled:
		return outcome{id: id, noop: true}
	}
	return outcome{id: id, err: ErrFinished, noop: true}
}

// redrive queues dead-lettered jobs again with as many attempts again as
// they had at first; their attempt count stays.
func (m *lifecycleModel) redrive(ids []uint64) outcome {
	n := 0
	for _, id := range ids {
		j, ok := m.jobs[id]
		if !ok || j.state != mDeadLettered {
			continue
		}
		j.maxAttempts = j.attempt + j.perRedrive
		j.redrives++
		m.enqueue(j, m.now)
		n++
	}
	if n == 0 && len(ids) > 0 {
		return outcome{err: ErrNotFound, noop: true}
	}
	return outcome{}
}

func (m *lifecycleModel) count(s sluicev1.JobState) int64 {
	var n int64
	for _, j := range m.jobs {
		if j.state == s {
			n++
		}
	}
	return n
}

// pick draws one of the model's jobs in the given states (any if none),
// skipping the action when there is none.
func (m *lifecycleModel) pick(t *rapid.T, label string, states ...sluicev1.JobState) *modelJob {
	var ids []uint64
	for id, j := range m.jobs {
		if len(states) == 0 || slices.Contains(states, j.state) {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		t.Skip("no job to " + label)
	}
	slices.Sort(ids)
	return m.jobs[rapid.SampledFrom(ids).Draw(t, label)]
}

// lifecycle drives the real FSM and the model together.
type lifecycle struct {
	f *FSM // the leader's replica
	// follower is the replica that led before the last leader change; it
	// applies the next few entries too and must stay byte-identical.
	follower  *FSM
	following int // checks left before the follower is dropped
	index     uint64
	m         *lifecycleModel
	ids       []uint64 // every job ever created, forgotten ones too
	seen      map[uint64]seenJob
	tags      int
	captures  []takenCapture // not yet encoded, on either replica
}

// takenCapture is a Capture and the snapshot taken at the same point.
type takenCapture struct {
	c    *Capture
	want []byte
}

// seenJob is what a job looked like at the last check.
type seenJob struct {
	facts    jobFacts
	redrives int
}

// jobFacts are the fields of a record that a finished job must keep,
// compared as one value (proto.Equal on every job at every step is slow
// under -race).
type jobFacts struct {
	state                        sluicev1.JobState
	attempt, maxAttempts         int32
	finishedNs, startedNs, ranNs int64
	transitions                  int
	executor, output             string
	errCode, errMessage          string
	reservedCost, settledCost    int64
	chargeClosed                 bool
}

func factsOf(r *raftv1.JobRecord) jobFacts {
	return jobFacts{
		state: r.State, attempt: r.Attempt, maxAttempts: r.MaxAttempts,
		finishedNs: r.FinishedNs, startedNs: r.StartedNs, ranNs: r.RanNs,
		transitions: len(Transitions(r)), executor: r.Executor,
		output:  r.GetOutput().GetFields()["tag"].GetStringValue(),
		errCode: r.GetError().GetCode(), errMessage: r.GetError().GetMessage(),
		reservedCost: JobAdmission(r).GetReservedCost(), settledCost: JobAdmission(r).GetSettledCost(),
		chargeClosed: r.GetCharge().GetClosed(),
	}
}

var modelExecutors = []string{"e1", "e2", "e3", "e4"}

// stamp is the time the leader puts on the next entry: mostly now, at
// times later, and at times earlier (a new leader whose clock lags).
func (l *lifecycle) stamp(t *rapid.T) int64 {
	return l.m.now + rapid.SampledFrom([]int64{0, 0, 0, -2 * sec, sec / 2, 3 * sec, 20 * sec}).Draw(t, "dt")
}

// apply commits one entry on every replica, checks the result against the
// model's expectation (predict runs after the model's clock has moved to
// the entry's time), and that a refused or repeated command changed
// nothing.
func (l *lifecycle) apply(t *rapid.T, typ CommandType, at int64, msg proto.Message, predict func() outcome) Result {
	t.Helper()
	still := at <= l.m.now
	var before []byte
	if still {
		before = withoutIndex(t, l.f.Snapshot())
	}
	l.index++
	l.m.advance(at)
	want := predict()
	entry := MustEncode(typ, at, msg)
	got := l.f.Apply(l.index, entry)
	if l.follower != nil {
		fr := l.follower.Apply(l.index, entry)
		if fr.JobID != got.JobID || fr.Deduplicated != got.Deduplicated || fmt.Sprint(fr.Err) != fmt.Sprint(got.Err) {
			t.Fatalf("%v: leader got %+v, follower %+v", typ, got, fr)
		}
	}
	var wantLimit, gotLimit *LimitError
	switch {
	case want.err == nil && got.Err != nil:
		t.Fatalf("%v %v: unexpected error %v", typ, msg, got.Err)
	case errors.As(want.err, &wantLimit):
		if !errors.As(got.Err, &gotLimit) || gotLimit.Rule != wantLimit.Rule {
			t.Fatalf("%v %v: error %v, want a refusal by rule %q", typ, msg, got.Err, wantLimit.Rule)
		}
	case want.err != nil && !errors.Is(got.Err, want.err):
		t.Fatalf("%v %v: error %v, want %v", typ, msg, got.Err, want.err)
	case typ == CmdSubmit && (got.JobID != want.id || got.Deduplicated != want.dedup):
		t.Fatalf("submit: job %d dedup %v, want job %d dedup %v", got.JobID, got.Deduplicated, want.id, want.dedup)
	}
	if still && want.noop {
		if after := withoutIndex(t, l.f.Snapshot()); !bytes.Equal(before, after) {
			t.Fatalf("%v %v (%v) changed the state", typ, msg, got.Err)
		}
	}
	return got
}

// withoutIndex is a snapshot without its last log index, the one field
// every entry changes. It walks the top-level fields rather than decoding:
// that is all it needs, and it keeps the test fast under -race.
func withoutIndex(t *rapid.T, snap []byte) []byte {
	lastIndex := (&raftv1.Snapshot{}).ProtoReflect().Descriptor().Fields().ByName("last_index").Number()
	out := make([]byte, 0, len(snap))
	for b := snap; len(b) > 0; {
		num, _, n := protowire.ConsumeField(b)
		if n < 0 {
			t.Fatalf("snapshot: %v", protowire.ParseError(n))
		}
		if num != lastIndex {
			out = append(out, b[:n]...)
		}
		b = b[n:]
	}
	return out
}

func (l *lifecycle) submit(t *rapid.T) {
	tenant := rapid.SampledFrom([]string{"alice", "bob"}).Draw(t, "tenant")
	spec := randomSpec(t, l.m.now)
	c := &raftv1.Submit{Tenant: tenant, Spec: spec}
	if l.m.ledger != nil {
		l.m.ledger.draw(t, c)
	}
	r := l.apply(t, CmdSubmit, l.stamp(t), c, func() outcome {
		return l.m.submit(l.index, c)
	})
	if r.Err == nil && !r.Deduplicated {
		l.ids = append(l.ids, r.JobID)
	}
}

// dispatch asks the real placement for free 1-GPU executors and commits
// what it proposes.
func (l *lifecycle) dispatch(t *rapid.T) {
	busy := map[string]bool{}
	for _, j := range l.m.jobs {
		if j.state == mRunning {
			busy[j.executor] = true
		}
	}
	var free []string
	for _, e := range modelExecutors {
		if !busy[e] {
			free = append(free, e)
		}
	}
	free = rapid.Permutation(free).Draw(t, "executors")
	free = free[:rapid.IntRange(0, len(free)).Draw(t, "free")]
	slots := oneGPU(free...)
	at := l.m.now + rapid.SampledFrom([]int64{0, 0, sec, 5 * sec}).Draw(t, "dispatch_dt")
	as := l.f.Dispatch(at, slots)
	if l.follower != nil {
		fas := l.follower.Dispatch(at, slots)
		if len(fas) != len(as) || !slices.EqualFunc(as, fas, func(a, b *raftv1.Assign) bool { return proto.Equal(a, b) }) {
			t.Fatalf("leader dispatches %v, follower %v", as, fas)
		}
	}
	// Every slot takes one ready job while ready jobs remain.
	ready := 0
	for _, j := range l.m.jobs {
		if j.state == mQueued && j.readyAt <= at {
			ready++
		}
	}
	if len(as) != min(len(slots), ready) {
		t.Fatalf("dispatch at %d placed %d jobs on %d free slots with %d ready", at, len(as), len(slots), ready)
	}
	jobs, execs := map[uint64]bool{}, map[string]bool{}
	for _, a := range as {
		j, ok := l.m.jobs[a.JobId]
		switch {
		case !ok || j.state != mQueued || j.readyAt > at:
			t.Fatalf("dispatch placed job %d that is not queued and ready at %d", a.JobId, at)
		case a.Attempt != j.attempt+1:
			t.Fatalf("dispatch gave job %d attempt %d after %d", a.JobId, a.Attempt, j.attempt)
		case jobs[a.JobId] || execs[a.Executor] || !slices.Contains(free, a.Executor):
			t.Fatalf("dispatch placed twice or on a slot not offered: %v on %v", as, free)
		}
		jobs[a.JobId], execs[a.Executor] = true, true
	}
	for _, a := range as {
		l.apply(t, CmdAssign, at, a, func() outcome { return l.m.assign(a.JobId, a.Attempt, a.Executor) })
	}
}

// staleAssign commits an Assign that must be refused: a wrong attempt, or
// a job that is not queued and ready, or one that never existed.
func (l *lifecycle) staleAssign(t *rapid.T) {
	id, attempt := uint64(1<<40), int32(1)
	if len(l.m.jobs) > 0 && rapid.IntRange(0, 5).Draw(t, "unknown") > 0 {
		j := l.m.pick(t, "assign")
		id = j.id
		if j.state == mQueued && j.readyAt <= l.m.now {
			attempt = j.attempt + rapid.SampledFrom([]int32{0, 2, 3}).Draw(t, "wrong_attempt")
		} else {
			attempt = j.attempt + rapid.Int32Range(0, 2).Draw(t, "attempt")
		}
	}
	r := l.apply(t, CmdAssign, l.m.now, &raftv1.Assign{JobId: id, Attempt: attempt, Executor: "stale"}, func() outcome {
		return l.m.assign(id, attempt, "stale")
	})
	if r.Err == nil {
		t.Fatalf("stale assign of job %d attempt %d accepted", id, attempt)
	}
}

func (l *lifecycle) outputTag() string {
	l.tags++
	return fmt.Sprintf("out-%d", l.tags)
}

func tagged(tag string) *structpb.Struct {
	return &structpb.Struct{Fields: map[string]*structpb.Value{"tag": structpb.NewStringValue(tag)}}
}

// report is the executor's answer for the running attempt: success, a
// retryable failure, or a final one. It may arrive after the run deadline.
func (l *lifecycle) report(t *rapid.T) {
	j := l.m.pick(t, "report", mRunning)
	id, attempt := j.id, j.attempt
	at := l.stamp(t)
	switch rapid.IntRange(0, 2).Draw(t, "outcome") {
	case 0:
		tag := l.outputTag()
		// The real cost the executor reports: none, small, large, or
		// garbage (negative, above the limiter's clamp).
		cost := rapid.SampledFrom([]int64{0, 0, 1, 300, 2500, 40000, -7, 1 << 62}).Draw(t, "reported_cost")
		r := l.apply(t, CmdComplete, at, &raftv1.Complete{JobId: id, Attempt: attempt, Output: tagged(tag), Cost: cost}, func() outcome {
			return l.m.complete(id, attempt, tag, cost)
		})
		if r.Err == nil {
			// The output is recorded once: a repeated report is refused.
			again := l.outputTag()
			l.apply(t, CmdComplete, l.m.now, &raftv1.Complete{JobId: id, Attempt: attempt, Output: tagged(again), Cost: 99}, func() outcome {
				return l.m.complete(id, attempt, again, 99)
			})
		}
	default:
		retryable := rapid.Bool().Draw(t, "retryable")
		code := rapid.SampledFrom([]string{"oom", "bad_input"}).Draw(t, "code")
		l.apply(t, CmdFail, at, &raftv1.Fail{JobId: id, Attempt: attempt, Retryable: retryable, Error: &sluicev1.JobError{Code: code}}, func() outcome {
			return l.m.fail(id, attempt, retryable, code)
		})
	}
}

// leaseExpiry is the leader giving back an attempt no executor holds.
func (l *lifecycle) leaseExpiry(t *rapid.T) {
	j := l.m.pick(t, "requeue", mRunning)
	id, attempt := j.id, j.attempt
	l.apply(t, CmdRequeue, l.stamp(t), &raftv1.Requeue{JobId: id, Attempt: attempt, Reason: "lease expired"}, func() outcome {
		return l.m.requeue(id, attempt)
	})
}

// lateReport is a report from an attempt that is no longer running: it is
// refused as stale and changes nothing.
func (l *lifecycle) lateReport(t *rapid.T) {
	var ids []uint64
	for id, j := range l.m.jobs {
		if j.attempt > 1 || (j.attempt == 1 && j.state != mRunning) {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		t.Skip("no attempt has ended")
	}
	slices.Sort(ids)
	j := l.m.jobs[rapid.SampledFrom(ids).Draw(t, "late")]
	id, last := j.id, j.attempt
	if j.state == mRunning {
		last--
	}
	attempt := rapid.Int32Range(1, last).Draw(t, "old_attempt")
	var typ CommandType
	var msg proto.Message
	var predict func() outcome
	switch rapid.IntRange(0, 2).Draw(t, "late_kind") {
	case 0:
		tag := l.outputTag()
		typ, msg = CmdComplete, &raftv1.Complete{JobId: id, Attempt: attempt, Output: tagged(tag)}
		predict = func() outcome { return l.m.complete(id, attempt, tag, 5) }
	case 1:
		typ, msg = CmdFail, &raftv1.Fail{JobId: id, Attempt: attempt, Retryable: true, Error: &sluicev1.JobError{Code: "oom"}}
		predict = func() outcome { return l.m.fail(id, attempt, true, "oom") }
	default:
		typ, msg = CmdRequeue, &raftv1.Requeue{JobId: id, Attempt: attempt}
		predict = func() outcome { return l.m.requeue(id, attempt) }
	}
	if r := l.apply(t, typ, l.m.now, msg, predict); !errors.Is(r.Err, ErrStale) {
		t.Fatalf("late %v of job %d attempt %d: %v, want ErrStale", typ, id, attempt, r.Err)
	}
}

func (l *lifecycle) cancel(t *rapid.T) {
	var id uint64
	switch rapid.IntRange(0, 5).Draw(t, "cancel_what") {
	case 0:
		id = 1 << 40 // never existed
	case 1:
		if len(l.ids) == 0 {
			t.Skip("no job yet")
		}
		id = rapid.SampledFrom(l.ids).Draw(t, "cancel_any") // forgotten ones too
	default:
		id = l.m.pick(t, "cancel").id
	}
	tenant := rapid.SampledFrom([]string{"alice", "bob"}).Draw(t, "by")
	if j, ok := l.m.jobs[id]; ok && rapid.IntRange(0, 3).Draw(t, "by_owner") > 0 {
		tenant = j.tenant
	}
	l.apply(t, CmdCancel, l.stamp(t), &raftv1.Cancel{JobId: id, Tenant: tenant}, func() outcome {
		return l.m.cancel(id, tenant)
	})
}

func (l *lifecycle) redrive(t *rapid.T) {
	var ids []uint64
	for id, j := range l.m.jobs {
		if j.state == mDeadLettered && rapid.Bool().Draw(t, "redrive") {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	if len(l.ids) > 0 && rapid.IntRange(0, 3).Draw(t, "other") == 0 {
		ids = append(ids, rapid.SampledFrom(l.ids).Draw(t, "other_id"))
	}
	if len(ids) == 0 {
		t.Skip("nothing to redrive")
	}
	l.apply(t, CmdRedrive, l.stamp(t), &raftv1.Redrive{JobIds: ids, Reason: "test"}, func() outcome {
		return l.m.redrive(ids)
	})
}

// tick is time passing with nothing else happening: deadlines fire.
func (l *lifecycle) tick(t *rapid.T) {
	dt := rapid.SampledFrom([]time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second, 61 * time.Second, 4 * time.Minute}).Draw(t, "tick")
	l.apply(t, CmdTick, l.m.now+int64(dt), &raftv1.Tick{}, func() outcome { return outcome{} })
}

// leaderChange moves leadership to a replica restored from the leader's
// snapshot; the old leader follows from then on.
func (l *lifecycle) leaderChange(t *rapid.T) {
	snap := l.f.Snapshot()
	fresh := New()
	if err := fresh.Restore(snap); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if !bytes.Equal(fresh.Snapshot(), snap) {
		t.Fatalf("the restored replica encodes differently")
	}
	l.f, l.follower = fresh, l.f
	l.following = rapid.IntRange(1, 8).Draw(t, "follow")
}

// capture takes a Capture of the leader's state; encodeCapture encodes one
// later, after more commands (and leader changes) have been applied, and
// checks that it gives the bytes the state had when it was taken: nothing
// the capture shares was changed in place.
func (l *lifecycle) capture(t *rapid.T) {
	l.captures = append(l.captures, takenCapture{l.f.Capture(), l.f.Snapshot()})
}

func (l *lifecycle) encodeCapture(t *rapid.T) {
	if len(l.captures) == 0 {
		return
	}
	i := rapid.IntRange(0, len(l.captures)-1).Draw(t, "capture")
	c := l.captures[i]
	l.captures = slices.Delete(l.captures, i, i+1)
	if !bytes.Equal(c.c.Encode(), c.want) {
		t.Fatalf("a capture encodes to other bytes than the state had when it was taken")
	}
}

// check compares the state machine with the model.
func (l *lifecycle) check(t *rapid.T) {
	f, m := l.f, l.m
	if f.Reads().Now() != m.now {
		t.Fatalf("clock %d, model %d", f.Reads().Now(), m.now)
	}
	var wantRunning []RunningJob
	earliest := int64(-1) // the model's next deadline, -1 for none
	due := func(at int64) {
		if earliest < 0 || at < earliest {
			earliest = at
		}
	}
	held := 0
	for _, tenant := range []string{"alice", "bob"} {
		views, _ := f.Reads().ListJobs(tenant, nil, 0, len(l.ids)+1)
		var got, want []uint64
		for _, v := range views {
			got = append(got, v.Job.Id)
		}
		for _, id := range slices.Backward(l.ids) {
			if j, ok := m.jobs[id]; ok && j.tenant == tenant {
				want = append(want, id)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("ListJobs(%s) = %v, model %v", tenant, got, want)
		}
		held += len(views)
		for _, v := range views {
			j := m.jobs[v.Job.Id]
			l.checkJob(t, j, v)
			switch j.state {
			case mQueued:
				if j.queueDeadline != 0 {
					due(j.queueDeadline)
				}
			case mRunning:
				wantRunning = append(wantRunning, RunningJob{ID: j.id, Attempt: j.attempt, Executor: j.executor})
				due(j.runDeadline)
			default:
				due(j.finishedAt + int64(modelRetention))
			}
		}
		for _, key := range []string{"k1", "k2"} {
			got, ok := f.Reads().IdempotentJob(tenant, key)
			want, wok := m.idem[[2]string{tenant, key}]
			if ok != wok || got != want {
				t.Fatalf("IdempotentJob(%s, %s) = %d %v, model %d %v", tenant, key, got, ok, want, wok)
			}
		}
	}
	if held != len(m.jobs) {
		t.Fatalf("the tenants list %d jobs, the model holds %d", held, len(m.jobs))
	}
	if m.ledger != nil {
		m.ledger.check(t, f, m.now)
	}
	for _, id := range l.ids {
		if _, ok := m.jobs[id]; !ok {
			if _, ok := f.Reads().Job(id); ok {
				t.Fatalf("job %d is held past its retention", id)
			}
		}
	}
	slices.SortFunc(wantRunning, func(a, b RunningJob) int { return cmp.Compare(a.ID, b.ID) })
	for s := sluicev1.JobState(0); s <= mDeadLettered; s++ {
		if got, want := f.Reads().Count(s), m.count(s); got != want {
			t.Fatalf("Count(%s) = %d, model %d", StateName(s), got, want)
		}
	}
	if got, want := int64(f.Reads().QueueLen()), m.count(mQueued); got != want {
		t.Fatalf("QueueLen = %d, model has %d queued", got, want)
	}
	if got := f.Reads().Running(); !slices.Equal(got, wantRunning) {
		t.Fatalf("Running = %v, model %v", got, wantRunning)
	}
	// Timers are not removed early, so the next one may be a stale timer
	// before the model's next deadline, never after it. (The doc comment
	// also promises the time a queued job becomes ready; NextDeadline
	// reports timers only, see the report on this test, so ready times are
	// not checked.)
	dl, ok := f.Reads().NextDeadline()
	if ok && dl <= m.now {
		t.Fatalf("NextDeadline %d is not after now %d: a due timer did not fire", dl, m.now)
	}
	if earliest >= 0 && (!ok || dl > earliest) {
		t.Fatalf("NextDeadline = %d %v, model's next deadline %d", dl, ok, earliest)
	}
	if l.follower != nil {
		if !bytes.Equal(f.Snapshot(), l.follower.Snapshot()) {
			t.Fatalf("leader and follower differ after the same entries")
		}
		if l.following--; l.following == 0 {
			l.follower = nil
		}
	}
}

func (l *lifecycle) checkJob(t *rapid.T, j *modelJob, v JobView) {
	r := v.Job
	if r.State != j.state || r.Attempt != j.attempt || r.MaxAttempts != j.maxAttempts || r.Tenant != j.tenant {
		t.Fatalf("job %d: %s attempt %d/%d of %s, model %s attempt %d/%d of %s", j.id,
			StateName(r.State), r.Attempt, r.MaxAttempts, r.Tenant, StateName(j.state), j.attempt, j.maxAttempts, j.tenant)
	}
	if (v.Position > 0) != (j.state == mQueued) {
		t.Fatalf("job %d %s has queue position %d", j.id, StateName(j.state), v.Position)
	}
	if r.QueueDeadlineNs != j.queueDeadline || r.RunDeadlineNs != j.runDeadline || r.FinishedNs != j.finishedAt {
		t.Fatalf("job %d %s: deadlines queue %d run %d finished %d, model %d %d %d", j.id, StateName(j.state),
			r.QueueDeadlineNs, r.RunDeadlineNs, r.FinishedNs, j.queueDeadline, j.runDeadline, j.finishedAt)
	}
	switch j.state {
	case mQueued:
		if r.ReadyNs != j.readyAt || r.Executor != "" {
			t.Fatalf("job %d queued: ready %d executor %q, model ready %d", j.id, r.ReadyNs, r.Executor, j.readyAt)
		}
	case mRunning:
		if r.Executor != j.executor {
			t.Fatalf("job %d runs on %q, model %q", j.id, r.Executor, j.executor)
		}
	default:
		if r.GetError().GetCode() != j.errCode {
			t.Fatalf("job %d %s with error %q, model %q", j.id, StateName(j.state), r.GetError().GetCode(), j.errCode)
		}
	}
	if r.Spec.GetModel() != j.model {
		t.Fatalf("job %d runs model %q, model %q", j.id, r.Spec.GetModel(), j.model)
	}
	if l.m.ledger != nil {
		l.m.ledger.checkJob(t, j, r)
	}
	if got := r.GetOutput().GetFields()["tag"].GetStringValue(); got != j.output {
		t.Fatalf("job %d output %q, model %q", j.id, got, j.output)
	}
	if ts := Transitions(r); len(ts) != j.transitions || ts[len(ts)-1].State != r.State || ts[len(ts)-1].Attempt != r.Attempt {
		t.Fatalf("job %d: transitions %v, model %d ending %s", j.id, ts, j.transitions, StateName(j.state))
	}
	now := factsOf(r)
	if prev, ok := l.seen[j.id]; ok {
		if now.attempt < prev.facts.attempt {
			t.Fatalf("job %d attempt went from %d back to %d", j.id, prev.facts.attempt, now.attempt)
		}
		// A finished job never changes again; only a redrive brings a
		// dead-lettered one back.
		if modelTerminal(prev.facts.state) && prev.redrives == j.redrives && now != prev.facts {
			t.Fatalf("finished job %d changed:\nwas %+v\nnow %+v", j.id, prev.facts, now)
		}
	}
	l.seen[j.id] = seenJob{facts: now, redrives: j.redrives}
}

// TestJobLifecycleMatchesModel drives the real state machine (submit,
// dispatch and assign, reports, late reports, lease expiry, cancel,
// redrive, time passing, leader changes) and a plain model of the job
// lifecycle with the same commands: every job's state and attempt, the
// counts, the queue and the running set agree after every step; refused
// and stale commands change nothing; finished jobs never change; attempt
// numbers only grow.
func TestJobLifecycleMatchesModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		newLifecycle(t, 1000*sec, testPolicy()).run(t, false)
	})
}

// newLifecycle starts a state machine and its model at start with policy p.
func newLifecycle(t *rapid.T, start int64, p *sluicev1.Policy) *lifecycle {
	p.Defaults.JobRetention = durationpb.New(modelRetention)
	defaultQT := rapid.SampledFrom([]int64{0, 15 * sec}).Draw(t, "default_queue_timeout")
	if defaultQT > 0 {
		p.Defaults.QueueTimeout = durationpb.New(time.Duration(defaultQT))
	}
	l := &lifecycle{f: New(), seen: map[uint64]seenJob{}}
	l.m = &lifecycleModel{
		now:       start,
		defaultQT: defaultQT,
		jobs:      map[uint64]*modelJob{},
		idem:      map[[2]string]uint64{},
	}
	l.m.backoff = func(id uint64, attempt int32) int64 {
		// Exponential from retry_backoff (1s) capped at the default
		// max_backoff, jittered into [d/2, d]: the model takes the
		// FSM's deterministic jitter but checks it is in range.
		d := min(time.Second<<min(attempt-1, 10), policy.DefaultMaxBackoff)
		b := retryBackoff(l.f.policy, id, attempt)
		if b < d/2 || b > d {
			t.Fatalf("Backoff(%d, %d) = %v outside [%v, %v]", id, attempt, b, d/2, d)
		}
		return int64(b)
	}
	l.index++
	if r := l.f.Apply(l.index, MustEncode(CmdSetPolicy, start, &raftv1.SetPolicy{Policy: p})); r.Err != nil {
		t.Fatalf("set policy: %v", r.Err)
	}
	return l
}

// run draws the actions and checks after each; busy doubles the chance of
// submissions, dispatches and reports, for a run with more jobs.
func (l *lifecycle) run(t *rapid.T, busy bool) {
	actions := map[string]func(*rapid.T){
		"submit":        l.submit,
		"dispatch":      l.dispatch,
		"staleAssign":   l.staleAssign,
		"report":        l.report,
		"lateReport":    l.lateReport,
		"leaseExpiry":   l.leaseExpiry,
		"cancel":        l.cancel,
		"redrive":       l.redrive,
		"tick":          l.tick,
		"leaderChange":  l.leaderChange,
		"capture":       l.capture,
		"encodeCapture": l.encodeCapture,
		"":              l.check,
	}
	if busy {
		actions["submit again"], actions["dispatch again"], actions["report again"] = l.submit, l.dispatch, l.report
	}
	// One Repeat is about 30 actions (-rapid.steps); a job needs a
	// dozen or more to use up its attempts and be redriven, so four
	// run in a row on the same state.
	for range 4 {
		t.Repeat(actions)
	}
	for len(l.captures) > 0 {
		l.encodeCapture(t)
	}
}
