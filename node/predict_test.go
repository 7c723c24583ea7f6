package node

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluicehq/sluice/fsm"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/scheduler"
)

// A model that declares what sizes its jobs (issue 28) has each job's run
// time predicted from its input once enough attempts were learned from: a
// 60-step job is predicted at least 3× a 10-step one, and a running 60-step
// job is told its own time left, not the model's average; an input field
// that cannot size a job is refused, naming it.
func TestRunTimeIsPredictedFromTheJobsSize(t *testing.T) {
	n := startNodeWith(t, 4, stepsPolicy(4))
	bob := jobClient(n, DemoBobKey)
	ctx := context.Background()
	submit := func(steps int) *sluicev1.Job {
		in, _ := structpb.NewStruct(map[string]any{"steps": steps, "duration_ms": 50 * steps})
		res, err := bob.Submit(ctx, connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "sdxl", Input: in}}))
		if err != nil {
			t.Fatal(err)
		}
		return res.Msg.Job
	}
	var warm []*sluicev1.Job
	for _, steps := range []int{10, 20, 30, 40, 15} {
		warm = append(warm, submit(steps))
	}
	for _, j := range warm {
		waitState(t, bob, j.Id, sluicev1.JobState_JOB_STATE_SUCCEEDED)
	}
	model, _ := n.fsm.Model("sdxl")
	in := func(steps int) *structpb.Struct {
		s, _ := structpb.NewStruct(map[string]any{"steps": steps})
		return s
	}
	long, _, ok := n.service.predictSized(model, "", in(60))
	short, _, ok2 := n.service.predictSized(model, "", in(10))
	if !ok || !ok2 || long < 3*short {
		t.Fatalf("60 steps predicted %v (%v), 10 steps %v (%v): want at least 3×", long, ok, short, ok2)
	}
	t.Logf("predicted: 10 steps %v, 60 steps %v (ran 0.5 s and 3 s)", short, long)
	j := submit(60)
	got := waitState(t, bob, j.Id, sluicev1.JobState_JOB_STATE_RUNNING)
	if got.EtaSeconds < 2 {
		t.Fatalf("a running 60-step job (3 s) is told %ds left; the model's average is about 1.2 s", got.EtaSeconds)
	}
	if p := got.GetPrediction(); !p.GetSized() || p.Run.AsDuration() < 2500*time.Millisecond || p.Run.AsDuration() > 3500*time.Millisecond ||
		p.P10.AsDuration() > p.Run.AsDuration() || p.P90.AsDuration() < p.Run.AsDuration() {
		t.Fatalf("the running 60-step job's prediction %v, want about 3s from its size, inside its band", p)
	}
	bad, _ := structpb.NewStruct(map[string]any{"steps": "sixty"})
	_, err := bob.Submit(ctx, connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "sdxl", Input: bad}}))
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "spec.input.steps") {
		t.Fatalf("steps as text: %v, want invalid_argument naming spec.input.steps", err)
	}
}

