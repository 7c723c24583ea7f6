package fsm

import (
	"bytes"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// fuzzMachine is a state machine with rules and a few jobs in every state, so
// that a fuzzed entry can reach every command's paths.
func fuzzMachine(t fatalf) *machine {
	p := testPolicy()
	p.Rules = []*sluicev1.Rule{
		bucket("free-rate", "free", 5, 10, time.Minute),
		{Name: "jobs", Limit: &sluicev1.Rule_Concurrency{Concurrency: &sluicev1.ConcurrencyLimit{Limit: 50}}},
		{Name: "day", Counts: sluicev1.RuleCounts_RULE_COUNTS_COST,
			Limit: &sluicev1.Rule_Quota{Quota: &sluicev1.QuotaLimit{Limit: 1 << 40}}},
		{Name: "log", Counts: sluicev1.RuleCounts_RULE_COUNTS_COST,
			Limit: &sluicev1.Rule_SlidingLog{SlidingLog: &sluicev1.WindowLimit{Limit: 1 << 16, Window: durationpb.New(time.Minute)}}},
	}
	p.Tenants[0].WebhookSecrets = []string{testSecret}
	m := limitedMachine(t, p)
	m.apply(CmdSubmit, sec, &raftv1.Submit{Tenant: "alice", Spec: &sluicev1.JobSpec{Model: "llama-8b",
		Webhook: &sluicev1.Webhook{Url: "https://hooks.example/x", Events: []string{"queued", "started", "completed"}}}})
	for i := range 4 {
		m.apply(CmdSubmit, sec, &raftv1.Submit{Tenant: "alice", Spec: &sluicev1.JobSpec{Model: "sdxl", MaxAttempts: 1}})
		m.apply(CmdSubmit, sec, &raftv1.Submit{Tenant: "bob", Spec: &sluicev1.JobSpec{Model: "llama-8b", DeclaredCost: int64(i) * 1000}})
	}
	for _, a := range m.f.Dispatch(2*sec, oneGPU("e1", "e2", "e3")) {
		m.apply(CmdAssign, 2*sec, a)
	}
	return m
}

// fuzzSeeds are entries of every command type, valid and slightly wrong.
func fuzzSeeds() [][]byte {
	out := [][]byte{nil, {0}, {byte(CmdBatch)}}
	add := func(t CommandType, msg proto.Message) { out = append(out, MustEncode(t, 3*sec, msg)) }
	add(CmdSubmit, &raftv1.Submit{Tenant: "alice", Spec: &sluicev1.JobSpec{Model: "sdxl", DeclaredCost: 1 << 62}})
	add(CmdSubmit, &raftv1.Submit{Tenant: "nobody", Spec: &sluicev1.JobSpec{Model: "sdxl"}})
	add(CmdAssign, &raftv1.Assign{JobId: 1, Attempt: 1, Executor: "e9"})
	add(CmdComplete, &raftv1.Complete{JobId: 1, Attempt: 1, Cost: -1, Output: &structpb.Struct{}})
	add(CmdFail, &raftv1.Fail{JobId: 3, Attempt: 1, Retryable: true})
	add(CmdRequeue, &raftv1.Requeue{JobId: 2, Attempt: 1})
	add(CmdCancel, &raftv1.Cancel{JobId: 4, Tenant: "bob"})
	add(CmdRedrive, &raftv1.Redrive{JobIds: []uint64{1, 2, 1 << 60}})
	add(CmdTick, &raftv1.Tick{})
	add(CmdSetMember, &raftv1.SetMember{})
	add(CmdSetPolicy, &raftv1.SetPolicy{Policy: testPolicy()})
	add(CmdWebhookResult, &raftv1.WebhookResult{JobId: 2, Seq: 1, Attempt: 1, Status: 410})
	add(CmdWebhookResult, &raftv1.WebhookResult{JobId: 2, Seq: 1, Attempt: 1, Status: 500, Error: "boom"})
	add(CmdCheck, &raftv1.Check{Groups: []*raftv1.CheckGroup{
		{Items: []*raftv1.CheckItem{{Tenant: "alice", Tier: "free", Cost: 1 << 62}, {Key: "k=1", Refund: true, Cost: -5}}},
		{AllowDelay: true, Items: []*raftv1.CheckItem{{Tenant: "bob", Method: "/v1/x", CheckOnly: true}}},
		{},
	}})
	out = append(out, EncodeBatch(3*sec, [][]byte{out[3], out[4], out[5]}))
	return out
}

// FuzzApply feeds arbitrary log entries to a state machine holding jobs in
// every state. Nothing may panic, and two replicas applying the same entry
// stay byte-identical and restorable: a garbage entry (a bug in another
// node, a corrupted log) is refused the same way everywhere.
func FuzzApply(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, entry []byte) {
		a, b := fuzzMachine(t), fuzzMachine(t)
		a.index++
		b.index++
		ra, rb := a.f.Apply(a.index, entry), b.f.Apply(b.index, entry)
		if ra.JobID != rb.JobID || (ra.Err == nil) != (rb.Err == nil) {
			t.Fatalf("replicas disagree: %+v and %+v", ra, rb)
		}
		snap := a.f.Snapshot()
		if !bytes.Equal(snap, b.f.Snapshot()) {
			t.Fatal("replicas differ after the same entry")
		}
		c := New()
		if err := c.Restore(snap); err != nil {
			t.Fatalf("the state after the entry does not restore: %v", err)
		}
		if !bytes.Equal(c.Snapshot(), snap) {
			t.Fatal("the restored state encodes differently")
		}
	})
}

// FuzzRestore feeds arbitrary snapshots to Restore: it refuses them with an
// error or restores a state that encodes deterministically and restores again
// to the same bytes. Nothing may panic: a node restores whatever a peer
// sends it.
func FuzzRestore(f *testing.F) {
	m := fuzzMachine(f)
	f.Add(m.f.Snapshot())
	f.Add(New().Snapshot())
	f.Add([]byte{0x0a, 0xff})
	f.Fuzz(func(t *testing.T, snap []byte) {
		a := New()
		if a.Restore(snap) != nil {
			return
		}
		enc := a.Snapshot()
		b := New()
		if err := b.Restore(enc); err != nil {
			t.Fatalf("a restored state's own snapshot does not restore: %v", err)
		}
		if !bytes.Equal(b.Snapshot(), enc) {
			t.Fatal("a restored state's snapshot encodes differently after a second restore")
		}
		// It must still apply entries without panicking.
		b.Apply(b.Reads().LastIndex()+1, MustEncode(CmdTick, b.Reads().Now()+sec, &raftv1.Tick{}))
		b.Dispatch(b.Reads().Now(), oneGPU("e1"))
	})
}
