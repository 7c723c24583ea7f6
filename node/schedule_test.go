package node

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

func adminClient(n *Node) sluicev1connect.AdminServiceClient {
	return sluicev1connect.NewAdminServiceClient(httpClientFor(n), baseURL(n), connect.WithInterceptors(testAuth(DemoAdminToken)))
}

// TestSystemBusyNamesTheBoundAndWhenToRetry: past a queue bound Submit is
// resource_exhausted "system busy" with the bound, RetryInfo and
// Retry-After, and every job already queued stays queued.
func TestSystemBusyNamesTheBoundAndWhenToRetry(t *testing.T) {
	p := DemoPolicy()
	p.Rules = nil
	p.Scheduling.MaxQueuedPerTenant = 3
	n := startNodeWith(t, 0, p) // no executors: everything stays queued
	bob := jobClient(n, DemoBobKey)
	var ids []string
	for i := 0; i < 3; i++ {
		ids = append(ids, submit(t, bob, &sluicev1.JobSpec{Model: "sdxl"}).Id)
	}
	commit := n.raft.LastIndex()
	_, err := bob.Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "sdxl"}}))
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeResourceExhausted {
		t.Fatalf("fourth submit: %v, want resource_exhausted", err)
	}
	if !strings.Contains(ce.Message(), "system busy") || !strings.Contains(ce.Message(), `4 jobs queued for tenant "bob" would exceed the limit of 3`) ||
		!strings.Contains(ce.Message(), "retry in") {
		t.Fatalf("message %q", ce.Message())
	}
	if n.raft.LastIndex() != commit {
		t.Fatal("a clear backpressure refusal touched the log")
	}
	retry, quota := errorDetails(ce)
	if retry == nil || retry.RetryDelay.AsDuration() <= 0 {
		t.Fatalf("RetryInfo %v", retry)
	}
	if quota == nil || len(quota.Violations) != 1 || quota.Violations[0].Description != "scheduling.max_queued_per_tenant" {
		t.Fatalf("QuotaFailure %v", quota)
	}
	if ra, err := strconv.Atoi(ce.Meta().Get("Retry-After")); err != nil || ra < 1 {
		t.Fatalf("Retry-After %q", ce.Meta().Get("Retry-After"))
	}
	for _, id := range ids {
		if j := getJob(t, bob, id); j.State != sluicev1.JobState_JOB_STATE_QUEUED {
			t.Fatalf("job %s is %v after a refusal, want QUEUED", id, j.State)
		}
	}
	// alice is not held back by bob's bound.
	submit(t, jobClient(n, DemoAliceKey), &sluicev1.JobSpec{Model: "sdxl"})
}

// TestListQueuePagesInDispatchOrder: the admin's view of the queue shows
// every tenant's jobs in the order they will run, bob's pro jobs
// overtaking alice's free ones by the tiers' 4:1 weights.
func TestListQueuePagesInDispatchOrder(t *testing.T) {
	n := startNode(t, 0)
	alice, bob := jobClient(n, DemoAliceKey), jobClient(n, DemoBobKey)
	for i := 0; i < 3; i++ {
		submit(t, alice, &sluicev1.JobSpec{Model: "sdxl"})
	}
	for i := 0; i < 8; i++ {
		submit(t, bob, &sluicev1.JobSpec{Model: "sdxl"})
	}
	admin := adminClient(n)
	var tenants []string
	var positions []int64
	token := ""
	for pages := 0; ; pages++ {
		res, err := admin.ListQueue(context.Background(), connect.NewRequest(&sluicev1.ListQueueRequest{PageSize: 4, PageToken: token}))
		if err != nil {
			t.Fatal(err)
		}
		if res.Msg.Total != 11 {
			t.Fatalf("total %d, want 11", res.Msg.Total)
		}
		for _, j := range res.Msg.Jobs {
			tenants = append(tenants, j.Tenant)
			positions = append(positions, j.QueuePosition)
		}
		if token = res.Msg.NextPageToken; token == "" {
			break
		}
		if pages > 5 {
			t.Fatal("ListQueue does not end")
		}
	}
	if len(tenants) != 11 {
		t.Fatalf("listed %d jobs, want 11: %v", len(tenants), tenants)
	}
	for i, p := range positions {
		if p != int64(i+1) {
			t.Fatalf("positions %v, want 1..11", positions)
		}
	}
	// alice submitted first, yet within the first five places bob has four.
	bobs := 0
	for _, who := range tenants[:5] {
		if who == "bob" {
			bobs++
		}
	}
	if bobs != 4 {
		t.Fatalf("dispatch order %v: bob has %d of the first 5 places, want 4", tenants, bobs)
	}
	if _, err := admin.ListQueue(context.Background(), connect.NewRequest(&sluicev1.ListQueueRequest{PageToken: "garbage"})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("bad page token: %v", err)
	}
	notAdmin := sluicev1connect.NewAdminServiceClient(httpClientFor(n), baseURL(n), connect.WithInterceptors(testAuth(DemoBobKey)))
	if _, err := notAdmin.ListQueue(context.Background(), connect.NewRequest(&sluicev1.ListQueueRequest{})); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("bob lists the queue: %v", err)
	}
}

