package fsm

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"pgregory.net/rapid"

	"github.com/sluicehq/sluice/policy"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

const sec = int64(time.Second)

func testPolicy() *sluicev1.Policy {
	return &sluicev1.Policy{
		Tiers: []*sluicev1.Tier{{Name: "free", Weight: 1}, {Name: "pro", Weight: 4}},
		Tenants: []*sluicev1.Tenant{
			{Name: "alice", Tier: "free", ApiKeySha256: []string{policy.HashKey("dev-alice")}},
			{Name: "bob", Tier: "pro", ApiKeySha256: []string{policy.HashKey("dev-bob")}},
		},
		Models: []*sluicev1.Model{
			{Name: "sdxl", DefaultDuration: durationpb.New(2 * time.Second)},
			{Name: "llama-8b", DefaultDuration: durationpb.New(500 * time.Millisecond)},
		},
		AdminTokenSha256: policy.HashKey("dev-admin"),
		Defaults: &sluicev1.Defaults{
			RetryBackoff: durationpb.New(time.Second),
			JobRetention: durationpb.New(time.Hour),
		},
	}
}

// machine wraps an FSM with a log index counter, as raft would feed it.
type machine struct {
	f     *FSM
	index uint64
}

type fatalf interface{ Fatalf(string, ...any) }

func newMachine(t fatalf) *machine {
	m := &machine{f: New()}
	if r := m.apply(CmdSetPolicy, 0, &raftv1.SetPolicy{Policy: testPolicy()}); r.Err != nil {
		t.Fatalf("set policy: %v", r.Err)
	}
	return m
}

func (m *machine) apply(t CommandType, now int64, msg proto.Message) Result {
	m.index++
	return m.f.Apply(m.index, MustEncode(t, now, msg))
}

func (m *machine) submit(t testing.TB, now int64, tenant string, spec *sluicev1.JobSpec) uint64 {
	t.Helper()
	r := m.apply(CmdSubmit, now, &raftv1.Submit{Tenant: tenant, Spec: spec})
	if r.Err != nil {
		t.Fatalf("submit: %v", r.Err)
	}
	return r.JobID
}

func (m *machine) job(t testing.TB, id uint64) *raftv1.JobRecord {
	t.Helper()
	j, ok := m.f.Reads().Job(id)
	if !ok {
		t.Fatalf("job %d not found", id)
	}
	return j
}

func TestSubmitAssignComplete(t *testing.T) {
	m := newMachine(t)
	in, _ := structpb.NewStruct(map[string]any{"prompt": "a cat"})
	id := m.submit(t, 10*sec, "alice", &sluicev1.JobSpec{Model: "sdxl", Input: in})
	if j := m.job(t, id); j.State != sluicev1.JobState_JOB_STATE_QUEUED || j.Spec.Gpus != 1 || j.MaxAttempts != 3 {
		t.Fatalf("after submit: %v", j)
	}
	if pos, ok := m.f.Reads().Position(id); !ok || pos != 1 {
		t.Fatalf("position = %d, %v; want 1", pos, ok)
	}
	if r := m.apply(CmdAssign, 11*sec, &raftv1.Assign{JobId: id, Executor: "e1", Attempt: 1}); r.Err != nil {
		t.Fatal(r.Err)
	}
	// A second assignment of the same attempt is refused.
	if r := m.apply(CmdAssign, 11*sec, &raftv1.Assign{JobId: id, Executor: "e2", Attempt: 1}); !errors.Is(r.Err, ErrNotQueued) {
		t.Fatalf("double assign: %v", r.Err)
	}
	out, _ := structpb.NewStruct(map[string]any{"image": "x"})
	if r := m.apply(CmdComplete, 13*sec, &raftv1.Complete{JobId: id, Attempt: 1, Output: out}); r.Err != nil {
		t.Fatal(r.Err)
	}
	j := m.job(t, id)
	if j.State != sluicev1.JobState_JOB_STATE_SUCCEEDED || j.Output.Fields["image"].GetStringValue() != "x" || j.FinishedNs != 13*sec {
		t.Fatalf("after complete: %v", j)
	}
	// A late duplicate report changes nothing.
	if r := m.apply(CmdComplete, 14*sec, &raftv1.Complete{JobId: id, Attempt: 1}); !errors.Is(r.Err, ErrStale) {
		t.Fatalf("late complete: %v", r.Err)
	}
	if got := len(Transitions(j)); got != 3 {
		t.Fatalf("transitions = %d, want 3 (queued, running, succeeded)", got)
	}
}