// A job behind ten long jobs is told a wait within 20 % of what it then
// waits (issue 28): the jobs ahead count for their own predicted run times,
// where the model's average (of short and long alike) would say half.
func TestWaitBehindLongJobsCountsTheirSize(t *testing.T) {
	n := startNodeWith(t, 1, stepsPolicy(6))
	bob := jobClient(n, DemoBobKey)
	ctx := context.Background()
	const msPerStep = 20 // a long job 1.2 s: what dispatching one costs (more under -race) stays small beside it
	submit := func(steps int) *sluicev1.Job {
		in, _ := structpb.NewStruct(map[string]any{"steps": steps, "duration_ms": msPerStep * steps})
		res, err := bob.Submit(ctx, connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "sdxl", Input: in}}))
		if err != nil {
			t.Fatal(err)
		}
		return res.Msg.Job
	}
	// Warm-up: short jobs mostly, as the model's average will remember.
	var last *sluicev1.Job
	for _, steps := range []int{5, 5, 60, 5, 10, 5, 5, 10} {
		last = submit(steps)
	}
	waitState(t, bob, last.Id, sluicev1.JobState_JOB_STATE_SUCCEEDED)
	for range 10 {
		submit(60)
	}
	j := submit(5)
	id, _ := ParseJobID(j.Id)
	v, ok := n.fsm.View(id)
	if !ok || v.Job.State != sluicev1.JobState_JOB_STATE_QUEUED {
		t.Fatalf("the job behind them is not queued: %v", v.Job.GetState())
	}
	told := n.desk.eta(v).P50
	// A list tells it the same (it once counted the jobs ahead by the
	// model's average): its row, and the row ListJobs answers.
	listed := n.desk.listETAs([]fsm.JobView{v})(v).P50
	list, err := bob.ListJobs(ctx, connect.NewRequest(&sluicev1.ListJobsRequest{States: []sluicev1.JobState{sluicev1.JobState_JOB_STATE_QUEUED}}))
	if err != nil {
		t.Fatal(err)
	}
	row := list.Msg.Jobs[0]
	model, _ := n.fsm.Model("sdxl")
	avg, _ := n.service.estimate("sdxl", model.GetDefaultDuration().AsDuration())
	got := waitState(t, bob, j.Id, sluicev1.JobState_JOB_STATE_RUNNING)
	waited := got.StartedAt.AsTime().Sub(got.CreatedAt.AsTime())
	t.Logf("told %v, listed %v and %ds, waited %v (ten jobs of %v; the model's average is %v)", told, listed, row.EtaSeconds, waited, 60*msPerStep*time.Millisecond, avg)
	if d := told - waited; d < -waited/5 || d > waited/5 {
		t.Fatalf("told %v, waited %v: more than 20 %% off", told, waited)
	}
	if d := listed - told; d < -told/20 || d > told/20 {
		t.Fatalf("a list's row told %v where GetJob's ETA is %v", listed, told)
	}
	if row.Id != j.Id || math.Abs(float64(row.EtaSeconds)-waited.Seconds()) > 0.2*waited.Seconds()+1 {
		t.Fatalf("ListJobs' row %s told %ds, waited %v", row.Id, row.EtaSeconds, waited)
	}
}

// stepsPolicy is the demo policy without rules, its sdxl jobs sized by
// their steps, trusted after floor attempts.
func stepsPolicy(floor int32) *sluicev1.Policy {
	policy := DemoPolicy()
	policy.Rules = nil
	for _, m := range policy.Models {
		if m.Name == "sdxl" {
			m.Size = &sluicev1.SizeModel{Terms: []*sluicev1.SizeTerm{{Fields: []string{"steps"}}}, MinObservations: floor}
		}
	}
	return policy
}

// Backpressure's predicted wait counts the queued jobs' own predicted run
// times (issue 28): under max_predicted_wait 4s, Submits of 1.2 s jobs are
// refused as busy once about 4 s of them wait, where the model's average
// (of short warm-up jobs) would let ten in.
func TestPredictedWaitCountsTheQueuedJobsSize(t *testing.T) {
	policy := stepsPolicy(6)
	policy.Scheduling = &sluicev1.Scheduling{MaxPredictedWait: durationpb.New(4 * time.Second)}
	n := startNodeWith(t, 1, policy)
	bob := jobClient(n, DemoBobKey)
	ctx := context.Background()
	submit := func(steps int) (*sluicev1.Job, error) {
		in, _ := structpb.NewStruct(map[string]any{"steps": steps, "duration_ms": 20 * steps})
		res, err := bob.Submit(ctx, connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "sdxl", Input: in}}))
		if err != nil {
			return nil, err
		}
		return res.Msg.Job, nil
	}
	for _, steps := range []int{5, 5, 60, 5, 10, 5, 5, 10} { // one at a time: the bound holds here too
		j, err := submit(steps)
		if err != nil {
			t.Fatal(err)
		}
		waitState(t, bob, j.Id, sluicev1.JobState_JOB_STATE_SUCCEEDED)
	}
	// 1.2 s jobs: by the fifth, 4 s of work is ahead of a new one. By the
	// model's average (about 0.2 s) not even ten would be.
	var err error
	admitted := 0
	for ; admitted < 10; admitted++ {
		if _, err = submit(60); err != nil {
			break
		}
	}
	var ce *connect.Error
	if admitted > 5 || !errors.As(err, &ce) || ce.Code() != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "predicted wait") {
		t.Fatalf("after %d 1.2 s jobs under a 4 s bound: %v, want busy on the predicted wait by the fifth", admitted, err)
	}
	t.Logf("refused after %d: %v", admitted, err)
}

