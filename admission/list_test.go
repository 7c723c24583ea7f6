package admission

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/fsm"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/scheduler"
)

// sizedQueue is a state machine with n queued jobs of sdxl, sized by their
// steps, from 20 tenants of two tiers (every 50th job delayed), its ids
// in queue order, and a predictor of steps × width × height that counts
// its calls.
func sizedQueue(tb testing.TB, n int) (*fsm.FSM, *sluicev1.Model, []uint64, *Sizing, *int) {
	tb.Helper()
	p, f := twoTiers(tb, 20, &sluicev1.Model{Name: "sdxl", DefaultDuration: durationpb.New(2 * time.Second)})
	var ids []uint64
	for i := range n {
		in, _ := structpb.NewStruct(map[string]any{"steps": 10 + i*7%50, "width": 512, "height": 512})
		spec := &sluicev1.JobSpec{Model: "sdxl", Input: in}
		if i%50 == 49 {
			spec.NotBefore = timestamppb.New(time.Unix(3600, 0))
		}
		r := f.Apply(uint64(2+i), fsm.MustEncode(fsm.CmdSubmit, sec, (&Submit{Tenant: p.Tenants[i*3%20], Spec: spec}).Command()))
		if r.Err != nil {
			tb.Fatal(r.Err)
		}
		ids = append(ids, r.JobID)
	}
	calls := new(int)
	sizes := &Sizing{Predictor: func(string) func(*structpb.Struct) (scheduler.RunTime, bool) {
		return func(in *structpb.Struct) (scheduler.RunTime, bool) {
			*calls++
			fs := in.GetFields()
			s := fs["steps"].GetNumberValue() * fs["width"].GetNumberValue() * fs["height"].GetNumberValue()
			return scheduler.RunTime{Mean: time.Duration(s * 200), SD: 300 * time.Millisecond}, true
		}
	}}
	return f, p.Models[0], ids, sizes, calls
}

// twoTiers is a state machine under a policy of tiers free (weight 1)
// and pro (4), n tenants t0, t1, … taking turns between them, and models.
func twoTiers(tb testing.TB, n int, models ...*sluicev1.Model) (*sluicev1.Policy, *fsm.FSM) {
	tb.Helper()
	p := &sluicev1.Policy{Tiers: []*sluicev1.Tier{{Name: "free", Weight: 1}, {Name: "pro", Weight: 4}}, Models: models}
	for i := range n {
		p.Tenants = append(p.Tenants, &sluicev1.Tenant{Name: fmt.Sprintf("t%d", i), Tier: []string{"free", "pro"}[i%2]})
	}
	f := fsm.New()
	if r := f.Apply(1, fsm.MustEncode(fsm.CmdSetPolicy, sec, &raftv1.SetPolicy{Policy: p})); r.Err != nil {
		tb.Fatal(r.Err)
	}
	return p, f
}

// busyLanes is four slots, each running a 2 s attempt 1 s in.
func busyLanes() executors {
	busy := scheduler.Lane{Busy: true, Run: scheduler.RunTime{Mean: 2 * time.Second, SD: time.Second}, Elapsed: time.Second}
	return executors{slots: 4, lanes: []scheduler.Lane{busy, busy, busy, busy}}
}

// TestAListTellsEachJobItsOwnETA: a list's rows read the jobs ahead from
// one walk and predict each job's run time once (ListState), and each
// row is told exactly the ETA and place the job alone is told, in a queue longer than
// MaxSizedAhead with delayed jobs in it; the predictor is asked once per
// job, not once per row it is ahead of.
func TestAListTellsEachJobItsOwnETA(t *testing.T) {
	f, m, ids, sizes, calls := sizedQueue(t, MaxSizedAhead+100)
	x := busyLanes()
	alone, places := make([]scheduler.Band, len(ids)), make([]int, len(ids))
	for i, id := range ids {
		alone[i], places[i], _ = QueuedPlace(f.Reads(), x, id, m, nil, sizes)
		// Its place is the projection's: 1 + the jobs dispatched before it
		// (all of one model here); 0 past MaxSizedAhead (the delayed jobs
		// here too, behind every ready one).
		ahead := 0
		reached := f.Reads().CountAhead(id, MaxSizedAhead, func(_ string, n int) { ahead = n })
		if want := map[bool]int{true: ahead + 1}[reached]; places[i] != want {
			t.Fatalf("job %d: place %d, %d ahead (reached %v)", id, places[i], ahead, reached)
		}
	}
	*calls = 0
	list := ListState(f.Reads(), ids)
	for i := len(ids) - 1; i >= 0; i-- { // a list's order: the newest first
		b, place, _ := QueuedPlace(list, x, ids[i], m, nil, sizes)
		if b != alone[i] || place != places[i] {
			t.Fatalf("job %d (%d of %d): %v at %d in the list, %v at %d alone", ids[i], i, len(ids), b, place, alone[i], places[i])
		}
	}
	if *calls > len(ids) {
		t.Fatalf("the predictor was asked %d times for %d jobs", *calls, len(ids))
	}
	// A list of jobs near the front walks only as far as them.
	walk := &countingWalker{Walker: f.Reads()}
	front := ids[:3]
	list = ListState(walk, front)
	deepest := 0
	for i, id := range front {
		b, place, _ := QueuedPlace(list, x, id, m, nil, sizes)
		if b != alone[i] || place != places[i] {
			t.Fatalf("job %d at the front: %v at %d in the list, %v at %d alone", id, b, place, alone[i], places[i])
		}
		deepest = max(deepest, place)
	}
	if walk.walked == 0 || walk.walked > deepest+1 {
		t.Fatalf("a list of the first 3 jobs (the deepest at %d) walked %d", deepest, walk.walked)
	}
}