func TestIdempotencyKeyReturnsFirstJob(t *testing.T) {
	m := newMachine(t)
	spec := func() *sluicev1.JobSpec { return &sluicev1.JobSpec{Model: "sdxl", IdempotencyKey: "k1"} }
	a := m.submit(t, sec, "alice", spec())
	r := m.apply(CmdSubmit, 2*sec, &raftv1.Submit{Tenant: "alice", Spec: spec()})
	if r.JobID != a || !r.Deduplicated {
		t.Fatalf("repeat submit = %+v, want job %d deduplicated", r, a)
	}
	// Another tenant's identical key is its own job.
	if b := m.submit(t, 3*sec, "bob", spec()); b == a {
		t.Fatal("bob's key matched alice's job")
	}
}

func TestUnknownModelAndTenantRejected(t *testing.T) {
	m := newMachine(t)
	if r := m.apply(CmdSubmit, sec, &raftv1.Submit{Tenant: "alice", Spec: &sluicev1.JobSpec{Model: "gpt-9"}}); !errors.Is(r.Err, ErrUnknownModel) {
		t.Fatalf("unknown model: %v", r.Err)
	}
	if r := m.apply(CmdSubmit, sec, &raftv1.Submit{Tenant: "mallory", Spec: &sluicev1.JobSpec{Model: "sdxl"}}); !errors.Is(r.Err, ErrUnknownTenant) {
		t.Fatalf("unknown tenant: %v", r.Err)
	}
}

func TestQueueTimeoutExpires(t *testing.T) {
	m := newMachine(t)
	id := m.submit(t, sec, "alice", &sluicev1.JobSpec{Model: "sdxl", QueueTimeout: durationpb.New(5 * time.Second)})
	m.apply(CmdTick, 5*sec, &raftv1.Tick{})
	if j := m.job(t, id); j.State != sluicev1.JobState_JOB_STATE_QUEUED {
		t.Fatalf("expired early: %v", j.State)
	}
	m.apply(CmdTick, 6*sec, &raftv1.Tick{})
	j := m.job(t, id)
	if j.State != sluicev1.JobState_JOB_STATE_EXPIRED || j.Error.GetCode() != "queue_timeout" {
		t.Fatalf("after deadline: %v %v", j.State, j.Error)
	}
	if m.f.Reads().QueueLen() != 0 {
		t.Fatal("expired job still queued")
	}
}

func TestNotBeforeDelaysStart(t *testing.T) {
	m := newMachine(t)
	id := m.submit(t, sec, "alice", &sluicev1.JobSpec{Model: "sdxl", NotBefore: timestamppb.New(time.Unix(0, 10*sec))})
	if r := m.apply(CmdAssign, 5*sec, &raftv1.Assign{JobId: id, Executor: "e", Attempt: 1}); !errors.Is(r.Err, ErrNotQueued) {
		t.Fatalf("assign before not_before: %v", r.Err)
	}
	if r := m.apply(CmdAssign, 10*sec, &raftv1.Assign{JobId: id, Executor: "e", Attempt: 1}); r.Err != nil {
		t.Fatal(r.Err)
	}
}

func TestFailuresRetryWithBackoffThenDeadLetter(t *testing.T) {
	m := newMachine(t)
	id := m.submit(t, sec, "alice", &sluicev1.JobSpec{Model: "sdxl", MaxAttempts: 2})
	now := sec
	for attempt := int32(1); attempt <= 2; attempt++ {
		j := m.job(t, id)
		if j.ReadyNs > now {
			now = j.ReadyNs
		}
		if r := m.apply(CmdAssign, now, &raftv1.Assign{JobId: id, Executor: "e", Attempt: attempt}); r.Err != nil {
			t.Fatalf("assign %d: %v", attempt, r.Err)
		}
		now += sec
		m.apply(CmdFail, now, &raftv1.Fail{JobId: id, Attempt: attempt, Retryable: true, Error: &sluicev1.JobError{Code: "oom", Message: "out of memory"}})
		j = m.job(t, id)
		if attempt == 1 {
			if j.State != sluicev1.JobState_JOB_STATE_QUEUED {
				t.Fatalf("after first failure: %v", j.State)
			}
			if b := j.ReadyNs - now; b < sec/2 || b > sec {
				t.Fatalf("first backoff %v outside [0.5s, 1s]", time.Duration(b))
			}
		}
	}
	j := m.job(t, id)
	if j.State != sluicev1.JobState_JOB_STATE_DEAD_LETTERED || j.Error.GetCode() != "oom" {
		t.Fatalf("after last failure: %v %v", j.State, j.Error)
	}
}