// A new leader relearns run times from the log's finished jobs (issue 28,
// point 4): after the leader is gone, the next one predicts a 60-step job
// from its size at once, where it would otherwise start with nothing.
func TestNewLeaderRelearnsRunTimesFromTheLog(t *testing.T) {
	c := startClusterWith(t, 3, 2, func(cfg *Config) {
		if cfg.ID == "n1" {
			cfg.Policy = stepsPolicy(4)
		}
	})
	old := c.waitLeader()
	bob := jobClient(old, DemoBobKey)
	var warm []*sluicev1.Job
	for _, steps := range []int{10, 20, 30, 40, 15, 25} {
		in, _ := structpb.NewStruct(map[string]any{"steps": steps, "duration_ms": 10 * steps})
		res, err := bob.Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "sdxl", Input: in}}))
		if err != nil {
			t.Fatal(err)
		}
		warm = append(warm, res.Msg.Job)
	}
	for _, j := range warm {
		waitState(t, bob, j.Id, sluicev1.JobState_JOB_STATE_SUCCEEDED)
	}
	old.Close()
	next := c.waitLeader(old)
	model, _ := next.fsm.Model("sdxl")
	in, _ := structpb.NewStruct(map[string]any{"steps": 60})
	var got time.Duration
	waitFor(t, "the new leader's prediction", func() bool {
		d, _, ok := next.service.predictSized(model, "", in)
		got = d
		return ok
	})
	if got < 500*time.Millisecond || got > 700*time.Millisecond {
		t.Fatalf("the new leader predicts %v for 60 steps, want about 600ms", got)
	}
}

// A policy whose model reserves by size is taken where every server reads
// log format 5 (here, the one), and Submits are then charged by it.
func TestSetPolicyReservingBySize(t *testing.T) {
	n := startNodeWith(t, 1, DemoPolicy())
	p := stepsPolicy(4)
	for _, m := range p.Models {
		if m.Size != nil {
			m.Size.Reserve = true
		}
	}
	if _, err := adminClient(n).SetPolicy(context.Background(), connect.NewRequest(&sluicev1.SetPolicyRequest{Policy: p, Force: true})); err != nil {
		t.Fatalf("a policy reserving by size on a cluster that reads format %d: %v", logFormat, err)
	}
	if got, _ := n.fsm.Model("sdxl"); !got.GetSize().GetReserve() {
		t.Fatal("the policy in the log does not reserve by size")
	}
}

// Where a model runs at another speed on another kind of GPU, a running
// job is predicted by its GPUs' kind once that kind has enough attempts;
// a queued one (its GPUs not known yet) by the model's, over every kind.
func TestRunTimeByGPUKind(t *testing.T) {
	var s serviceTimes
	var m *sluicev1.Model
	for _, m0 := range stepsPolicy(4).Models {
		if m0.Size != nil {
			m = m0
		}
	}
	in := func(steps int) *structpb.Struct {
		v, _ := structpb.NewStruct(map[string]any{"steps": steps})
		return v
	}
	for _, steps := range []int{10, 20, 30, 40, 50, 60} {
		s.observeSized(m, "NVIDIA H100", in(steps), time.Duration(steps)*10*time.Millisecond)
		s.observeSized(m, "NVIDIA L4", in(steps), time.Duration(steps)*40*time.Millisecond)
	}
	fast, _, ok1 := s.predictSized(m, "NVIDIA H100", in(30))
	slow, _, ok2 := s.predictSized(m, "NVIDIA L4", in(30))
	any, _, ok3 := s.predictSized(m, "", in(30))
	if !ok1 || !ok2 || !ok3 || slow < 3*fast || any <= fast || any >= slow {
		t.Fatalf("30 steps: H100 %v, L4 %v, either %v: want the L4 about 4x the H100, either between", fast, slow, any)
	}
	if d, _, _ := s.predictSized(m, "NVIDIA A10", in(30)); d != any {
		t.Fatalf("a kind with no attempts yet: %v, want the model's %v", d, any)
	}
}

// A running job past its predicted run time, whose executor reports no
// progress, is told what runs that long still take, never 0 s left: after
// three 200 ms jobs, one running for 1.5 s is told some time left (the
// synthetic executor reports progress, so the job's record is read as an
// executor that does not would leave it).
func TestARunningJobPastItsPredictionIsToldTimeLeft(t *testing.T) {
	n := startNode(t, 1)
	bob := jobClient(n, DemoBobKey)
	var last *sluicev1.Job
	for range 3 {
		last = waitState(t, bob, submitRun(t, bob, 200).Id, sluicev1.JobState_JOB_STATE_SUCCEEDED)
	}
	id, err := ParseJobID(last.Id)
	if err != nil {
		t.Fatal(err)
	}
	v, ok := n.fsm.View(id)
	if !ok {
		t.Fatal("the last job is gone")
	}
	rec := proto.Clone(v.Job).(*raftv1.JobRecord)
	rec.State, rec.Executor, rec.StartedNs = sluicev1.JobState_JOB_STATE_RUNNING, "an-executor-that-reports-nothing", time.Now().Add(-1500*time.Millisecond).UnixNano()
	e := n.desk.eta(fsm.JobView{Job: rec})
	if !e.known || e.P50 <= 0 || e.P10 > e.P50 || e.P90 < e.P50 {
		t.Fatalf("1.5 s into a job predicted at about 200 ms: %v (known %v), want some time left", e.Band, e.known)
	}
}

