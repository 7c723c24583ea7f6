package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluicehq/sluice/gpuexec"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

// startNode runs a real node: raft with its bolt store in a temp dir,
// Connect over HTTP on 127.0.0.1 port 0, and synthetic executors.
func startNode(t *testing.T, executors int) *Node {
	t.Helper()
	policy := DemoPolicy()
	policy.Rules = nil // limits have their own tests
	return startNodeWith(t, executors, policy)
}

func startNodeWith(t *testing.T, executors int, policy *sluicev1.Policy) *Node {
	t.Helper()
	return startNodeTuned(t, executors, policy, func(*Config) {})
}

// startNodeTuned is startNodeWith with the config changed by tune first.
func startNodeTuned(t *testing.T, executors int, policy *sluicev1.Policy, tune func(*Config)) *Node {
	t.Helper()
	cfg := Config{
		DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Bootstrap: true,
		Policy: policy, LeaseGrace: 200 * time.Millisecond, HeartbeatInterval: 200 * time.Millisecond,
		Logger: quietLogger(), RaftLog: io.Discard, RaftWALSegmentSize: 1 << 20,
	}
	tune(&cfg)
	n, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	deadline := time.Now().Add(10 * time.Second)
	for !n.Leading() {
		if time.Now().After(deadline) {
			t.Fatal("node not leading after 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	startExecutors(t, executors, []string{baseURL(n)}, "synth")
	waitExecutors(t, n, executors)
	return n
}

// startExecutors runs synthetic executor agents against the given servers
// until the test ends.
func startExecutors(t *testing.T, count int, servers []string, prefix string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, count)
	for i := 1; i <= count; i++ {
		name := fmt.Sprintf("%s-%d", prefix, i)
		a := &gpuexec.Agent{Info: gpuexec.DeclaredInfo(name, 1, 1, 81920, nil), Servers: servers, Token: DemoExecutorToken,
			Retry: 50 * time.Millisecond, Client: executorClient(servers),
			Runner: &gpuexec.Synthetic{Name: name, Durations: map[string]time.Duration{"sdxl": 50 * time.Millisecond, "llama-8b": 20 * time.Millisecond}}}
		go func() { a.Run(ctx); done <- struct{}{} }()
	}
	t.Cleanup(func() {
		cancel()
		for range count {
			<-done
		}
	})
}

// executorClient is nil (http.DefaultClient) for plaintext servers, the
// tests' TLS client for https ones.
func executorClient(servers []string) *http.Client {
	for _, s := range servers {
		if strings.HasPrefix(s, "https://") {
			return sharedTLSClient()
		}
	}
	return nil
}

// waitExecutors waits until the leader n holds count leases.
func waitExecutors(t *testing.T, n *Node, count int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(n.execs.status()) < count {
		if time.Now().After(deadline) {
			t.Fatalf("%d executors leased after 10s, want %d", len(n.execs.status()), count)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func baseURL(n *Node) string { return n.Scheme() + "://" + n.Addr() }

// httpClientFor is the client for n's API: plain, or TLS trusting the
// tests' CA (tls_test.go).
func httpClientFor(n *Node) *http.Client {
	if n.tls == nil {
		return http.DefaultClient
	}
	return sharedTLSClient()
}

func jobClient(n *Node, key string, opts ...connect.ClientOption) sluicev1connect.JobServiceClient {
	opts = append(opts, connect.WithInterceptors(testAuth(key)))
	return sluicev1connect.NewJobServiceClient(httpClientFor(n), baseURL(n), opts...)
}

// h2cClient speaks cleartext HTTP/2, as gRPC clients do.
func h2cClient() *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: tr}
}

type testAuth string

func (k testAuth) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if k != "" {
			req.Header().Set("Authorization", "Bearer "+string(k))
		}
		return next(ctx, req)
	}
}

func (k testAuth) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		c := next(ctx, spec)
		if k != "" {
			c.RequestHeader().Set("Authorization", "Bearer "+string(k))
		}
		return c
	}
}