func TestNonRetryableFailureFails(t *testing.T) {
	m := newMachine(t)
	id := m.submit(t, sec, "alice", &sluicev1.JobSpec{Model: "sdxl"})
	m.apply(CmdAssign, sec, &raftv1.Assign{JobId: id, Executor: "e", Attempt: 1})
	m.apply(CmdFail, 2*sec, &raftv1.Fail{JobId: id, Attempt: 1, Error: &sluicev1.JobError{Code: "bad_input", Message: "prompt empty"}})
	if j := m.job(t, id); j.State != sluicev1.JobState_JOB_STATE_FAILED {
		t.Fatalf("state %v, want FAILED", j.State)
	}
}

func TestRunTimeoutRetries(t *testing.T) {
	m := newMachine(t)
	id := m.submit(t, sec, "alice", &sluicev1.JobSpec{Model: "sdxl", RunTimeout: durationpb.New(3 * time.Second)})
	m.apply(CmdAssign, sec, &raftv1.Assign{JobId: id, Executor: "e", Attempt: 1})
	m.apply(CmdTick, 4*sec, &raftv1.Tick{})
	j := m.job(t, id)
	if j.State != sluicev1.JobState_JOB_STATE_QUEUED || j.Error.GetCode() != "run_timeout" || j.Attempt != 1 {
		t.Fatalf("after run timeout: %v %v attempt %d", j.State, j.Error, j.Attempt)
	}
	// The timed-out attempt's late success is fenced off.
	if r := m.apply(CmdComplete, 5*sec, &raftv1.Complete{JobId: id, Attempt: 1}); !errors.Is(r.Err, ErrStale) {
		t.Fatalf("late completion: %v", r.Err)
	}
}

func TestRequeueKeepsJobAndBumpsAttempt(t *testing.T) {
	m := newMachine(t)
	id := m.submit(t, sec, "alice", &sluicev1.JobSpec{Model: "sdxl"})
	m.apply(CmdAssign, sec, &raftv1.Assign{JobId: id, Executor: "e", Attempt: 1})
	m.apply(CmdRequeue, 2*sec, &raftv1.Requeue{JobId: id, Attempt: 1, Reason: "leader restarted"})
	if j := m.job(t, id); j.State != sluicev1.JobState_JOB_STATE_QUEUED || j.ReadyNs != 2*sec {
		t.Fatalf("after requeue: %v ready %d", j.State, j.ReadyNs)
	}
	if r := m.apply(CmdAssign, 2*sec, &raftv1.Assign{JobId: id, Executor: "e", Attempt: 2}); r.Err != nil {
		t.Fatal(r.Err)
	}
}

