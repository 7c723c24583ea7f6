package fsm

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/limiter"
	"github.com/sluicehq/sluice/policy"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

func withRules(rules ...*sluicev1.Rule) *sluicev1.Policy {
	p := testPolicy()
	p.Rules = rules
	return p
}

func limitedMachine(t fatalf, p *sluicev1.Policy) *machine {
	m := &machine{f: New()}
	if r := m.apply(CmdSetPolicy, 0, &raftv1.SetPolicy{Policy: p}); r.Err != nil {
		t.Fatalf("set policy: %v", r.Err)
	}
	return m
}

func bucket(name, tier string, count, burst int64, per time.Duration) *sluicev1.Rule {
	return &sluicev1.Rule{Name: name, Match: &sluicev1.RuleMatch{Tier: tier},
		Limit: &sluicev1.Rule_TokenBucket{TokenBucket: &sluicev1.TokenBucketLimit{Count: count, Per: durationpb.New(per), Burst: burst}}}
}

func TestRateLimitRejectionChargesNothing(t *testing.T) {
	m := limitedMachine(t, withRules(bucket("free-rate", "free", 1, 2, time.Minute)))
	m.submit(t, sec, "alice", &sluicev1.JobSpec{Model: "sdxl"})
	m.submit(t, sec, "alice", &sluicev1.JobSpec{Model: "sdxl"})
	before := m.f.Snapshot()
	r := m.apply(CmdSubmit, sec, &raftv1.Submit{Tenant: "alice", Spec: &sluicev1.JobSpec{Model: "sdxl"}})
	var le *LimitError
	if !errors.As(r.Err, &le) || le.Rule != "free-rate" {
		t.Fatalf("third submit: %v", r.Err)
	}
	if want := sec + int64(time.Minute); le.RetryAt != want {
		t.Fatalf("retry at %v, want %v", time.Duration(le.RetryAt), time.Duration(want))
	}
	if len(r.Limits) != 1 || r.Limits[0].Allowed || r.Limits[0].Remaining != 0 {
		t.Fatalf("decision rules %+v", r.Limits)
	}
	after := m.f.Snapshot()
	// Only the clock and the log index may differ: compare with those equal.
	if !bytes.Equal(stripIndex(t, before), stripIndex(t, after)) {
		t.Fatal("a rejected submission changed the state")
	}
	// Bob is pro: the free rule does not apply to him.
	m.submit(t, sec, "bob", &sluicev1.JobSpec{Model: "sdxl"})
}

func stripIndex(t *testing.T, snap []byte) []byte {
	s := &raftv1.Snapshot{}
	if err := proto.Unmarshal(snap, s); err != nil {
		t.Fatal(err)
	}
	s.LastIndex = 0
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(s)
	return b
}

func TestDelayRuleAdmitsForLater(t *testing.T) {
	r := bucket("free-rate", "free", 1, 1, 10*time.Second)
	r.Action = sluicev1.OverLimitAction_OVER_LIMIT_ACTION_DELAY
	r.MaxWait = durationpb.New(15 * time.Second)
	m := limitedMachine(t, withRules(r))
	m.submit(t, sec, "alice", &sluicev1.JobSpec{Model: "sdxl"})
	id := m.submit(t, sec, "alice", &sluicev1.JobSpec{Model: "sdxl"})
	j := m.job(t, id)
	if j.ReadyNs != 11*sec || j.Admission.GetDelayedBy() != "free-rate" {
		t.Fatalf("delayed job ready at %v by %q, want 11s by free-rate", time.Duration(j.ReadyNs), j.Admission.GetDelayedBy())
	}
	// A third would have to wait 20s, past max_wait: rejected.
	if res := m.apply(CmdSubmit, sec, &raftv1.Submit{Tenant: "alice", Spec: &sluicev1.JobSpec{Model: "sdxl"}}); res.Err == nil {
		t.Fatal("third submit admitted beyond max_wait")
	}
}

