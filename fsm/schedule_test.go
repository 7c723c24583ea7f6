package fsm

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/limiter"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/scheduler"
)

func oneGPU(names ...string) []scheduler.Slot {
	out := make([]scheduler.Slot, len(names))
	for i, n := range names {
		out[i] = scheduler.Slot{Executor: n, GPUs: 1, TotalGPUs: 1, GPUMemoryMB: 1 << 20}
	}
	return out
}

// runAll dispatches onto one executor and completes each job at once, until
// the queue is empty, returning the tenants in the order their jobs ran.
func runAll(t *testing.T, m *machine, now int64) []string {
	t.Helper()
	var order []string
	for m.f.Reads().QueueLen() > 0 {
		as := m.f.Dispatch(now, oneGPU("e1"))
		if len(as) != 1 {
			t.Fatalf("dispatch placed %d jobs with %d queued", len(as), m.f.Reads().QueueLen())
		}
		a := as[0]
		if r := m.apply(CmdAssign, now, a); r.Err != nil {
			t.Fatal(r.Err)
		}
		order = append(order, m.job(t, a.JobId).Tenant)
		now += sec
		if r := m.apply(CmdComplete, now, &raftv1.Complete{JobId: a.JobId, Attempt: a.Attempt}); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	return order
}

func TestDispatchServesTiersByWeightWithoutStarving(t *testing.T) {
	m := newMachine(t) // free 1 : pro 4
	for i := 0; i < 5; i++ {
		m.submit(t, sec, "alice", &sluicev1.JobSpec{Model: "sdxl"})
	}
	for i := 0; i < 20; i++ {
		m.submit(t, sec, "bob", &sluicev1.JobSpec{Model: "sdxl"})
	}
	order := runAll(t, m, 2*sec)
	// Every window of five dispatches while both wait serves alice once.
	for w := 0; w+5 <= 25 && w < 20; w += 5 {
		n := 0
		for _, who := range order[w : w+5] {
			if who == "alice" {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("dispatches %d–%d served alice %d times, want 1 (4:1 weights): %v", w, w+4, n, order)
		}
	}
}

func TestMaxRunningHoldsJobsQueuedWithoutRejecting(t *testing.T) {
	p := testPolicy()
	p.Tenants[1].MaxRunning = 1
	m := limitedMachine(t, p)
	a := m.submit(t, sec, "bob", &sluicev1.JobSpec{Model: "sdxl"})
	b := m.submit(t, sec, "bob", &sluicev1.JobSpec{Model: "sdxl"})
	as := m.f.Dispatch(2*sec, oneGPU("e1", "e2"))
	if len(as) != 1 || as[0].JobId != a {
		t.Fatalf("dispatch with bob capped at 1 running: %v, want only job %d", as, a)
	}
	m.apply(CmdAssign, 2*sec, as[0])
	if got := m.f.Dispatch(2*sec, oneGPU("e2")); len(got) != 0 {
		t.Fatalf("bob's second job was placed while his first runs: %v", got)
	}
	m.apply(CmdComplete, 3*sec, &raftv1.Complete{JobId: a, Attempt: 1})
	if got := m.f.Dispatch(3*sec, oneGPU("e2")); len(got) != 1 || got[0].JobId != b {
		t.Fatalf("after the first job ended: %v, want job %d", got, b)
	}
}

func TestBackpressureRefusesWithoutChargingOrDropping(t *testing.T) {
	p := withRules(bucket("free-rate", "free", 100, 100, time.Minute))
	p.Scheduling = &sluicev1.Scheduling{MaxQueuedPerTenant: 2}
	m := limitedMachine(t, p)
	first := m.submit(t, sec, "alice", &sluicev1.JobSpec{Model: "sdxl"})
	m.submit(t, sec, "alice", &sluicev1.JobSpec{Model: "sdxl"})
	usage := m.f.Reads().Usage(limiterRequest("alice"), sec)
	r := m.apply(CmdSubmit, sec, &raftv1.Submit{Tenant: "alice", Spec: &sluicev1.JobSpec{Model: "sdxl"}})
	var be *scheduler.BusyError
	if !errors.As(r.Err, &be) || be.Bound != scheduler.BoundQueuedPerTenant || be.Limit != 2 {
		t.Fatalf("third queued job: %v, want a max_queued_per_tenant BusyError", r.Err)
	}
	if after := m.f.Reads().Usage(limiterRequest("alice"), sec); after[0].Used != usage[0].Used {
		t.Fatalf("a refused job was charged: used %d → %d", usage[0].Used, after[0].Used)
	}
	if m.f.Reads().QueueLen() != 2 || m.job(t, first).State != sluicev1.JobState_JOB_STATE_QUEUED {
		t.Fatalf("queued jobs changed after a refusal: %d queued", m.f.Reads().QueueLen())
	}
	// Another tenant is not held by alice's bound.
	m.submit(t, sec, "bob", &sluicev1.JobSpec{Model: "sdxl"})
}

func TestRedriveRequeuesDeadLettersWithFreshAttempts(t *testing.T) {
	m := newMachine(t)
	id := m.submit(t, sec, "alice", &sluicev1.JobSpec{Model: "sdxl", MaxAttempts: 1})
	m.apply(CmdAssign, sec, &raftv1.Assign{JobId: id, Executor: "e", Attempt: 1})
	m.apply(CmdFail, 2*sec, &raftv1.Fail{JobId: id, Attempt: 1, Retryable: true, Error: &sluicev1.JobError{Code: "oom"}})
	if s := m.job(t, id).State; s != sluicev1.JobState_JOB_STATE_DEAD_LETTERED {
		t.Fatalf("state %v, want DEAD_LETTERED", s)
	}
	if got := m.f.Reads().DeadLetters("", "sdxl", nil); len(got) != 1 || got[0] != id {
		t.Fatalf("DeadLetters(model sdxl) = %v", got)
	}
	if got := m.f.Reads().DeadLetters("bob", "", nil); len(got) != 0 {
		t.Fatalf("DeadLetters(bob) = %v, want none", got)
	}
	if r := m.apply(CmdRedrive, 3*sec, &raftv1.Redrive{JobIds: []uint64{id}}); r.Err != nil {
		t.Fatal(r.Err)
	}
	j := m.job(t, id)
	if j.State != sluicev1.JobState_JOB_STATE_QUEUED || j.Attempt != 1 || j.MaxAttempts != 2 {
		t.Fatalf("after redrive: %v attempt %d of %d, want QUEUED attempt 1 of 2", j.State, j.Attempt, j.MaxAttempts)
	}
	// A late report from attempt 1 stays fenced; attempt 2 runs.
	if r := m.apply(CmdComplete, 3*sec, &raftv1.Complete{JobId: id, Attempt: 1}); !errors.Is(r.Err, ErrStale) {
		t.Fatalf("late report of attempt 1: %v, want ErrStale", r.Err)
	}
	as := m.f.Dispatch(3*sec, oneGPU("e1"))
	if len(as) != 1 || as[0].Attempt != 2 {
		t.Fatalf("dispatch after redrive: %v, want attempt 2", as)
	}
	if r := m.apply(CmdRedrive, 4*sec, &raftv1.Redrive{JobIds: []uint64{id}}); !errors.Is(r.Err, ErrNotFound) {
		t.Fatalf("redrive of a queued job: %v, want ErrNotFound", r.Err)
	}
}

func TestBigJobIsNotOvertakenForeverAfterReserveAfter(t *testing.T) {
	p := testPolicy()
	p.Scheduling = &sluicev1.Scheduling{ReserveAfter: durationpb.New(10 * time.Second)}
	m := limitedMachine(t, p)
	// One 4-GPU executor kept busy by bob's 1-GPU jobs, one ending each
	// second and a new one arriving each second: without a reservation
	// there is never 4 GPUs free at once, so the big job would wait forever.
	now := sec
	var running []*raftv1.Assign
	place := func() (bigStarted bool, big uint64) {
		slot := []scheduler.Slot{{Executor: "x", GPUs: 4 - int32(len(running)), TotalGPUs: 4, GPUMemoryMB: 1 << 20,
			Jobs: 4 - int32(len(running))}}
		for _, a := range m.f.Dispatch(now, slot) {
			if r := m.apply(CmdAssign, now, a); r.Err != nil {
				t.Fatal(r.Err)
			}
			if m.job(t, a.JobId).Spec.Gpus == 4 {
				return true, a.JobId
			}
			running = append(running, a)
		}
		return false, 0
	}
	for i := 0; i < 4; i++ {
		m.submit(t, now, "bob", &sluicev1.JobSpec{Model: "sdxl"})
	}
	place()
	m.submit(t, now, "alice", &sluicev1.JobSpec{Model: "sdxl", Gpus: 4})
	submitted := now
	for step := 0; step < 200; step++ {
		m.submit(t, now, "bob", &sluicev1.JobSpec{Model: "sdxl"})
		if started, _ := place(); started {
			// Held after 10 s, then the four running jobs drain in ≤ 4 s.
			if waited := time.Duration(now - submitted); waited > 15*time.Second {
				t.Fatalf("the 4-GPU job waited %v, want at most reserve_after + the drain of 4 s", waited)
			}
			return
		}
		now += sec
		if len(running) > 0 {
			a := running[0]
			running = running[1:]
			m.apply(CmdComplete, now, &raftv1.Complete{JobId: a.JobId, Attempt: a.Attempt})
		}
	}
	t.Fatalf("the 4-GPU job never started in 200 s of 1-GPU traffic")
}

func limiterRequest(tenant string) limiter.Request {
	return limiter.Request{Tenant: tenant, Tier: "free", Model: "sdxl"}
}

// Dispatch is PlaceQueued as Assign entries, for the tests.
func (f *FSM) Dispatch(now int64, slots []scheduler.Slot) []*raftv1.Assign {
	ps := f.Reads().PlaceQueued(new(scheduler.Placer), nil, now, slots)
	out := make([]*raftv1.Assign, len(ps))
	for i, p := range ps {
		out[i] = &raftv1.Assign{JobId: p.JobID, Executor: p.Executor, Attempt: p.Attempt}
	}
	return out
}