// TestAListByTheModelsAveragesTellsEachJobItsOwnETA: without sizes, a
// list's rows count the jobs ahead by model from the one walk
// (ListState's CountAhead), in the order the queue's own count gives the
// models, and each row is told exactly what the job alone is told, on
// jobs of three models whose first jobs arrived in another order than
// they are dispatched in, on 16 slots (so the first 16 rows' waits are
// drawn with the jobs ahead in that order: the order of their first
// dispatch tells job 18 1.95 s where alone it is told 1.65 s).
func TestAListByTheModelsAveragesTellsEachJobItsOwnETA(t *testing.T) {
	p, f := twoTiers(t, 6, &sluicev1.Model{Name: "a", DefaultDuration: durationpb.New(2 * time.Second)},
		&sluicev1.Model{Name: "b", DefaultDuration: durationpb.New(500 * time.Millisecond)}, &sluicev1.Model{Name: "c", DefaultDuration: durationpb.New(4 * time.Second)})
	var ids []uint64
	for i := range 300 {
		// c and b first, from free tenants; then the pro tenants' a, which
		// go first.
		model, tenant := []string{"a", "a", "c", "a", "b"}[i%5], p.Tenants[1+2*(i%3)]
		if i < 2 {
			model, tenant = []string{"c", "b"}[i], p.Tenants[2*i]
		}
		r := f.Apply(uint64(2+i), fsm.MustEncode(fsm.CmdSubmit, sec, (&Submit{Tenant: tenant, Spec: &sluicev1.JobSpec{Model: model}}).Command()))
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		ids = append(ids, r.JobID)
	}
	busy := scheduler.Lane{Busy: true, Run: scheduler.RunTime{Mean: 2 * time.Second, SD: time.Second}, Elapsed: time.Second}
	x := executors{slots: 16, lanes: slices.Repeat([]scheduler.Lane{busy}, 16)} // the first 16 rows' waits are drawn
	model := func(id uint64) *sluicev1.Model {
		j, _ := f.Reads().Job(id)
		m, _ := f.Reads().Model(j.Spec.GetModel())
		return m
	}
	walk := &countingWalker{Walker: f.Reads()}
	list := ListState(walk, ids)
	for i := len(ids) - 1; i >= 0; i-- {
		id := ids[i]
		b, place, ok := QueuedPlace(f.Reads(), x, id, model(id), nil, nil)
		lb, lplace, lok := QueuedPlace(list, x, id, model(id), nil, nil)
		if b != lb || place != lplace || ok != lok || place == 0 {
			t.Fatalf("job %d (%s): %v at %d in the list, %v at %d alone", id, model(id).Name, lb, lplace, b, place)
		}
	}
	if walk.walked != len(ids) {
		t.Fatalf("the list walked %d jobs of %d", walk.walked, len(ids))
	}
}

// countingWalker counts the jobs its walks come to.
type countingWalker struct {
	Walker
	walked int
}

func (w *countingWalker) EachReady(limit int, until []uint64, each func(id uint64, model string, rank int, input *structpb.Struct)) bool {
	return w.Walker.EachReady(limit, until, func(id uint64, m string, rank int, in *structpb.Struct) {
		w.walked++
		each(id, m, rank, in)
	})
}

// BenchmarkListETAs: the ETAs of a list of 100 queued jobs at the back of
// a queue of 2,000 sized jobs on four busy slots, and of five near its
// front (a user's few): each row alone (what a GetJob costs), the rows
// sharing one walk and one prediction per job (ListJobs), and the back
// rows each alone by the models' averages (no sizes).
func BenchmarkListETAs(b *testing.B) {
	f, m, ids, sizes, _ := sizedQueue(b, MaxSizedAhead)
	x := busyLanes()
	var front []uint64
	for _, id := range ids {
		if p, ok := f.Reads().Position(id); ok && p <= 40 && len(front) < 5 {
			front = append(front, id)
		}
	}
	lists := func(name string, rows []uint64) {
		b.Run(name+"/each-alone", func(b *testing.B) {
			for b.Loop() {
				for _, id := range rows {
					QueuedETA(f.Reads(), x, id, m, nil, sizes)
				}
			}
		})
		b.Run(name+"/one-walk", func(b *testing.B) {
			for b.Loop() {
				list := ListState(f.Reads(), rows)
				for _, id := range rows {
					QueuedETA(list, x, id, m, nil, sizes)
				}
			}
		})
	}
	back := ids[len(ids)-100:]
	lists("back-100", back)
	b.Run("back-100/by-averages/each-alone", func(b *testing.B) { // what lists told until December 2026
		for b.Loop() {
			for _, id := range back {
				QueuedETA(f.Reads(), x, id, m, nil, nil)
			}
		}
	})
	b.Run("back-100/by-averages/one-walk", func(b *testing.B) { // a policy without sizes
		for b.Loop() {
			list := ListState(f.Reads(), back)
			for _, id := range back {
				QueuedETA(list, x, id, m, nil, nil)
			}
		}
	})
	lists("front-5", front)
}
