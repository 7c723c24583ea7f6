package fsm

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// TestReservationsBySize (issue 28): where sdxl reserves by size, the
// state machine learns its run times from the completions it applies and,
// once trusted, charges a 60-step job about six times a 10-step one (the
// fixed reservation charges both alike); a snapshot keeps what it learned,
// and a replica restored from it charges the same.
func TestReservationsBySize(t *testing.T) {
	m := newMachine(t)
	p := testPolicy()
	p.Models[0].Size = &sluicev1.SizeModel{Terms: []*sluicev1.SizeTerm{{Fields: []string{"steps"}}}, MinObservations: 5, Reserve: true}
	if r := m.apply(CmdSetPolicy, 0, &raftv1.SetPolicy{Policy: p}); r.Err != nil {
		t.Fatal(r.Err)
	}
	spec := func(steps int) *sluicev1.JobSpec {
		in, _ := structpb.NewStruct(map[string]any{"steps": steps})
		return &sluicev1.JobSpec{Model: "sdxl", Input: in}
	}
	charge := func(steps int) int64 {
		return m.f.Reads().ReserveCost(spec(steps), p.Models[0])
	}
	if a, b := charge(10), charge(60); a != 2000 || b != 2000 {
		t.Fatalf("before it learned: %d and %d, want default_duration's 2000 ms each", a, b)
	}
	now := int64(time.Second)
	for i, steps := range []int{10, 20, 30, 40, 50, 60, 15} {
		id := m.submit(t, now, "bob", spec(steps))
		if r := m.apply(CmdAssign, now, &raftv1.Assign{JobId: id, Executor: "e", Attempt: 1}); r.Err != nil {
			t.Fatal(r.Err)
		}
		ran := time.Duration(100+50*steps) * time.Millisecond // 0.1 s + 50 ms a step
		now += int64(ran)
		if r := m.apply(CmdComplete, now, &raftv1.Complete{JobId: id, Attempt: 1}); r.Err != nil {
			t.Fatalf("attempt %d: %v", i, r.Err)
		}
		now += int64(time.Second)
	}
	short, long := charge(10), charge(60)
	if short < 540 || short > 660 || long < 2800 || long > 3300 {
		t.Fatalf("learned: 10 steps %d ms, 60 steps %d ms, want about 600 and 3100", short, long)
	}
	id := m.submit(t, now, "bob", spec(60))
	if got := m.job(t, id).Charge.GetCost(); got != long {
		t.Fatalf("a 60-step Submit was charged %d, ReserveCost says %d", got, long)
	}
	data := m.f.Snapshot()
	back := New()
	if err := back.Restore(data); err != nil {
		t.Fatal(err)
	}
	for _, steps := range []int{1, 10, 33, 60, 200} {
		if a, b := m.f.Reads().ReserveCost(spec(steps), p.Models[0]), back.Reads().ReserveCost(spec(steps), p.Models[0]); a != b {
			t.Fatalf("%d steps: %d before the snapshot, %d after", steps, a, b)
		}
	}
	// A declaration that changes starts the line afresh.
	p2 := testPolicy()
	p2.Models[0].Size = &sluicev1.SizeModel{Terms: []*sluicev1.SizeTerm{{Fields: []string{"frames"}}}, Reserve: true}
	if r := m.apply(CmdSetPolicy, now, &raftv1.SetPolicy{Policy: p2}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if got := m.f.Reads().ReserveCost(spec(60), p2.Models[0]); got != 2000 {
		t.Fatalf("after the declaration changed: %d, want 2000", got)
	}
}