func TestDegradeRuleRunsFallbackModel(t *testing.T) {
	r := &sluicev1.Rule{Name: "sdxl-cap", Match: &sluicev1.RuleMatch{Model: "sdxl"}, Scope: sluicev1.RuleScope_RULE_SCOPE_GLOBAL,
		Action: sluicev1.OverLimitAction_OVER_LIMIT_ACTION_DEGRADE, FallbackModel: "llama-8b",
		Limit: &sluicev1.Rule_Concurrency{Concurrency: &sluicev1.ConcurrencyLimit{Limit: 1}}}
	m := limitedMachine(t, withRules(r))
	first := m.submit(t, sec, "alice", &sluicev1.JobSpec{Model: "sdxl"})
	second := m.submit(t, sec, "bob", &sluicev1.JobSpec{Model: "sdxl"})
	j := m.job(t, second)
	if j.Spec.Model != "llama-8b" || j.Admission.GetDegradedBy() != "sdxl-cap" || j.Admission.GetRequestedModel() != "sdxl" {
		t.Fatalf("second job: model %s, admission %v", j.Spec.Model, j.Admission)
	}
	if m.job(t, first).Spec.Model != "sdxl" {
		t.Fatal("first job degraded")
	}
}

func TestConcurrencyCapReleasedWhenJobEnds(t *testing.T) {
	r := &sluicev1.Rule{Name: "inflight", Match: &sluicev1.RuleMatch{Tier: "free"},
		Limit: &sluicev1.Rule_Concurrency{Concurrency: &sluicev1.ConcurrencyLimit{Limit: 1}}}
	m := limitedMachine(t, withRules(r))
	id := m.submit(t, sec, "alice", &sluicev1.JobSpec{Model: "sdxl"})
	if res := m.apply(CmdSubmit, sec, &raftv1.Submit{Tenant: "alice", Spec: &sluicev1.JobSpec{Model: "sdxl"}}); res.Err == nil {
		t.Fatal("second job admitted over the cap")
	}
	m.apply(CmdAssign, 2*sec, &raftv1.Assign{JobId: id, Executor: "e", Attempt: 1})
	m.apply(CmdComplete, 3*sec, &raftv1.Complete{JobId: id, Attempt: 1})
	m.submit(t, 4*sec, "alice", &sluicev1.JobSpec{Model: "sdxl"})
}

func TestCancelExpiryRefundAndCompletionSettles(t *testing.T) {
	quota := &sluicev1.Rule{Name: "gpu-daily", Match: &sluicev1.RuleMatch{Tier: "free"}, Counts: sluicev1.RuleCounts_RULE_COUNTS_COST,
		Limit: &sluicev1.Rule_Quota{Quota: &sluicev1.QuotaLimit{Limit: 10000}}}
	m := limitedMachine(t, withRules(quota))
	used := func() int64 {
		u := m.f.Reads().Usage(limiter.Request{Tenant: "alice", Tier: "free", Model: "sdxl"}, m.f.Reads().Now())
		return u[0].Used
	}
	// sdxl's estimate is 1 GPU × 2000 ms.
	a := m.submit(t, sec, "alice", &sluicev1.JobSpec{Model: "sdxl"})
	if used() != 2000 {
		t.Fatalf("reserved %d, want 2000", used())
	}
	m.apply(CmdCancel, 2*sec, &raftv1.Cancel{JobId: a, Tenant: "alice"})
	if used() != 0 {
		t.Fatalf("after cancel of a queued job %d used, want 0", used())
	}
	b := m.submit(t, 3*sec, "alice", &sluicev1.JobSpec{Model: "sdxl", QueueTimeout: durationpb.New(time.Second)})
	m.apply(CmdTick, 5*sec, &raftv1.Tick{})
	if m.job(t, b).State != sluicev1.JobState_JOB_STATE_EXPIRED || used() != 0 {
		t.Fatalf("after expiry: %v, %d used", m.job(t, b).State, used())
	}
	c := m.submit(t, 6*sec, "alice", &sluicev1.JobSpec{Model: "sdxl"})
	m.apply(CmdAssign, 6*sec, &raftv1.Assign{JobId: c, Executor: "e", Attempt: 1})
	m.apply(CmdComplete, 6*sec+int64(3500*time.Millisecond), &raftv1.Complete{JobId: c, Attempt: 1})
	if j := m.job(t, c); used() != 3500 || JobAdmission(j).GetSettledCost() != 3500 || JobAdmission(j).GetReservedCost() != 2000 {
		t.Fatalf("after a 3.5 s run: %d used, admission %v; want 3500", used(), JobAdmission(j))
	}
	d := m.submit(t, 10*sec, "alice", &sluicev1.JobSpec{Model: "sdxl", DeclaredCost: 50})
	m.apply(CmdAssign, 10*sec, &raftv1.Assign{JobId: d, Executor: "e", Attempt: 1})
	m.apply(CmdComplete, 11*sec, &raftv1.Complete{JobId: d, Attempt: 1, Cost: 70})
	if used() != 3570 {
		t.Fatalf("after a reported cost of 70: %d used, want 3570", used())
	}
}

