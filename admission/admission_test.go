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

// executors: slots of every model, free of them idle, fit for small jobs;
// lanes what they run (nil: not known); share of another model's slots
// that serve a model (0: all).
type executors struct {
	slots, free int
	lanes       []scheduler.Lane
	share       float64
}

func (x executors) Slots(string) (int, int) { return x.slots, x.free }
func (x executors) Unplaceable(_ string, gpus int32, _ int64) string {
	if gpus > 1 {
		return "no executor has 2 GPUs"
	}
	return ""
}
func (x executors) Service(_ string, def time.Duration) (time.Duration, time.Duration) {
	return def, def / 2
}
func (x executors) Share(string, string) float64 {
	if x.share == 0 {
		return 1
	}
	return x.share
}
func (x executors) Lanes(string) []scheduler.Lane { return x.lanes }

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

// queueUnder is a state machine under policy p, and a submit of one job
// of p's first model for a tenant, answering its id.
func queueUnder(t *testing.T, p *sluicev1.Policy) (*fsm.FSM, func(*sluicev1.Tenant) uint64) {
	t.Helper()
	f := fsm.New()
	if r := f.Apply(1, fsm.MustEncode(fsm.CmdSetPolicy, sec, &raftv1.SetPolicy{Policy: p})); r.Err != nil {
		t.Fatal(r.Err)
	}
	index := uint64(1)
	return f, func(ten *sluicev1.Tenant) uint64 {
		index++
		r := f.Apply(index, fsm.MustEncode(fsm.CmdSubmit, sec, (&Submit{Tenant: ten, Spec: &sluicev1.JobSpec{Model: p.Models[0].Name}}).Command()))
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		return r.JobID
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
	f, submit := queueUnder(t, p)
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

// TestQueuedETAWaitsForTheFairShare: tenant a's fourth job, behind its own
// three and one job each of four other tenants, is 6,000 past the tier's
// virtual time with five tenants backlogged: the fair sharing reaches it
// after 6 s × 5 on one slot, 30 s, later than the seven jobs ahead would
// take (15 s), since every tenant that arrives meanwhile goes first. Alone
// in its tier, its own jobs ahead are all that hold it: 7 s.
func TestQueuedETAWaitsForTheFairShare(t *testing.T) {
	p := &sluicev1.Policy{
		Tiers:  []*sluicev1.Tier{{Name: "free", Weight: 1}},
		Models: []*sluicev1.Model{{Name: "sdxl", DefaultDuration: durationpb.New(2 * time.Second)}},
	}
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		p.Tenants = append(p.Tenants, &sluicev1.Tenant{Name: name, Tier: "free"})
	}
	// eta queues four jobs of a, then one of each other tenant, and
	// answers the ETA of a's first and fourth.
	eta := func(others []*sluicev1.Tenant) (first, fourth scheduler.Band) {
		f, submit := queueUnder(t, p)
		var ids []uint64
		for range 4 {
			ids = append(ids, submit(p.Tenants[0]))
		}
		for _, ten := range others {
			submit(ten)
		}
		first, _ = QueuedETA(f.Reads(), executors{slots: 1}, ids[0], p.Models[0], nil, nil)
		fourth, _ = QueuedETA(f.Reads(), executors{slots: 1}, ids[3], p.Models[0], nil, nil)
		return first, fourth
	}
	first, b := eta(p.Tenants[1:])
	if b.P50 != 30*time.Second || b.P10 >= b.P50 || b.P90 <= b.P50 {
		t.Fatalf("ETA %v–%v–%v, want 30s within its band", b.P10, b.P50, b.P90)
	}
	if first.P50 != 1*time.Second {
		t.Fatalf("a's first job: ETA %v, want 1s (at the virtual time: the work ahead)", first.P50)
	}
	if _, alone := eta(nil); alone.P50 != 7*time.Second {
		t.Fatalf("alone in its tier: ETA %v, want 7s (its three jobs ahead)", alone.P50)
	}
}

// TestQueuedETADrawsTheEndsOfTheAttemptsRunning: a job first in line on two
// busy slots starts when the first of their attempts ends, which how long
// they have run says: 5 s into 6 s ones, in about a second; half a second
// in, not for seconds. The count alone says 1.5 s either way, and still does for the
// job behind two others (it waits for a whole run besides).
func TestQueuedETADrawsTheEndsOfTheAttemptsRunning(t *testing.T) {
	p := &sluicev1.Policy{
		Tiers:   []*sluicev1.Tier{{Name: "free", Weight: 1}},
		Tenants: []*sluicev1.Tenant{{Name: "a", Tier: "free"}},
		Models:  []*sluicev1.Model{{Name: "sdxl", DefaultDuration: durationpb.New(6 * time.Second)}},
	}
	f, submit := queueUnder(t, p)
	first := submit(p.Tenants[0])
	submit(p.Tenants[0])
	third := submit(p.Tenants[0])
	lanes := func(elapsed time.Duration) []scheduler.Lane {
		l := scheduler.Lane{Busy: true, Run: scheduler.RunTime{Mean: 6 * time.Second, SD: 2 * time.Second}, Elapsed: elapsed}
		return []scheduler.Lane{l, l}
	}
	late, _ := QueuedETA(f.Reads(), executors{slots: 2, lanes: lanes(5 * time.Second)}, first, p.Models[0], nil, nil)
	early, _ := QueuedETA(f.Reads(), executors{slots: 2, lanes: lanes(500 * time.Millisecond)}, first, p.Models[0], nil, nil)
	counted, _ := QueuedETA(f.Reads(), executors{slots: 2}, first, p.Models[0], nil, nil)
	if late.P50 >= 1300*time.Millisecond || early.P50 <= 3*time.Second || counted.P50 != 1500*time.Millisecond {
		t.Fatalf("5 s in: %v; 0.5 s in: %v; lanes unknown: %v (want under 1.3 s, over 3 s, 1.5 s)", late, early, counted)
	}
	behind, _ := QueuedETA(f.Reads(), executors{slots: 2, lanes: lanes(5 * time.Second)}, third, p.Models[0], nil, nil)
	if behind.P50 != 7500*time.Millisecond {
		t.Fatalf("behind two: %v, want 7.5s (counted)", behind)
	}
}

// TestQueuedETADrawsAsManyJobsAsItCounts: behind one job each of three
// other models whose slots serve its model 40 % of the time (1.2 jobs), on
// two slots of which one is free, a job waits, drawn or counted: rounding
// each model's 0.4 alone would draw it no job ahead and tell it "at once".
func TestQueuedETADrawsAsManyJobsAsItCounts(t *testing.T) {
	p := &sluicev1.Policy{
		Tiers:   []*sluicev1.Tier{{Name: "free", Weight: 1}},
		Tenants: []*sluicev1.Tenant{{Name: "a", Tier: "free"}},
	}
	for _, m := range []string{"sdxl", "b", "c", "d"} {
		p.Models = append(p.Models, &sluicev1.Model{Name: m, DefaultDuration: durationpb.New(2 * time.Second)})
	}
	f := fsm.New()
	if r := f.Apply(1, fsm.MustEncode(fsm.CmdSetPolicy, sec, &raftv1.SetPolicy{Policy: p})); r.Err != nil {
		t.Fatal(r.Err)
	}
	var id uint64
	for i, m := range []string{"b", "c", "d", "sdxl"} {
		r := f.Apply(uint64(2+i), fsm.MustEncode(fsm.CmdSubmit, sec, (&Submit{Tenant: p.Tenants[0], Spec: &sluicev1.JobSpec{Model: m}}).Command()))
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		id = r.JobID
	}
	busy := scheduler.Lane{Busy: true, Run: scheduler.RunTime{Mean: 2 * time.Second, SD: time.Second}, Elapsed: time.Second}
	x := executors{slots: 2, free: 1, share: 0.4, lanes: []scheduler.Lane{{}, busy}}
	b, ok := QueuedETA(f.Reads(), x, id, p.Models[0], nil, nil)
	if !ok || b.P50 <= 0 || b.P10 > b.P50 || b.P90 < b.P50 {
		t.Fatalf("behind 1.2 jobs with one of two slots free: %v (ok %v), want a wait", b, ok)
	}
}