func (k testAuth) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

func input(t *testing.T, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func submit(t *testing.T, c sluicev1connect.JobServiceClient, spec *sluicev1.JobSpec) *sluicev1.Job {
	t.Helper()
	res, err := c.Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: spec}))
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	return res.Msg.Job
}

// waitState polls until the job reaches state or the deadline passes.
// submitRun submits an sdxl job that runs ms on a synthetic executor.
func submitRun(t *testing.T, c sluicev1connect.JobServiceClient, ms int) *sluicev1.Job {
	t.Helper()
	in, _ := structpb.NewStruct(map[string]any{"duration_ms": ms})
	res, err := c.Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "sdxl", Input: in}}))
	if err != nil {
		t.Fatal(err)
	}
	return res.Msg.Job
}

func waitState(t *testing.T, c sluicev1connect.JobServiceClient, id string, want sluicev1.JobState) *sluicev1.Job {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		res, err := c.GetJob(context.Background(), connect.NewRequest(&sluicev1.GetJobRequest{Id: id}))
		if err != nil {
			t.Fatalf("get %s: %v", id, err)
		}
		if res.Msg.Job.State == want {
			return res.Msg.Job
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s is %v, want %v", id, res.Msg.Job.State, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSubmitRunsToCompletionOverConnectAndGRPC(t *testing.T) {
	n := startNode(t, 2)
	for _, proto := range []struct {
		name string
		c    sluicev1connect.JobServiceClient
	}{
		{"connect", jobClient(n, DemoAliceKey)},
		{"grpc", sluicev1connect.NewJobServiceClient(h2cClient(), baseURL(n), connect.WithGRPC(), connect.WithInterceptors(testAuth(DemoAliceKey)))},
		{"grpcweb", sluicev1connect.NewJobServiceClient(http.DefaultClient, baseURL(n), connect.WithGRPCWeb(), connect.WithInterceptors(testAuth(DemoAliceKey)))},
	} {
		t.Run(proto.name, func(t *testing.T) {
			job := submit(t, proto.c, &sluicev1.JobSpec{Model: "sdxl", Input: input(t, map[string]any{"prompt": "a red fox", "duration_ms": 30})})
			// Dispatch may already have assigned it by the time the answer is read.
			if (job.State != sluicev1.JobState_JOB_STATE_QUEUED && job.State != sluicev1.JobState_JOB_STATE_RUNNING) || job.Tenant != "alice" || job.CreatedAt == nil {
				t.Fatalf("submitted job: %v", job)
			}
			done := waitState(t, proto.c, job.Id, sluicev1.JobState_JOB_STATE_SUCCEEDED)
			out := done.Output.AsMap()
			if out["executor"] == "" || out["input"].(map[string]any)["prompt"] != "a red fox" {
				t.Fatalf("output %v does not echo the input with the executor", out)
			}
			if done.Attempt != 1 || done.StartedAt == nil || done.FinishedAt == nil || len(done.Transitions) != 3 {
				t.Fatalf("finished job: %v", done)
			}
		})
	}
}

func TestPlainJSONPostAsCurlSends(t *testing.T) {
	n := startNode(t, 1)
	post := func(key, path, body string) (int, map[string]any) {
		req, _ := http.NewRequest("POST", baseURL(n)+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var m map[string]any
		b, _ := io.ReadAll(res.Body)
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: not JSON: %s", path, b)
		}
		return res.StatusCode, m
	}
	code, m := post(DemoBobKey, "/sluice.v1.JobService/Submit", `{"spec":{"model":"llama-8b","input":{"prompt":"hello"},"priority":3,"labels":{"team":"x"}}}`)
	if code != 200 {
		t.Fatalf("submit: %d %v", code, m)
	}
	id := m["job"].(map[string]any)["id"].(string)
	// An idle executor may have taken it before the reply was read.
	if st := m["job"].(map[string]any)["state"]; st != "JOB_STATE_QUEUED" && st != "JOB_STATE_RUNNING" {
		t.Fatalf("state %v", st)
	}
	code, m = post(DemoBobKey, "/sluice.v1.JobService/GetJob", fmt.Sprintf(`{"id":%q}`, id))
	if code != 200 || m["job"].(map[string]any)["spec"].(map[string]any)["model"] != "llama-8b" {
		t.Fatalf("get: %d %v", code, m)
	}
	// Malformed JSON, a missing key, an unknown model: clear Connect errors.
	for _, tc := range []struct {
		key, body, code, mention string
		status                   int
	}{
		{DemoBobKey, `{"spec":{"model":`, "invalid_argument", "", 400},
		{DemoBobKey, `{"spec":{"model":"sdxl","priority":"high"}}`, "invalid_argument", "priority", 400},
		{"", `{"spec":{"model":"sdxl"}}`, "unauthenticated", "authorization", 401},
		{DemoBobKey, `{"spec":{"model":"gpt-9"}}`, "invalid_argument", "spec.model", 400},
	} {
		code, m := post(tc.key, "/sluice.v1.JobService/Submit", tc.body)
		if code != tc.status || m["code"] != tc.code || !strings.Contains(fmt.Sprint(m["message"]), tc.mention) {
			t.Errorf("POST %s: %d %v; want %d %s mentioning %q", tc.body, code, m, tc.status, tc.code, tc.mention)
		}
	}
}

func TestBadInputNamesFieldAndLimit(t *testing.T) {
	n := startNode(t, 1)
	c := jobClient(n, DemoAliceKey)
	big := strings.Repeat("x", 70000)
	for _, tc := range []struct {
		name    string
		spec    *sluicev1.JobSpec
		field   string
		mention string
	}{
		{"no spec", nil, "spec", "required"},
		{"no model", &sluicev1.JobSpec{}, "spec.model", "required"},
		{"unknown model", &sluicev1.JobSpec{Model: "gpt-9"}, "spec.model", `"gpt-9" is not a known model (known: llama-8b, sdxl)`},
		{"payload over 64 KiB", &sluicev1.JobSpec{Model: "sdxl", Input: input(t, map[string]any{"prompt": big})}, "spec.input", "exceeds the 65536-byte limit"},
		{"priority out of range", &sluicev1.JobSpec{Model: "sdxl", Priority: 12}, "spec.priority", "12 is outside the range 0–9"},
		{"negative priority", &sluicev1.JobSpec{Model: "sdxl", Priority: -1}, "spec.priority", "outside the range 0–9"},
		{"too many attempts", &sluicev1.JobSpec{Model: "sdxl", MaxAttempts: 1000}, "spec.max_attempts", "outside the range 0–20"},
		{"too many gpus", &sluicev1.JobSpec{Model: "sdxl", Gpus: 500}, "spec.gpus", "outside the range 0–64"},
		{"long idempotency key", &sluicev1.JobSpec{Model: "sdxl", IdempotencyKey: strings.Repeat("k", 300)}, "spec.idempotency_key", "256-byte limit"},
		{"NUL in idempotency key", &sluicev1.JobSpec{Model: "sdxl", IdempotencyKey: "a\x00b"}, "spec.idempotency_key", "contains a control character (0x00)"},
		{"newline in label key", &sluicev1.JobSpec{Model: "sdxl", Labels: map[string]string{"team\nx": "a"}}, "spec.labels", "contains a control character (0x0a)"},
		{"NUL in label value", &sluicev1.JobSpec{Model: "sdxl", Labels: map[string]string{"team": "a\x00"}}, "spec.labels[team]", "contains a control character (0x00)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: tc.spec}))
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Code() != connect.CodeInvalidArgument {
				t.Fatalf("err = %v, want invalid_argument", err)
			}
			if !strings.HasPrefix(ce.Message(), tc.field+":") || !strings.Contains(ce.Message(), tc.mention) {
				t.Fatalf("message %q does not name %s and %q", ce.Message(), tc.field, tc.mention)
			}
			var found bool
			for _, d := range ce.Details() {
				if v, err := d.Value(); err == nil {
					if br, ok := v.(*errdetails.BadRequest); ok && br.FieldViolations[0].Field == tc.field {
						found = true
					}
				}
			}
			if !found {
				t.Fatal("no BadRequest detail naming the field")
			}
		})
	}
	// A request body far over the limit is refused before it is decoded, as
	// invalid_argument (retrying cannot help), and the node keeps serving.
	huge := &sluicev1.JobSpec{Model: "sdxl", Input: input(t, map[string]any{"p": strings.Repeat("y", 2<<20)})}
	if _, err := c.Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: huge})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("2 MiB request: %v", err)
	}
	if _, err := jobClient(n, "").Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "sdxl"}})); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("missing key: %v", err)
	}
	if _, err := jobClient(n, "wrong").Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "sdxl"}})); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("unknown key: %v", err)
	}
	submit(t, c, &sluicev1.JobSpec{Model: "sdxl"})
}

