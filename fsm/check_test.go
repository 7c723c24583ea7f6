package fsm

import (
	"bytes"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/limiter"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

func checkMachine(t *testing.T) *machine {
	return limitedMachine(t, withRules(
		&sluicev1.Rule{Name: "budget", Scope: sluicev1.RuleScope_RULE_SCOPE_GLOBAL, Match: &sluicev1.RuleMatch{Method: "/v1/x"},
			Limit: &sluicev1.Rule_FixedWindow{FixedWindow: &sluicev1.WindowLimit{Limit: 3, Window: durationpb.New(time.Hour)}}},
		&sluicev1.Rule{Name: "tokens", Scope: sluicev1.RuleScope_RULE_SCOPE_KEY, Counts: sluicev1.RuleCounts_RULE_COUNTS_COST,
			Limit: &sluicev1.Rule_TokenBucket{TokenBucket: &sluicev1.TokenBucketLimit{Count: 10, Per: durationpb.New(time.Hour), Burst: 10}}},
	))
}

func (m *machine) check(t *testing.T, now int64, groups ...*raftv1.CheckGroup) []CheckOutcome {
	t.Helper()
	r := m.apply(CmdCheck, now, &raftv1.Check{Groups: groups})
	if r.Err != nil || len(r.Checks) != len(groups) {
		t.Fatalf("check: %v, %d outcomes for %d groups", r.Err, len(r.Checks), len(groups))
	}
	return r.Checks
}

func group(items ...*raftv1.CheckItem) *raftv1.CheckGroup { return &raftv1.CheckGroup{Items: items} }

// A group is charged whole or not at all: two items that share a counter
// with room for one are both refused, and the first one's charge undone.
func TestCheckGroupIsAllOrNothing(t *testing.T) {
	m := checkMachine(t)
	x := &raftv1.CheckItem{Method: "/v1/x"}
	if o := m.check(t, sec, group(x), group(x)); !o[0].Allowed || !o[1].Allowed || o[1].Items[0].Rules[0].Remaining != 1 {
		t.Fatalf("two single checks: %+v", o)
	}
	// One left: each item alone fits; together they do not.
	o := m.check(t, sec, group(x, &raftv1.CheckItem{Method: "/v1/x", Key: "k=1", Cost: 2}))
	if o[0].Allowed || o[0].Items[1].Verdict != limiter.Rejected || o[0].Items[1].Rule != "budget" {
		t.Fatalf("a group over the shared budget: %+v", o[0])
	}
	// Nothing of it stays charged (the tokens of k=1 included).
	after := m.check(t, sec, group(&raftv1.CheckItem{Method: "/v1/x", CheckOnly: true}), group(&raftv1.CheckItem{Key: "k=1", CheckOnly: true}))
	if got := after[0].Items[0].Rules[0].Remaining; got != 1 {
		t.Fatalf("budget after the refused group: %d left, want 1", got)
	}
	if got := after[1].Items[0].Rules[0].Remaining; got != 10 {
		t.Fatalf("k=1's tokens after the refused group: %d left, want 10", got)
	}
	// A refund in a refused group is not made either.
	o = m.check(t, sec, group(&raftv1.CheckItem{Key: "k=2", Cost: 4}))
	o = m.check(t, sec, group(&raftv1.CheckItem{Key: "k=2", Cost: 3, Refund: true}, &raftv1.CheckItem{Key: "k=2", Cost: 50}))
	if o[0].Allowed {
		t.Fatalf("a group with 50 tokens over a 10-token bucket: %+v", o[0])
	}
	if left := m.check(t, sec, group(&raftv1.CheckItem{Key: "k=2", CheckOnly: true}))[0].Items[0].Rules[0].Remaining; left != 6 {
		t.Fatalf("k=2 after a refused group with a refund: %d left, want 6", left)
	}
	// A refund is never refused, even into a bucket that would refuse cost 0 (in debt).
	m2 := limitedMachine(t, withRules(&sluicev1.Rule{Name: "debt", Scope: sluicev1.RuleScope_RULE_SCOPE_KEY,
		Counts: sluicev1.RuleCounts_RULE_COUNTS_COST, Action: sluicev1.OverLimitAction_OVER_LIMIT_ACTION_DELAY, MaxWait: durationpb.New(time.Hour),
		Limit: &sluicev1.Rule_TokenBucket{TokenBucket: &sluicev1.TokenBucketLimit{Count: 10, Per: durationpb.New(time.Hour), Burst: 10}}}))
	m2.check(t, sec, group(&raftv1.CheckItem{Key: "k=9", Cost: 8}))
	if o := m2.check(t, sec, &raftv1.CheckGroup{AllowDelay: true, Items: []*raftv1.CheckItem{{Key: "k=9", Cost: 5}}}); !o[0].Allowed || o[0].Items[0].Verdict != limiter.Delayed {
		t.Fatalf("5 more tokens with 2 left, delayed into debt: %+v", o[0])
	}
	if pre := m2.f.Reads().PreCheck(group(&raftv1.CheckItem{Key: "k=9", Cost: 2, Refund: true}), sec); !pre.Allowed {
		t.Fatalf("a refund pre-checked against a bucket in debt: %+v", pre)
	}
	if o := m2.check(t, sec, group(&raftv1.CheckItem{Key: "k=9", Cost: 2, Refund: true})); !o[0].Allowed || o[0].Items[0].Verdict != limiter.Admitted {
		t.Fatalf("a refund into a bucket in debt: %+v", o[0])
	}
	// Alone, it is: 3 of the 4 come back.
	if o := m.check(t, sec, group(&raftv1.CheckItem{Key: "k=2", Cost: 3, Refund: true})); !o[0].Allowed || o[0].Items[0].Rules[0].Remaining != 9 {
		t.Fatalf("a refund of 3: %+v", o[0])
	}
}

// Checks change the limiter as every replica applies them: two replicas
// agree byte for byte, and a check_only changes nothing.
func TestChecksReplicateAndCheckOnlyChangesNothing(t *testing.T) {
	a, b := checkMachine(t), checkMachine(t)
	entry := MustEncode(CmdCheck, 2*sec, &raftv1.Check{Groups: []*raftv1.CheckGroup{
		group(&raftv1.CheckItem{Method: "/v1/x", Key: "k=1", Cost: 7}),
		{Items: []*raftv1.CheckItem{{Key: "k=3", Cost: 1 << 62}}, AllowDelay: true},
	}})
	a.index++
	b.index++
	a.f.Apply(a.index, entry)
	b.f.Apply(b.index, entry)
	if !bytes.Equal(a.f.Snapshot(), b.f.Snapshot()) {
		t.Fatal("replicas differ after the same check entry")
	}
	before := a.f.limits.AppendSnapshot(nil)
	a.check(t, 2*sec, group(&raftv1.CheckItem{Method: "/v1/x", Key: "k=1", Cost: 3, CheckOnly: true}))
	if !bytes.Equal(before, a.f.limits.AppendSnapshot(nil)) {
		t.Fatal("a check_only changed the limiter's state")
	}
}