// TestRedriveDeadLettersRunsThemAgain: a job that dead-letters (its run
// timeout is shorter than its run) is listed by the DEAD_LETTERED filter,
// and a redrive by tenant puts it back with a fresh attempt.
func TestRedriveDeadLettersRunsThemAgain(t *testing.T) {
	n := startNode(t, 1)
	bob := jobClient(n, DemoBobKey)
	spec := &sluicev1.JobSpec{Model: "llama-8b", MaxAttempts: 1, RunTimeout: durationMs(1),
		Input: input(t, map[string]any{"duration_ms": 2000})}
	id := submit(t, bob, spec).Id
	waitState(t, bob, id, sluicev1.JobState_JOB_STATE_DEAD_LETTERED)
	list, err := bob.ListJobs(context.Background(), connect.NewRequest(&sluicev1.ListJobsRequest{
		States: []sluicev1.JobState{sluicev1.JobState_JOB_STATE_DEAD_LETTERED}}))
	if err != nil || len(list.Msg.Jobs) != 1 || list.Msg.Jobs[0].Id != id {
		t.Fatalf("dead letters listed: %v %v", list, err)
	}
	admin := adminClient(n)
	if _, err := admin.RedriveDeadLetters(context.Background(), connect.NewRequest(&sluicev1.RedriveDeadLettersRequest{})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("redrive without a filter: %v", err)
	}
	res, err := admin.RedriveDeadLetters(context.Background(), connect.NewRequest(&sluicev1.RedriveDeadLettersRequest{Tenant: "bob"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Msg.JobIds) != 1 || res.Msg.JobIds[0] != id {
		t.Fatalf("redriven %v, want [%s]", res.Msg.JobIds, id)
	}
	// It runs again (attempt 2) and, with the same timeout, dead-letters again.
	j := waitState(t, bob, id, sluicev1.JobState_JOB_STATE_DEAD_LETTERED)
	if j.Attempt != 2 {
		t.Fatalf("after redrive the job ran attempt %d, want 2", j.Attempt)
	}
	redriven := false
	for _, tr := range j.Transitions {
		if strings.HasPrefix(tr.Reason, "redriven") {
			redriven = true
		}
	}
	if !redriven {
		t.Fatalf("transitions %v do not record the redrive", j.Transitions)
	}
}

func getJob(t *testing.T, c sluicev1connect.JobServiceClient, id string) *sluicev1.Job {
	t.Helper()
	res, err := c.GetJob(context.Background(), connect.NewRequest(&sluicev1.GetJobRequest{Id: id}))
	if err != nil {
		t.Fatal(err)
	}
	return res.Msg.Job
}

func durationMs(ms int64) *durationpb.Duration {
	return durationpb.New(time.Duration(ms) * time.Millisecond)
}