// A running job's time left from its progress is read at the pace it had
// when it reported: 25 % done at 0.5 s, it needs 2 s in all, so it is told
// about 1 s left at 1 s, falling as the clock runs until the next report
// is due. (Reading the pace at now said 3 s at 1 s: the longer since the
// report, the more.) One that stays quiet past halfway from its report to
// done has slowed or stalled: it is told more time left, never 0 s, and
// more the longer it stays quiet.
func TestTimeLeftFallsBetweenProgressReports(t *testing.T) {
	const ms = int64(time.Millisecond)
	started := int64(1_000_000) * ms
	p := progressReport{attempt: 1, fraction: 0.25, at: started + 500*ms}
	left := func(now int64, sd time.Duration) scheduler.Band { return paceBand(p, started, started+now*ms, sd) }
	for _, c := range []struct{ now, want int64 }{{500, 1500}, {1000, 1000}} {
		b := left(c.now, 200*time.Millisecond)
		if d := int64(b.P50)/ms - c.want; d < -50 || d > 50 || b.P10 > b.P50 || b.P90 < b.P50 {
			t.Errorf("%d ms in, 25 %% done at 500 ms: told %v left, want about %d ms", c.now, b, c.want)
		}
	}
	prev := time.Duration(math.MaxInt64)
	for now := int64(500); now <= 1250; now += 50 { // 62.5 % by the pace: halfway from 25 % to done
		b := left(now, 200*time.Millisecond)
		if b.P50 > prev || b.P50 <= 0 {
			t.Fatalf("%d ms in: %v left, after %v 50 ms before: want less, and more than 0", now, b.P50, prev)
		}
		prev = b.P50
	}
	// Quiet since: stalled. Runs that do not vary (sd 0) too.
	for _, sd := range []time.Duration{0, 200 * time.Millisecond} {
		at2, at5, at10 := left(2000, sd).P50, left(5000, sd).P50, left(10000, sd).P50
		if at2 < 500*time.Millisecond || at5 < time.Second || at10 <= at5 || at5 <= at2 {
			t.Errorf("25 %% done at 500 ms, no report since (sd %v): %v left at 2 s, %v at 5 s, %v at 10 s: want some, growing", sd, at2, at5, at10)
		}
	}
	// A report with no time of its own reads the pace at now.
	if b := paceBand(progressReport{attempt: 1, fraction: 0.5}, started, started+1000*ms, 0); b.P50 != time.Second {
		t.Errorf("50 %% done at 1 s, the report's time unknown: %v left, want 1s", b.P50)
	}
}

// Through the server: a running job's ETA, read every 20 ms while its
// executor reports progress every 10 % of a 2 s run, never rises by more
// than a second (eta_seconds is whole seconds, rounded up). Read at the
// pace of now, it rose from 2 s to 4 s between the first two reports.
func TestRunningETADoesNotRiseBetweenProgressReports(t *testing.T) {
	n := startNode(t, 1)
	bob := jobClient(n, DemoBobKey)
	ctx := context.Background()
	id := submitRun(t, bob, 2000).Id
	var seen []string
	low, reports := int64(math.MaxInt64), map[float64]bool{}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		got, err := bob.GetJob(ctx, connect.NewRequest(&sluicev1.GetJobRequest{Id: id}))
		if err != nil {
			t.Fatal(err)
		}
		j := got.Msg.Job
		if j.State == sluicev1.JobState_JOB_STATE_SUCCEEDED {
			break
		}
		if j.State == sluicev1.JobState_JOB_STATE_RUNNING {
			seen = append(seen, fmt.Sprintf("%.0f%%:%ds", 100*j.Progress, j.EtaSeconds))
			reports[j.Progress] = true
			if low < math.MaxInt64 && j.EtaSeconds > low+1 {
				t.Fatalf("the ETA rose from %ds to %ds while it ran: %v", low, j.EtaSeconds, seen)
			}
			low = min(low, j.EtaSeconds)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(reports) < 5 {
		t.Fatalf("saw %d progress reports while it ran (%v): want most of its 10", len(reports), seen)
	}
}