func TestCancelIsOwnerOnly(t *testing.T) {
	m := newMachine(t)
	id := m.submit(t, sec, "alice", &sluicev1.JobSpec{Model: "sdxl"})
	if r := m.apply(CmdCancel, sec, &raftv1.Cancel{JobId: id, Tenant: "bob"}); !errors.Is(r.Err, ErrNotFound) {
		t.Fatalf("bob cancels alice's job: %v", r.Err)
	}
	if r := m.apply(CmdCancel, sec, &raftv1.Cancel{JobId: id, Tenant: "alice"}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if j := m.job(t, id); j.State != sluicev1.JobState_JOB_STATE_CANCELED {
		t.Fatalf("state %v", j.State)
	}
	if m.f.Reads().QueueLen() != 0 {
		t.Fatal("canceled job still queued")
	}
}

func TestRetentionForgetsFinishedJobs(t *testing.T) {
	m := newMachine(t)
	id := m.submit(t, sec, "alice", &sluicev1.JobSpec{Model: "sdxl", IdempotencyKey: "once"})
	m.apply(CmdCancel, sec, &raftv1.Cancel{JobId: id, Tenant: "alice"})
	m.apply(CmdTick, sec+int64(time.Hour), &raftv1.Tick{})
	if _, ok := m.f.Reads().Job(id); ok {
		t.Fatal("job kept past retention")
	}
	if again := m.submit(t, 2*sec+int64(time.Hour), "alice", &sluicev1.JobSpec{Model: "sdxl", IdempotencyKey: "once"}); again == id {
		t.Fatal("idempotency key outlived its job")
	}
}

func TestFIFOOrderAndPositions(t *testing.T) {
	m := newMachine(t)
	var ids []uint64
	for i := 0; i < 3; i++ {
		ids = append(ids, m.submit(t, sec, "alice", &sluicev1.JobSpec{Model: "sdxl"}))
	}
	for i, id := range ids {
		if p, _ := m.f.Reads().Position(id); p != i+1 {
			t.Fatalf("job %d position %d, want %d", id, p, i+1)
		}
	}
	m.apply(CmdCancel, sec, &raftv1.Cancel{JobId: ids[0], Tenant: "alice"})
	if p, _ := m.f.Reads().Position(ids[2]); p != 2 {
		t.Fatalf("after cancel position %d, want 2", p)
	}
}

// TestSnapshotRestoreEqualsReplay feeds two state machines the same random
// command sequence; one is snapshotted and restored into a fresh machine
// midway. Both must end byte-for-byte equal.
func TestSnapshotRestoreEqualsReplay(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		a, b := limitedMachine(rt, rapidPolicy()), limitedMachine(rt, rapidPolicy())
		n := rapid.IntRange(1, 120).Draw(rt, "n")
		cut := rapid.IntRange(0, n).Draw(rt, "cut")
		now := sec
		var entries [][]byte
		var maxID uint64 = 8
		for i := 0; i < n; i++ {
			now += rapid.Int64Range(0, 3*sec).Draw(rt, "dt")
			if rapid.IntRange(0, 4).Draw(rt, "batch") == 0 { // several commands in one entry
				var cmds [][]byte
				for range rapid.IntRange(1, 4).Draw(rt, "batchLen") {
					cmds = append(cmds, randomCommand(rt, now, maxID+uint64(i)))
				}
				entries = append(entries, EncodeBatch(now, cmds))
				continue
			}
			entries = append(entries, randomCommand(rt, now, maxID+uint64(i)))
		}
		for i, e := range entries {
			if i == cut {
				snap := b.f.Snapshot()
				fresh := New()
				if !bytes.Equal(a.f.Snapshot(), snap) {
					rt.Fatalf("replicas differ before the snapshot")
				}
				if err := fresh.Restore(snap); err != nil {
					rt.Fatalf("restore: %v", err)
				}
				if got := fresh.Snapshot(); !bytes.Equal(got, snap) {
					rt.Fatalf("restored state encodes differently")
				}
				b.f = fresh
			}
			a.index++
			b.index++
			ra := a.f.Apply(a.index, e)
			rb := b.f.Apply(b.index, e)
			if !sameResult(ra, rb) {
				rt.Fatalf("entry %d: results differ: %+v vs %+v", i, ra, rb)
			}
		}
		if !bytes.Equal(a.f.Snapshot(), b.f.Snapshot()) {
			rt.Fatalf("final states differ")
		}
	})
}

