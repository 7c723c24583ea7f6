package node

import (
	"context"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// TestUnplaceableSaysWhy: with executors connected, a job none of them could
// ever run is named: too many GPUs, GPUs too small, a model none serves; a
// job one could run (busy or not) has no reason, and none is claimed while
// no executor is connected.
func TestUnplaceableSaysWhy(t *testing.T) {
	r := newRegistry()
	if why := r.unplaceable("sdxl", 8, 1); why != "" {
		t.Fatalf("no executor connected: %q, want no claim", why)
	}
	now := time.Now()
	r.attach(&sluicev1.ExecutorInfo{Name: "a", Slots: 1, Models: []string{"sdxl"}, Gpus: []*sluicev1.GPU{{Uuid: "a0", MemoryTotalMb: 24576}}}, nil, now)
	r.attach(&sluicev1.ExecutorInfo{Name: "b", Slots: 1, Models: []string{"sdxl"}, Gpus: []*sluicev1.GPU{{Uuid: "b0", MemoryTotalMb: 81920}, {Uuid: "b1", MemoryTotalMb: 81920}}}, nil, now)
	for _, c := range []struct {
		model string
		gpus  int32
		mem   int64
		want  string
	}{
		{"sdxl", 1, 16384, ""},
		{"sdxl", 2, 81920, ""},
		{"sdxl", 4, 1024, "needs 4 GPUs; the largest executor has 2"},
		{"sdxl", 1, 100000, "needs 100000 MiB of memory on each of its 1 GPU(s); no executor has that many that large (the largest GPU has 81920 MiB)"},
		{"llama-8b", 1, 1, "no connected executor serves model llama-8b"},
	} {
		if got := r.unplaceable(c.model, c.gpus, c.mem); got != c.want {
			t.Errorf("%s × %d GPUs of %d MiB: %q, want %q", c.model, c.gpus, c.mem, got, c.want)
		}
	}
}

// TestUnplaceableJobShowsWhyOrIsRefused: a job needing 2 GPUs where the only
// executor has 1 is admitted and shows why it waits in GetJob, ListJobs and
// the admin queue; with scheduling.refuse_unplaceable it is refused.
func TestUnplaceableJobShowsWhyOrIsRefused(t *testing.T) {
	policy := DemoPolicy()
	policy.Rules = nil
	n := startNodeWith(t, 1, policy)
	bob := jobClient(n, DemoBobKey)
	ctx := context.Background()
	res, err := bob.Submit(ctx, connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "sdxl", Gpus: 2}}))
	if err != nil {
		t.Fatal(err)
	}
	const why = "needs 2 GPUs; the largest executor has 1"
	if got := res.Msg.Job.WaitingReason; got != why {
		t.Fatalf("Submit's job waits because %q, want %q", got, why)
	}
	got, err := bob.GetJob(ctx, connect.NewRequest(&sluicev1.GetJobRequest{Id: res.Msg.Job.Id}))
	if err != nil || got.Msg.Job.WaitingReason != why {
		t.Fatalf("GetJob: %v %q", err, got.Msg.GetJob().GetWaitingReason())
	}
	list, err := bob.ListJobs(ctx, connect.NewRequest(&sluicev1.ListJobsRequest{}))
	if err != nil || len(list.Msg.Jobs) != 1 || list.Msg.Jobs[0].WaitingReason != why {
		t.Fatalf("ListJobs: %v %v", err, list.Msg.GetJobs())
	}
	admin := adminClient(n)
	q, err := admin.ListQueue(ctx, connect.NewRequest(&sluicev1.ListQueueRequest{}))
	if err != nil || len(q.Msg.Jobs) != 1 || q.Msg.Jobs[0].WaitingReason != why {
		t.Fatalf("ListQueue: %v %v", err, q.Msg.GetJobs())
	}
	// A job the executor can run has no reason.
	ok, err := bob.Submit(ctx, connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "sdxl"}}))
	if err != nil || ok.Msg.Job.WaitingReason != "" {
		t.Fatalf("a runnable job: %v %q", err, ok.Msg.GetJob().GetWaitingReason())
	}
	policy.Scheduling.RefuseUnplaceable = true
	if _, err := admin.SetPolicy(ctx, connect.NewRequest(&sluicev1.SetPolicyRequest{Policy: policy, Force: true})); err != nil {
		t.Fatal(err)
	}
	_, err = bob.Submit(ctx, connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "sdxl", Gpus: 2}}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), why) {
		t.Fatalf("with refuse_unplaceable: %v, want failed_precondition saying %q", err, why)
	}
}

// TestAdoptedAttemptKeepsItsGPUs: an executor that leases again (a new
// leader, a reconnect) keeps the GPUs its running attempts were assigned;
// a new job gets another.
func TestAdoptedAttemptKeepsItsGPUs(t *testing.T) {
	r := newRegistry()
	r.attach(&sluicev1.ExecutorInfo{Name: "x", Slots: 2, Gpus: []*sluicev1.GPU{{Uuid: "x0"}, {Uuid: "x1"}}},
		map[uint64]adopted{7: {attempt: 2, gpus: []string{"x0"}}}, time.Now())
	if !r.holds("x", 7, 2) {
		t.Fatal("the adopted attempt is not held")
	}
	gpus, ok := r.reserve("x", 8, 1)
	if !ok || len(gpus) != 1 || gpus[0] != "x1" {
		t.Fatalf("a new job got %v (%v), want x1: x0 runs job 7", gpus, ok)
	}
	if _, ok := r.reserve("x", 9, 1); ok {
		t.Fatal("reserved a third job on two slots")
	}
}

