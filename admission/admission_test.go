package admission

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/fsm"
	"github.com/sluicehq/sluice/limiter"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/scheduler"
)

// executors: slots of every model, none idle, fit for small jobs.
type executors struct{ slots int }

func (x executors) Slots(string) (int, int) { return x.slots, 0 }
func (x executors) Unplaceable(_ string, gpus int32, _ int64) string {
	if gpus > 1 {
		return "no executor has 2 GPUs"
	}
	return ""
}
func (x executors) Service(_ string, def time.Duration) (time.Duration, time.Duration) {
	return def, def / 2
}
func (x executors) Share(string, string) float64 { return 1 }

const sec = int64(time.Second)

// One Submit sequence, stepped through each outcome: the pre-check's
// refusals need no log entry, and the applied entry's result means what
// the state machine decided.
func TestSequenceOutcomes(t *testing.T) {
	alice := &sluicev1.Tenant{Name: "alice", Tier: "free"}
	p := &sluicev1.Policy{
		Tiers:   []*sluicev1.Tier{{Name: "free", Weight: 1}},
		Tenants: []*sluicev1.Tenant{alice},
		Models:  []*sluicev1.Model{{Name: "sdxl", DefaultDuration: durationpb.New(2 * time.Second)}},
		Rules: []*sluicev1.Rule{
			{Name: "two", Limit: &sluicev1.Rule_FixedWindow{FixedWindow: &sluicev1.WindowLimit{Limit: 2, Window: durationpb.New(time.Hour)}}},
			{Name: "human", Match: &sluicev1.RuleMatch{ClientIp: "203.0.113.0/24"}, Action: sluicev1.OverLimitAction_OVER_LIMIT_ACTION_CHALLENGE,
				Limit: &sluicev1.Rule_FixedWindow{FixedWindow: &sluicev1.WindowLimit{Limit: 1, Window: durationpb.New(time.Hour)}}},
		},
		Scheduling: &sluicev1.Scheduling{RefuseUnplaceable: true, MaxQueuedPerModel: 3},
	}
	f := fsm.New()
	if r := f.Apply(1, fsm.MustEncode(fsm.CmdSetPolicy, sec, &raftv1.SetPolicy{Policy: p})); r.Err != nil {
		t.Fatal(r.Err)
	}
	plan, x, model := PlanFor(p), executors{slots: 1}, p.Models[0]
	index := uint64(1)
	var d limiter.Decision
	step := func(s *Submit) Verdict {
		v := Precheck(f.Reads(), x, plan, s, model, sec, &d, nil)
		if v.Outcome != Proceed {
			return v
		}
		index++
		return Applied(f.Apply(index, fsm.MustEncode(fsm.CmdSubmit, sec, s.Command())))
	}
	sub := func(ip string, gpus int32) *Submit {
		return &Submit{Tenant: alice, ClientIP: ip, Spec: &sluicev1.JobSpec{Model: "sdxl", Gpus: gpus}}
	}
	if v := step(sub("192.0.2.1", 2)); v.Outcome != Unplaceable || v.Why != "no executor has 2 GPUs" {
		t.Fatalf("two GPUs: %+v", v)
	}
	if v := step(sub("203.0.113.5", 1)); v.Outcome != Admitted || v.JobID == 0 {
		t.Fatalf("first: %+v", v)
	}
	if v := step(sub("203.0.113.5", 1)); v.Outcome != Challenged || v.Rule != "human" {
		t.Fatalf("second from the same network: %+v", v)
	}
	answered := sub("203.0.113.5", 1)
	answered.Spend = &raftv1.ChallengeSpend{Id: make([]byte, 16), Rule: "human", ExpiresNs: 60 * sec}
	answered.Exempt = []string{"human"}
	if v := step(answered); v.Outcome != Admitted {
		t.Fatalf("an answered challenge: %+v", v)
	}
	// The same answer, applied again, is refused by the log.
	index++
	if v := Applied(f.Apply(index, fsm.MustEncode(fsm.CmdSubmit, sec, answered.Command()))); v.Outcome != Replayed || v.Expired {
		t.Fatalf("the answer, applied again: %+v", v)
	}
	if v := step(sub("192.0.2.1", 1)); v.Outcome != Rejected || v.Rule != "two" {
		t.Fatalf("third, over the window: %+v", v)
	}
	index++
	if r := f.Apply(index, fsm.MustEncode(fsm.CmdSetPolicy, sec, &raftv1.SetPolicy{Policy: &sluicev1.Policy{
		Tiers: p.Tiers, Tenants: p.Tenants, Models: p.Models, Scheduling: &sluicev1.Scheduling{MaxQueuedPerModel: 2}}})); r.Err != nil {
		t.Fatal(r.Err)
	}
	plan = PlanFor(f.Reads().Policy())
	if v := step(sub("192.0.2.1", 1)); v.Outcome != Busy || v.Busy.Bound != scheduler.BoundQueuedPerModel || v.Wait <= 0 {
		t.Fatalf("past the model's bound: %+v", v)
	}
}

// TestQueuedETACountsTheJobsTheTiersDispatchFirst: a pro job (weight 4)
// third in its tier's line, behind ten free jobs (weight 1) whose tenants
// all came back from idle, is told the wait of the three jobs the tiers
// dispatch before it (one free, two pro: 7 s of 2 s jobs on one busy
// slot), not of the twelve ahead in queue order (25 s).
func TestQueuedETACountsTheJobsTheTiersDispatchFirst(t *testing.T) {
	p := &sluicev1.Policy{
		Tiers:  []*sluicev1.Tier{{Name: "pro", Weight: 4}, {Name: "free", Weight: 1}},
		Models: []*sluicev1.Model{{Name: "sdxl", DefaultDuration: durationpb.New(2 * time.Second)}},
	}
	pro := &sluicev1.Tenant{Name: "p", Tier: "pro"}
	p.Tenants = append(p.Tenants, pro)
	for i := range 10 {
		p.Tenants = append(p.Tenants, &sluicev1.Tenant{Name: string(rune('a' + i)), Tier: "free"})
	}
	f := fsm.New()
	if r := f.Apply(1, fsm.MustEncode(fsm.CmdSetPolicy, sec, &raftv1.SetPolicy{Policy: p})); r.Err != nil {
		t.Fatal(r.Err)
	}
	index := uint64(1)
	submit := func(ten *sluicev1.Tenant) uint64 {
		index++
		r := f.Apply(index, fsm.MustEncode(fsm.CmdSubmit, sec, (&Submit{Tenant: ten, Spec: &sluicev1.JobSpec{Model: "sdxl"}}).Command()))
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		return r.JobID
	}
	for _, ten := range p.Tenants[1:] {
		submit(ten)
	}
	submit(pro)
	submit(pro)
	third := submit(pro)
	b, ok := QueuedETA(f.Reads(), executors{slots: 1}, third, p.Models[0], nil, nil)
	if !ok || b.P50 != 7*time.Second {
		t.Fatalf("ETA %v (ok %v), want 7s: one free and two pro jobs ahead", b.P50, ok)
	}
	if pos, _ := f.Reads().View(third); pos.Position != 13 {
		t.Fatalf("queue order has it at %d: the test no longer shows the difference", pos.Position)
	}
}