// TestApplyCommandMatchesApply: a replica fed decoded commands
// (ApplyCommand, the simulator's way) ends in the state, byte for byte, of
// one fed their log entries (Apply), with the same results; a message of the
// wrong type, none, or a batch is refused as a bad command.
func TestApplyCommandMatchesApply(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		a, b := limitedMachine(rt, rapidPolicy()), limitedMachine(rt, rapidPolicy())
		now := sec
		for i := range rapid.IntRange(1, 120).Draw(rt, "n") {
			now += rapid.Int64Range(0, 3*sec).Draw(rt, "dt")
			e := randomCommand(rt, now, 8+uint64(i))
			ct, at, msg, err := Decode(e)
			if err != nil {
				rt.Fatalf("decode: %v", err)
			}
			a.index++
			b.index++
			ra, rb := a.f.Apply(a.index, e), b.f.ApplyCommand(b.index, ct, at, msg)
			if !sameResult(ra, rb) {
				rt.Fatalf("command %d (%v): results differ: %+v vs %+v", i, ct, ra, rb)
			}
		}
		if !bytes.Equal(a.f.Snapshot(), b.f.Snapshot()) {
			rt.Fatalf("final states differ")
		}
	})
	m := newMachine(t)
	for _, c := range []struct {
		t   CommandType
		msg proto.Message
	}{{CmdSubmit, &raftv1.Assign{JobId: 1}}, {CmdSubmit, nil}, {CmdSubmit, (*raftv1.Submit)(nil)}, {CmdBatch, &raftv1.Tick{}}, {CommandType(200), &raftv1.Tick{}}} {
		if r := m.f.ApplyCommand(9, c.t, sec, c.msg); !errors.Is(r.Err, ErrBadCommand) {
			t.Errorf("ApplyCommand(%v, %T) = %v, want ErrBadCommand", c.t, c.msg, r.Err)
		}
	}
}

func sameResult(a, b Result) bool {
	if a.JobID != b.JobID || a.Deduplicated != b.Deduplicated || (a.Err == nil) != (b.Err == nil) || len(a.Batch) != len(b.Batch) ||
		len(a.Checks) != len(b.Checks) {
		return false
	}
	for i := range a.Checks {
		if a.Checks[i].Allowed != b.Checks[i].Allowed || len(a.Checks[i].Items) != len(b.Checks[i].Items) {
			return false
		}
		for j := range a.Checks[i].Items {
			if x, y := a.Checks[i].Items[j], b.Checks[i].Items[j]; x.Verdict != y.Verdict || x.At != y.At || x.RetryAt != y.RetryAt {
				return false
			}
		}
	}
	for i := range a.Batch {
		if !sameResult(a.Batch[i], b.Batch[i]) {
			return false
		}
	}
	return true
}

// TestBatchEntryAppliesEachCommand applies several commands in one log
// entry: each gets its own result, submits get distinct job ids (the
// entry's index, then on), the next entry's submit continues after them,
// and a restored replica gives out the same next id.
func TestBatchEntryAppliesEachCommand(t *testing.T) {
	m := newMachine(t)
	spec := func() *sluicev1.JobSpec { return &sluicev1.JobSpec{Model: "sdxl"} }
	sub := func(tenant string) []byte {
		return MustEncode(CmdSubmit, 10*sec, &raftv1.Submit{Tenant: tenant, Spec: spec()})
	}
	m.index++
	at := m.index
	r := m.f.Apply(at, EncodeBatch(10*sec, [][]byte{
		sub("alice"),
		sub("bob"),
		MustEncode(CmdSubmit, 10*sec, &raftv1.Submit{Tenant: "mallory", Spec: spec()}),
		EncodeBatch(10*sec, [][]byte{sub("alice")}),
		sub("alice"),
		MustEncode(CmdCancel, 11*sec, &raftv1.Cancel{JobId: at, Tenant: "alice"}),
	}))
	if r.Err != nil || len(r.Batch) != 6 {
		t.Fatalf("batch: %+v", r)
	}
	b := r.Batch
	if b[0].Err != nil || b[1].Err != nil || b[4].Err != nil || b[0].JobID != at || b[1].JobID != at+1 || b[4].JobID != at+2 {
		t.Fatalf("submits in a batch: %+v", b)
	}
	if !errors.Is(b[2].Err, ErrUnknownTenant) || !errors.Is(b[3].Err, ErrBadCommand) || b[5].Err != nil {
		t.Fatalf("bad tenant, nested batch, cancel: %+v", b)
	}
	if j := m.job(t, at); j.State != sluicev1.JobState_JOB_STATE_CANCELED || m.job(t, at+1).Tenant != "bob" {
		t.Fatalf("after the batch: %v", j)
	}
	restored := New()
	if err := restored.Restore(m.f.Snapshot()); err != nil {
		t.Fatal(err)
	}
	// The next entry's index is below the ids the batch gave out.
	next := MustEncode(CmdSubmit, 12*sec, &raftv1.Submit{Tenant: "bob", Spec: spec()})
	ra, rb := m.f.Apply(at+1, next), restored.Apply(at+1, next)
	if ra.Err != nil || ra.JobID != at+3 || rb.JobID != at+3 {
		t.Fatalf("submit after the batch: %+v, restored %+v; want id %d", ra, rb, at+3)
	}
	// A snapshot from before batches (no last_job_id) restores to ids from
	// log indexes, as that version gave out.
	old := &raftv1.Snapshot{}
	if err := proto.Unmarshal(m.f.Snapshot(), old); err != nil {
		t.Fatal(err)
	}
	old.LastJobId = 0
	oldBytes, _ := proto.Marshal(old)
	pre := New()
	if err := pre.Restore(oldBytes); err != nil {
		t.Fatal(err)
	}
	if r := pre.Apply(at+9, next); r.Err != nil || r.JobID != at+9 {
		t.Fatalf("submit after restoring a snapshot without last_job_id: %+v, want id %d", r, at+9)
	}
	for _, bad := range [][]byte{EncodeBatch(0, nil), append(EncodeBatch(0, nil), 0x05, 1)} {
		if r := m.f.Apply(at+2, bad); !errors.Is(r.Err, ErrBadCommand) {
			t.Fatalf("batch %x: %+v", bad, r)
		}
	}
}

