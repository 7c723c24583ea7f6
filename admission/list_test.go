package admission

import (
	"fmt"
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
	p := &sluicev1.Policy{
		Tiers:  []*sluicev1.Tier{{Name: "free", Weight: 1}, {Name: "pro", Weight: 4}},
		Models: []*sluicev1.Model{{Name: "sdxl", DefaultDuration: durationpb.New(2 * time.Second)}},
	}
	for i := range 20 {
		p.Tenants = append(p.Tenants, &sluicev1.Tenant{Name: fmt.Sprintf("t%d", i), Tier: []string{"free", "pro"}[i%2]})
	}
	f := fsm.New()
	if r := f.Apply(1, fsm.MustEncode(fsm.CmdSetPolicy, sec, &raftv1.SetPolicy{Policy: p})); r.Err != nil {
		tb.Fatal(r.Err)
	}
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

// countingWalker counts the jobs its walks come to.
type countingWalker struct {
	Walker
	walked int
}

func (w *countingWalker) EachReady(limit int, each func(id uint64, model string, input *structpb.Struct) bool) bool {
	return w.Walker.EachReady(limit, func(id uint64, m string, in *structpb.Struct) bool {
		w.walked++
		return each(id, m, in)
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
	b.Run("back-100/by-averages", func(b *testing.B) { // what lists told until December 2026
		for b.Loop() {
			for _, id := range back {
				QueuedETA(f.Reads(), x, id, m, nil, nil)
			}
		}
	})
	lists("front-5", front)
}
