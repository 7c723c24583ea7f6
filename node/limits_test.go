package node

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/policy"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// TestFreeTenantIsLimitedWithRetryInfoAndHeaders: alice (free, burst 5)
// gets resource_exhausted on her sixth quick submission, with RetryInfo,
// QuotaFailure, Retry-After and RateLimit headers; the rejection never
// reaches the log; bob (pro) bursts where alice cannot.
func TestFreeTenantIsLimitedWithRetryInfoAndHeaders(t *testing.T) {
	n := startNodeWith(t, 0, DemoPolicy())
	alice := jobClient(n, DemoAliceKey)
	ctx := context.Background()
	// Two in flight at most: cancel each job so that only the rate applies.
	for i := 0; i < 5; i++ {
		res, err := alice.Submit(ctx, connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "llama-8b"}}))
		if err != nil {
			t.Fatalf("submit %d: %v", i+1, err)
		}
		if got := res.Header().Get("RateLimit"); !strings.Contains(got, `"free-rate";r=`+strconv.Itoa(4-i)) {
			t.Fatalf("submit %d: RateLimit %q", i+1, got)
		}
		if got := res.Header().Get("RateLimit-Policy"); !strings.Contains(got, `"free-rate";q=5;w=30`) || !strings.Contains(got, `"free-daily";q=20;w=86400`) {
			t.Fatalf("RateLimit-Policy %q", got)
		}
		if _, err := alice.CancelJob(ctx, connect.NewRequest(&sluicev1.CancelJobRequest{Id: res.Msg.Job.Id})); err != nil {
			t.Fatal(err)
		}
	}
	commit := n.raft.LastIndex()
	_, err := alice.Submit(ctx, connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "llama-8b"}}))
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeResourceExhausted {
		t.Fatalf("sixth submit: %v", err)
	}
	if !strings.Contains(ce.Message(), `rule "free-rate"`) || !strings.Contains(ce.Message(), "too frequent, retry in") {
		t.Fatalf("message %q", ce.Message())
	}
	if n.raft.LastIndex() != commit {
		t.Fatal("a clear rejection touched the log")
	}
	retry, quota := errorDetails(ce)
	if retry == nil || retry.RetryDelay.AsDuration() <= 0 || retry.RetryDelay.AsDuration() > 6*time.Second {
		t.Fatalf("RetryInfo %v", retry)
	}
	if quota == nil || len(quota.Violations) != 1 || quota.Violations[0].Subject != "tenant:alice" {
		t.Fatalf("QuotaFailure %v", quota)
	}
	ra, err := strconv.Atoi(ce.Meta().Get("Retry-After"))
	if err != nil || ra < 1 || ra > 6 {
		t.Fatalf("Retry-After %q", ce.Meta().Get("Retry-After"))
	}
	// The refusing rule's t is its Retry-After (not the 30 s until the bucket
	// is full again): draft -11 wants no Retry-After earlier than t.
	if got := ce.Meta().Get("RateLimit"); !strings.Contains(got, `"free-rate";r=0;t=`+strconv.Itoa(ra)+`,`) && !strings.HasSuffix(got, `"free-rate";r=0;t=`+strconv.Itoa(ra)) {
		t.Fatalf("RateLimit on the error: %q, Retry-After %d", got, ra)
	}
	bob := jobClient(n, DemoBobKey)
	for i := 0; i < 6; i++ {
		if _, err := bob.Submit(ctx, connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "llama-8b"}})); err != nil {
			t.Fatalf("bob's submit %d: %v", i+1, err)
		}
	}
}

func TestInFlightCapAndUsage(t *testing.T) {
	n := startNodeWith(t, 0, DemoPolicy())
	alice := jobClient(n, DemoAliceKey)
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		submit(t, alice, &sluicev1.JobSpec{Model: "sdxl"})
	}
	_, err := alice.Submit(ctx, connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "sdxl"}}))
	if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "2/2 in flight") {
		t.Fatalf("third job in flight: %v", err)
	}
	res, err := alice.GetUsage(ctx, connect.NewRequest(&sluicev1.GetUsageRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*sluicev1.RuleUsage{}
	for _, r := range res.Msg.Rules {
		got[r.Rule] = r
	}
	if r := got["free-daily"]; r == nil || r.Used != 2 || r.Limit != 20 || r.ResetsAt == nil || r.Unit != "requests" {
		t.Fatalf("free-daily usage %v", r)
	}
	if r := got["free-inflight"]; r == nil || r.Used != 2 || r.Remaining != 0 || r.Unit != "jobs in flight" {
		t.Fatalf("free-inflight usage %v", r)
	}
	if r := got["free-rate"]; r == nil || r.Used != 2 || r.Limit != 5 || r.Description != "10 requests per 1m0s, burst 5" {
		t.Fatalf("free-rate usage %v", r)
	}
	if res.Msg.Tier != "free" || len(res.Msg.Rules) != 3 {
		t.Fatalf("usage %v", res.Msg)
	}
}

func TestQuotaMessageSaysUsedTodayAndReset(t *testing.T) {
	p := DemoPolicy()
	p.Rules = []*sluicev1.Rule{{Name: "daily images", Match: &sluicev1.RuleMatch{Tier: "free"},
		Limit: &sluicev1.Rule_Quota{Quota: &sluicev1.QuotaLimit{Limit: 2}}}}
	n := startNodeWith(t, 2, p)
	alice := jobClient(n, DemoAliceKey)
	for i := 0; i < 2; i++ {
		submit(t, alice, &sluicev1.JobSpec{Model: "llama-8b"})
	}
	_, err := alice.Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "llama-8b"}}))
	if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "2/2 used today, resets 00:00 UTC") {
		t.Fatalf("over quota: %v", err)
	}
}