// rapidPolicy has one rule of most kinds, so that limiter state goes
// through snapshots too.
func rapidPolicy() *sluicev1.Policy {
	delay := bucket("free-rate", "free", 2, 3, 5*time.Second)
	delay.Action = sluicev1.OverLimitAction_OVER_LIMIT_ACTION_DELAY
	delay.MaxWait = durationpb.New(10 * time.Second)
	p := withRules(
		delay,
		bucket("pro-rate", "pro", 5, 5, 5*time.Second),
		&sluicev1.Rule{Name: "daily", Counts: sluicev1.RuleCounts_RULE_COUNTS_COST,
			Limit: &sluicev1.Rule_Quota{Quota: &sluicev1.QuotaLimit{Limit: 40000, TimeZone: "Asia/Shanghai"}}},
		&sluicev1.Rule{Name: "inflight", Limit: &sluicev1.Rule_Concurrency{Concurrency: &sluicev1.ConcurrencyLimit{Limit: 4}}},
		&sluicev1.Rule{Name: "window", Scope: sluicev1.RuleScope_RULE_SCOPE_GLOBAL,
			Limit: &sluicev1.Rule_SlidingLog{SlidingLog: &sluicev1.WindowLimit{Limit: 30, Window: durationpb.New(20 * time.Second)}}},
		&sluicev1.Rule{Name: "sdxl-cap", Match: &sluicev1.RuleMatch{Model: "sdxl"}, Scope: sluicev1.RuleScope_RULE_SCOPE_GLOBAL,
			Action: sluicev1.OverLimitAction_OVER_LIMIT_ACTION_DEGRADE, FallbackModel: "llama-8b",
			Limit: &sluicev1.Rule_SlidingWindow{SlidingWindow: &sluicev1.WindowLimit{Limit: 6, Window: durationpb.New(10 * time.Second)}}},
	)
	// Scheduler state goes through snapshots too: a capped tenant, a
	// backpressure bound and the big-job reservation.
	p.Tenants[0].MaxRunning = 1
	p.Tenants[1].Weight = 3
	p.Scheduling = &sluicev1.Scheduling{ReserveAfter: durationpb.New(5 * time.Second), MaxQueuedPerTenant: 6}
	return p
}