// TestLeaseTakenAgainBeforeTheAssignCommits: an executor that leases again
// between its reservation and the Assign's commit gets nothing sent on the
// old reservation (the new lease adopted only what it runs), and its GPU is
// free for the next placement.
func TestLeaseTakenAgainBeforeTheAssignCommits(t *testing.T) {
	r := newRegistry()
	info := &sluicev1.ExecutorInfo{Name: "x", Slots: 1, Gpus: []*sluicev1.GPU{{Uuid: "x0"}}}
	r.attach(info, nil, time.Now())
	if _, ok := r.reserve("x", 5, 1); !ok {
		t.Fatal("no reservation")
	}
	l := r.attach(info, nil, time.Now())
	msg := &sluicev1.LeaseResponse{Msg: &sluicev1.LeaseResponse_Assignment{Assignment: &sluicev1.Assignment{JobId: FormatJobID(5), Attempt: 1}}}
	if r.started("x", 5, 1, msg) {
		t.Fatal("started an attempt whose reservation the new lease dropped")
	}
	if len(l.out) != 0 {
		t.Fatalf("%d messages sent down the new lease", len(l.out))
	}
	if gpus, ok := r.reserve("x", 6, 1); !ok || gpus[0] != "x0" {
		t.Fatalf("the next job got %v (%v), want x0", gpus, ok)
	}
}

// reserve holds gpus free GPUs of the executor for a job, as the leader's
// dispatch does (registry.place), and names them.
func (r *registry) reserve(executor string, job uint64, gpus int32) ([]string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i, ok := r.index(executor)
	if !ok {
		return nil, false
	}
	mask, ok := r.fleet.Reserve(i, job, gpus, 0)
	if !ok {
		return nil, false
	}
	return r.fleet.IDs(i, mask), true
}

// TestNoExecutorSaysSo: on a leader no executor has leased from, a queued
// job is not told "eta 0s": it waits because no executor is connected, in
// Submit, GetJob and ListJobs; once one connects, the job runs and the
// reason is gone.
func TestNoExecutorSaysSo(t *testing.T) {
	n := startNode(t, 0)
	bob := jobClient(n, DemoBobKey)
	ctx := context.Background()
	res, err := bob.Submit(ctx, connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "sdxl"}}))
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Msg.Job.WaitingReason; got != noExecutor {
		t.Fatalf("Submit's job waits because %q, want %q", got, noExecutor)
	}
	got, err := bob.GetJob(ctx, connect.NewRequest(&sluicev1.GetJobRequest{Id: res.Msg.Job.Id}))
	if err != nil || got.Msg.Job.WaitingReason != noExecutor {
		t.Fatalf("GetJob: %v %q", err, got.Msg.GetJob().GetWaitingReason())
	}
	list, err := bob.ListJobs(ctx, connect.NewRequest(&sluicev1.ListJobsRequest{}))
	if err != nil || len(list.Msg.Jobs) != 1 || list.Msg.Jobs[0].WaitingReason != noExecutor {
		t.Fatalf("ListJobs: %v %v", err, list.Msg.GetJobs())
	}
	later, err := bob.Submit(ctx, connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{
		Model: "sdxl", NotBefore: timestamppb.New(time.Now().Add(time.Hour))}}))
	if err != nil || later.Msg.Job.WaitingReason != noExecutor {
		t.Fatalf("a job for later: %v %q", err, later.Msg.GetJob().GetWaitingReason())
	}
	startExecutors(t, 1, []string{baseURL(n)}, "late")
	waitState(t, bob, res.Msg.Job.Id, sluicev1.JobState_JOB_STATE_SUCCEEDED)
	// The job for later is still queued, and no longer says so.
	got, err = bob.GetJob(ctx, connect.NewRequest(&sluicev1.GetJobRequest{Id: later.Msg.Job.Id}))
	if err != nil || got.Msg.Job.State != sluicev1.JobState_JOB_STATE_QUEUED || got.Msg.Job.WaitingReason != "" {
		t.Fatalf("with an executor: %v %v %q", err, got.Msg.GetJob().GetState(), got.Msg.GetJob().GetWaitingReason())
	}
}

// TestPlacedJobIsToldItStarts: a queued job the leader has placed on an
// executor (its Assign proposed, not yet applied) is starting: a read in
// that moment tells it 0, not the run of the attempt its own reservation
// looks like.
func TestPlacedJobIsToldItStarts(t *testing.T) {
	n := startNode(t, 0)
	bob := jobClient(n, DemoBobKey)
	// Not before an hour from now: the dispatcher leaves it where the test
	// places it.
	res, err := bob.Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{
		Model: "sdxl", NotBefore: timestamppb.New(time.Now().Add(time.Hour))}}))
	if err != nil {
		t.Fatal(err)
	}
	id, err := ParseJobID(res.Msg.Job.Id)
	if err != nil {
		t.Fatal(err)
	}
	n.execs.attach(&sluicev1.ExecutorInfo{Name: "x", Slots: 1, Models: []string{"sdxl"}, Gpus: []*sluicev1.GPU{{Uuid: "x0", MemoryTotalMb: 81920}}}, nil, time.Now())
	v, _ := n.fsm.View(id)
	if e := n.desk.eta(v); !e.known || e.P50 < 50*time.Minute {
		t.Fatalf("before it is placed: %v (known %v), want about its hour", e.Band, e.known)
	}
	if _, ok := n.execs.reserve("x", id, 1); !ok {
		t.Fatal("no reservation")
	}
	if e := n.desk.eta(v); !e.known || e.P90 != 0 {
		t.Fatalf("placed: %v (known %v), want 0–0", e.Band, e.known)
	}
}