func TestPolicyRulesAreValidated(t *testing.T) {
	for _, tc := range []struct {
		rule *sluicev1.Rule
		want string
	}{
		{&sluicev1.Rule{Name: "x"}, "rules[0]: needs one limit"},
		{bucket("x", "gold", 1, 1, time.Second), `rules[0].match.tier: "gold" is not one of the policy's tiers`},
		{bucket("x", "free", 0, 1, time.Second), "count"},
		{&sluicev1.Rule{Name: "x", Limit: &sluicev1.Rule_TokenBucket{TokenBucket: &sluicev1.TokenBucketLimit{Count: 1, Burst: 1}}}, "rules[0].token_bucket.per: must be a positive duration"},
		{&sluicev1.Rule{Name: "x", Limit: &sluicev1.Rule_Quota{Quota: &sluicev1.QuotaLimit{Limit: 1, TimeZone: "Mars/Olympus"}}}, `rules[0].quota.time_zone: "Mars/Olympus" is not an IANA time zone`},
		{&sluicev1.Rule{Name: "x", Action: sluicev1.OverLimitAction_OVER_LIMIT_ACTION_DEGRADE, Limit: &sluicev1.Rule_Concurrency{Concurrency: &sluicev1.ConcurrencyLimit{Limit: 1}}}, "fallback"},
	} {
		err := policy.Validate(withRules(tc.rule))
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
			t.Errorf("rule %v: %v, want an error containing %q", tc.rule, err, tc.want)
		}
	}
}

// A job a rule delayed is charged on every rule when it is admitted, not
// when it may start: its refund must find the charge there. (Settling as of
// the start time missed the sliding log's entry, found by
// TestQuotaSettlementMatchesModel.)
func TestDelayedJobIsRefundedWhereItWasCharged(t *testing.T) {
	m := limitedMachine(t, withRules(
		&sluicev1.Rule{Name: "smooth", Limit: &sluicev1.Rule_LeakyQueue{LeakyQueue: &sluicev1.LeakyQueueLimit{Count: 1, Per: durationpb.New(10 * time.Second), Capacity: 5}}},
		&sluicev1.Rule{Name: "log", Counts: sluicev1.RuleCounts_RULE_COUNTS_COST,
			Limit: &sluicev1.Rule_SlidingLog{SlidingLog: &sluicev1.WindowLimit{Limit: 10000, Window: durationpb.New(time.Hour)}}},
	))
	m.submit(t, sec, "alice", &sluicev1.JobSpec{Model: "sdxl"})
	id := m.submit(t, sec, "alice", &sluicev1.JobSpec{Model: "sdxl"})
	if j, _ := m.f.Reads().Job(id); j.GetAdmission().GetDelayedBy() != "smooth" || j.ReadyNs <= sec {
		t.Fatalf("the second job is not delayed: %v", j.GetAdmission())
	}
	used := func() int64 {
		for _, u := range m.f.Reads().Usage(limiter.Request{Tenant: "alice", Tier: "free", Model: "sdxl"}, m.f.Reads().Now()) {
			if u.Rule == "log" {
				return u.Used
			}
		}
		t.Fatal("no usage of rule log")
		return 0
	}
	if got := used(); got != 4000 {
		t.Fatalf("two sdxl jobs charged %d, want 4000", got)
	}
	if r := m.apply(CmdCancel, 2*sec, &raftv1.Cancel{JobId: id, Tenant: "alice"}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if got := used(); got != 2000 {
		t.Fatalf("after cancelling the delayed job the log holds %d, want 2000", got)
	}
}