func TestTenantSeesOnlyOwnJobs(t *testing.T) {
	n := startNode(t, 1)
	alice, bob := jobClient(n, DemoAliceKey), jobClient(n, DemoBobKey)
	job := submit(t, alice, &sluicev1.JobSpec{Model: "sdxl", Input: input(t, map[string]any{"duration_ms": 5000})})
	ctx := context.Background()
	if _, err := bob.GetJob(ctx, connect.NewRequest(&sluicev1.GetJobRequest{Id: job.Id})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("bob gets alice's job: %v", err)
	}
	if _, err := bob.CancelJob(ctx, connect.NewRequest(&sluicev1.CancelJobRequest{Id: job.Id})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("bob cancels alice's job: %v", err)
	}
	stream, err := bob.WatchJob(ctx, connect.NewRequest(&sluicev1.WatchJobRequest{Id: job.Id}))
	if err == nil {
		for stream.Receive() {
			t.Fatal("bob watches alice's job")
		}
		err = stream.Err()
	}
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("bob watches alice's job: %v", err)
	}
	res, err := bob.ListJobs(ctx, connect.NewRequest(&sluicev1.ListJobsRequest{}))
	if err != nil || len(res.Msg.Jobs) != 0 {
		t.Fatalf("bob lists %v, %v", res.Msg.GetJobs(), err)
	}
	if _, err := alice.GetJob(ctx, connect.NewRequest(&sluicev1.GetJobRequest{Id: "not-an-id"})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("bad id: %v", err)
	}
}