func TestShadowRuleNeverRejects(t *testing.T) {
	p := DemoPolicy()
	p.Rules = []*sluicev1.Rule{{Name: "trial", Shadow: true,
		Limit: &sluicev1.Rule_TokenBucket{TokenBucket: &sluicev1.TokenBucketLimit{Count: 1, Burst: 1, Per: durationpb.New(time.Hour)}}}}
	n := startNodeWith(t, 0, p)
	alice := jobClient(n, DemoAliceKey)
	var last *connect.Response[sluicev1.SubmitResponse]
	for i := 0; i < 3; i++ {
		res, err := alice.Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "sdxl"}}))
		if err != nil {
			t.Fatalf("shadow rule rejected submit %d: %v", i+1, err)
		}
		last = res
	}
	if got := last.Header().Get("RateLimit"); !strings.Contains(got, `"trial";r=0`) {
		t.Fatalf("shadow rule not counted: RateLimit %q", got)
	}
}

func TestPlainHTTPRejectionIs429WithRetryAfter(t *testing.T) {
	p := DemoPolicy()
	p.Rules = []*sluicev1.Rule{{Name: "one", Limit: &sluicev1.Rule_FixedWindow{FixedWindow: &sluicev1.WindowLimit{Limit: 1, Window: durationpb.New(time.Hour)}}}}
	n := startNodeWith(t, 0, p)
	post := func() *http.Response { return postSubmitJSON(t, n, `{"spec":{"model":"sdxl"}}`) }
	if res := post(); res.StatusCode != 200 || res.Header.Get("RateLimit-Policy") != `"one";q=1;w=3600` {
		t.Fatalf("first: %d %q", res.StatusCode, res.Header.Get("RateLimit-Policy"))
	}
	res := post()
	if res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Retry-After") == "" {
		t.Fatalf("second: %d, Retry-After %q", res.StatusCode, res.Header.Get("Retry-After"))
	}
}

// postSubmitJSON posts body to Submit as alice, in Connect's JSON over
// plain HTTP, and returns the response (its body closed).
func postSubmitJSON(t *testing.T, n *Node, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", baseURL(n)+"/sluice.v1.JobService/Submit", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+DemoAliceKey)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res
}

// errorDetails picks the RetryInfo and QuotaFailure details off an error.
func errorDetails(ce *connect.Error) (retry *errdetails.RetryInfo, quota *errdetails.QuotaFailure) {
	for _, d := range ce.Details() {
		switch v, _ := d.Value(); v := v.(type) {
		case *errdetails.RetryInfo:
			retry = v
		case *errdetails.QuotaFailure:
			quota = v
		}
	}
	return retry, quota
}

// TestReadsAreRateLimitedByTheirRules: a rule naming GetJob limits GetJob
// calls per API key (the demo policy's poll-job: 100 a second, bursts of
// 200): past the burst the call is refused with resource_exhausted and a
// retry time; another key, and ListJobs under its own rule, are not affected.
func TestReadsAreRateLimitedByTheirRules(t *testing.T) {
	n := startNodeWith(t, 0, DemoPolicy())
	bob, alice := jobClient(n, DemoBobKey), jobClient(n, DemoAliceKey)
	res, err := bob.Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "sdxl"}}))
	if err != nil {
		t.Fatal(err)
	}
	id := res.Msg.Job.Id
	var refused error
	for i := 0; i < 400 && refused == nil; i++ {
		_, refused = bob.GetJob(context.Background(), connect.NewRequest(&sluicev1.GetJobRequest{Id: id}))
	}
	var ce *connect.Error
	if !errors.As(refused, &ce) || ce.Code() != connect.CodeResourceExhausted || !strings.Contains(ce.Message(), `"poll-job"`) {
		t.Fatalf("400 GetJob calls at once: %v, want resource_exhausted by rule poll-job", refused)
	}
	if ce.Meta().Get("Retry-After") == "" {
		t.Fatalf("the refusal has no Retry-After: %v", ce.Meta())
	}
	if _, err := bob.ListJobs(context.Background(), connect.NewRequest(&sluicev1.ListJobsRequest{})); err != nil {
		t.Fatalf("ListJobs under its own rule: %v", err)
	}
	if _, err := alice.GetUsage(context.Background(), connect.NewRequest(&sluicev1.GetUsageRequest{})); err != nil {
		t.Fatalf("another key: %v", err)
	}
}

// TestRuleMethodsAreChecked: a rule can name Submit or a read call; a typo
// is refused naming the field.
func TestRuleMethodsAreChecked(t *testing.T) {
	p := DemoPolicy()
	p.Rules[0].Match.Method = "Getjob"
	if _, err := policy.LimiterRules(p); err == nil || !strings.Contains(err.Error(), `rules[0].match.method: "Getjob" is not Submit, a read (GetJob, ListJobs, WatchJob, GetUsage) or a gateway's request path`) {
		t.Fatalf("a typo in match.method: %v", err)
	}
}