func randomCommand(rt *rapid.T, now int64, maxID uint64) []byte {
	id := rapid.Uint64Range(1, maxID).Draw(rt, "id")
	attempt := rapid.Int32Range(1, 3).Draw(rt, "attempt")
	tenant := rapid.SampledFrom([]string{"alice", "bob"}).Draw(rt, "tenant")
	switch rapid.IntRange(0, 10).Draw(rt, "kind") {
	case 10:
		g := &raftv1.CheckGroup{AllowDelay: rapid.Bool().Draw(rt, "allowDelay")}
		for range rapid.IntRange(1, 3).Draw(rt, "items") {
			g.Items = append(g.Items, &raftv1.CheckItem{Tenant: tenant, Tier: rapid.SampledFrom([]string{"free", "pro", ""}).Draw(rt, "tier"),
				Method: rapid.SampledFrom([]string{"", "/v1/x"}).Draw(rt, "method"), Key: rapid.SampledFrom([]string{"", "k=1"}).Draw(rt, "key"),
				Cost: rapid.Int64Range(0, 5000).Draw(rt, "cost"), CheckOnly: rapid.Bool().Draw(rt, "checkOnly"), Refund: rapid.Bool().Draw(rt, "refund")})
		}
		return MustEncode(CmdCheck, now, &raftv1.Check{Groups: []*raftv1.CheckGroup{g}})
	case 0, 1:
		return MustEncode(CmdSubmit, now, &raftv1.Submit{Tenant: tenant, Spec: randomSpec(rt, now)})
	case 2:
		return MustEncode(CmdAssign, now, &raftv1.Assign{JobId: id, Attempt: attempt, Executor: "e1"})
	case 3:
		return MustEncode(CmdComplete, now, &raftv1.Complete{JobId: id, Attempt: attempt})
	case 4:
		return MustEncode(CmdFail, now, &raftv1.Fail{JobId: id, Attempt: attempt, Retryable: rapid.Bool().Draw(rt, "retry"), Error: &sluicev1.JobError{Code: "x"}})
	case 5:
		return MustEncode(CmdCancel, now, &raftv1.Cancel{JobId: id, Tenant: tenant})
	case 6:
		return MustEncode(CmdRequeue, now, &raftv1.Requeue{JobId: id, Attempt: attempt})
	case 7:
		return MustEncode(CmdRedrive, now, &raftv1.Redrive{JobIds: []uint64{id, id + 1}})
	case 8:
		m := rapid.SampledFrom([]string{"n1", "n2", "n3"}).Draw(rt, "member")
		return MustEncode(CmdSetMember, now, &raftv1.SetMember{Id: m, HttpAddress: m + ":7700", Remove: rapid.Bool().Draw(rt, "remove")})
	default:
		return MustEncode(CmdTick, now, &raftv1.Tick{})
	}
}

// randomSpec draws a spec for one of the test policy's models: any
// priority, 0–3 attempts (0: the default), perhaps an idempotency key, a
// queue or run timeout of up to 20 s, a not_before up to 10 s after now.
func randomSpec(rt *rapid.T, now int64) *sluicev1.JobSpec {
	spec := &sluicev1.JobSpec{
		Model:          rapid.SampledFrom([]string{"sdxl", "llama-8b"}).Draw(rt, "model"),
		Priority:       rapid.Int32Range(0, 9).Draw(rt, "prio"),
		MaxAttempts:    rapid.Int32Range(0, 3).Draw(rt, "max"),
		IdempotencyKey: rapid.SampledFrom([]string{"", "", "k1", "k2"}).Draw(rt, "key"),
	}
	if rapid.Bool().Draw(rt, "qt") {
		spec.QueueTimeout = durationpb.New(time.Duration(rapid.Int64Range(1, 20).Draw(rt, "qts")) * time.Second)
	}
	if rapid.Bool().Draw(rt, "rt") {
		spec.RunTimeout = durationpb.New(time.Duration(rapid.Int64Range(1, 20).Draw(rt, "rts")) * time.Second)
	}
	if rapid.Bool().Draw(rt, "nb") {
		spec.NotBefore = timestamppb.New(time.Unix(0, now+rapid.Int64Range(0, 10*sec).Draw(rt, "nbs")))
	}
	return spec
}

func TestDecodeRejectsGarbage(t *testing.T) {
	for _, b := range [][]byte{nil, {1}, {99, 0, 0, 0, 0, 0, 0, 0, 0}, append([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0}, 0xff, 0xff)} {
		if _, _, _, err := Decode(b); err == nil {
			t.Errorf("Decode(%x) accepted garbage", b)
		}
	}
	m := newMachine(t)
	if r := m.f.Apply(99, []byte{42}); !errors.Is(r.Err, ErrBadCommand) {
		t.Fatalf("garbage entry: %v", r.Err)
	}
}