func TestWatchStreamsEveryChangeAndCancelStopsRunningJob(t *testing.T) {
	n := startNode(t, 1)
	c := jobClient(n, DemoAliceKey)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The first job occupies the only slot; the second waits behind it.
	first := submit(t, c, &sluicev1.JobSpec{Model: "sdxl", Input: input(t, map[string]any{"duration_ms": 300})})
	waitState(t, c, first.Id, sluicev1.JobState_JOB_STATE_RUNNING) // on a loaded machine dispatch may lag the Submit
	second := submit(t, c, &sluicev1.JobSpec{Model: "sdxl", Input: input(t, map[string]any{"duration_ms": 60000})})
	stream, err := c.WatchJob(ctx, connect.NewRequest(&sluicev1.WatchJobRequest{Id: second.Id}))
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	canceled := false
	for stream.Receive() {
		j := stream.Msg().Job
		seen = append(seen, fmt.Sprintf("%v@%d", j.State, j.QueuePosition))
		if j.State == sluicev1.JobState_JOB_STATE_QUEUED && j.QueuePosition != 1 {
			t.Errorf("queued at position %d, want 1", j.QueuePosition)
		}
		if j.State == sluicev1.JobState_JOB_STATE_RUNNING && !canceled {
			canceled = true
			if _, err := c.CancelJob(ctx, connect.NewRequest(&sluicev1.CancelJobRequest{Id: second.Id})); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{"JOB_STATE_QUEUED@1", "JOB_STATE_RUNNING@0", "JOB_STATE_CANCELED@0"}
	if got := dedupe(seen); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("watch saw %v, want %v", got, want)
	}
	waitState(t, c, first.Id, sluicev1.JobState_JOB_STATE_SUCCEEDED)
	// The canceled attempt's slot is free again: a new job runs.
	third := submit(t, c, &sluicev1.JobSpec{Model: "llama-8b"})
	waitState(t, c, third.Id, sluicev1.JobState_JOB_STATE_SUCCEEDED)
	// Canceling a finished job is refused; canceling twice is fine.
	if _, err := c.CancelJob(ctx, connect.NewRequest(&sluicev1.CancelJobRequest{Id: third.Id})); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("cancel finished: %v", err)
	}
	if _, err := c.CancelJob(ctx, connect.NewRequest(&sluicev1.CancelJobRequest{Id: second.Id})); err != nil {
		t.Fatalf("cancel twice: %v", err)
	}
}

func dedupe(xs []string) []string {
	var out []string
	for _, x := range xs {
		if len(out) == 0 || out[len(out)-1] != x {
			out = append(out, x)
		}
	}
	return out
}

func TestListJobsPagesAndFilters(t *testing.T) {
	n := startNode(t, 0) // no executors: everything stays queued
	c := jobClient(n, DemoAliceKey)
	var ids []string
	for i := 0; i < 7; i++ {
		ids = append(ids, submit(t, c, &sluicev1.JobSpec{Model: "sdxl"}).Id)
	}
	ctx := context.Background()
	if _, err := c.CancelJob(ctx, connect.NewRequest(&sluicev1.CancelJobRequest{Id: ids[6]})); err != nil {
		t.Fatal(err)
	}
	var got []string
	req := &sluicev1.ListJobsRequest{PageSize: 3, States: []sluicev1.JobState{sluicev1.JobState_JOB_STATE_QUEUED}}
	for pages := 0; ; pages++ {
		res, err := c.ListJobs(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range res.Msg.Jobs {
			got = append(got, j.Id)
			if want := int64(indexOf(ids, j.Id) + 1); j.QueuePosition != want {
				t.Errorf("job %s position %d, want %d", j.Id, j.QueuePosition, want)
			}
		}
		if res.Msg.NextPageToken == "" {
			break
		}
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		req.PageToken = res.Msg.NextPageToken
	}
	want := []string{ids[5], ids[4], ids[3], ids[2], ids[1], ids[0]}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("listed %v, want %v (newest first, canceled filtered out)", got, want)
	}
	if _, err := c.ListJobs(ctx, connect.NewRequest(&sluicev1.ListJobsRequest{PageSize: 5000})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("page size 5000: %v", err)
	}
	if _, err := c.ListJobs(ctx, connect.NewRequest(&sluicev1.ListJobsRequest{PageToken: "zzz"})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("bad token: %v", err)
	}
}

func indexOf(xs []string, x string) int {
	for i, y := range xs {
		if y == x {
			return i
		}
	}
	return -1
}

func TestIdempotentSubmitReturnsFirstJob(t *testing.T) {
	n := startNode(t, 0)
	c := jobClient(n, DemoAliceKey)
	spec := &sluicev1.JobSpec{Model: "sdxl", IdempotencyKey: "order-17"}
	a := submit(t, c, spec)
	res, err := c.Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: spec}))
	if err != nil {
		t.Fatal(err)
	}
	if res.Msg.Job.Id != a.Id || !res.Msg.Deduplicated {
		t.Fatalf("second submit gave job %s (dedup %v), want %s", res.Msg.Job.Id, res.Msg.Deduplicated, a.Id)
	}
}

func TestHealthReadinessReflectionAndAdmin(t *testing.T) {
	n := startNode(t, 2)
	for _, path := range []string{"/healthz", "/readyz"} {
		res, err := http.Get(baseURL(n) + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("%s: %d %s", path, res.StatusCode, b)
		}
	}
	res, err := http.Post(baseURL(n)+"/"+grpchealth.HealthV1ServiceName+"/Check", "application/json", strings.NewReader(`{"service":"sluice.v1.JobService"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(b), "SERVING") {
		t.Fatalf("health check: %d %s", res.StatusCode, b)
	}
	rc := grpcreflect.NewClient(h2cClient(), baseURL(n))
	stream := rc.NewStream(context.Background())
	names, err := stream.ListServices()
	if err != nil {
		t.Fatal(err)
	}
	stream.Close()
	var listed []string
	for _, s := range names {
		listed = append(listed, string(s))
	}
	if !strings.Contains(strings.Join(listed, " "), "sluice.v1.JobService") {
		t.Fatalf("reflection lists %v", listed)
	}
	admin := sluicev1connect.NewAdminServiceClient(http.DefaultClient, baseURL(n), connect.WithInterceptors(testAuth(DemoAdminToken)))
	st, err := admin.GetClusterStatus(context.Background(), connect.NewRequest(&sluicev1.GetClusterStatusRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if st.Msg.Role != "Leader" || len(st.Msg.Members) != 1 || len(st.Msg.Executors) != 2 || st.Msg.StateHash == "" {
		t.Fatalf("status %v", st.Msg)
	}
	notAdmin := sluicev1connect.NewAdminServiceClient(http.DefaultClient, baseURL(n), connect.WithInterceptors(testAuth(DemoAliceKey)))
	if _, err := notAdmin.GetClusterStatus(context.Background(), connect.NewRequest(&sluicev1.GetClusterStatusRequest{})); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("alice as admin: %v", err)
	}
}

// TestSecondNodeOnADataDirFailsFast: raft.db is locked by the node using it; another
// node started on the same directory gives up after the lock timeout with a clear error
// instead of waiting forever.
func TestSecondNodeOnADataDirFailsFast(t *testing.T) {
	n := startNode(t, 0)
	start := time.Now()
	_, err := Start(Config{DataDir: n.cfg.DataDir, HTTPAddr: "127.0.0.1:0", Logger: quietLogger(), RaftLog: io.Discard})
	if err == nil || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("second node on %s: %v, want an error saying raft.db is locked", n.cfg.DataDir, err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("gave up after %v", d)
	}
	t.Logf("second node: %v", err)
}

// TestProfilesNeedTheAdminToken: /debug/pprof/ answers the admin only.
func TestProfilesNeedTheAdminToken(t *testing.T) {
	n := startNode(t, 0)
	get := func(key string) int {
		req, _ := http.NewRequest(http.MethodGet, baseURL(n)+"/debug/pprof/goroutine?debug=1", nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for _, c := range []struct {
		key  string
		want int
	}{{"", http.StatusUnauthorized}, {DemoBobKey, http.StatusForbidden}, {DemoAdminToken, http.StatusOK}} {
		if got := get(c.key); got != c.want {
			t.Errorf("key %q: HTTP %d, want %d", c.key, got, c.want)
		}
	}
}

// TestNodeInNoClusterSaysSoOnReadyz: a node started without bootstrap that
// no member joined is not ready, and /readyz says how to join it.
func TestNodeInNoClusterSaysSoOnReadyz(t *testing.T) {
	n, err := Start(Config{ID: "n7", DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Logger: quietLogger(), RaftLog: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	res, err := http.Get(baseURL(n) + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	want := "not part of a cluster yet: start the first node with --bootstrap, or join this one from a member: sluice admin join --id n7 --raft " + n.RaftAddr() + " --http " + n.Addr()
	if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), want) {
		t.Fatalf("/readyz: %d %q, want 503 with %q", res.StatusCode, body, want)
	}
}
