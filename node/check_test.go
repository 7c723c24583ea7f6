package node

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sluicehq/sluice/policy"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

const testGatewayToken = "gw-token"

// gatewayPolicy is the demo policy with gateway rules: per tenant 3
// requests a minute on /v1/images (a fixed window), and a global GCRA of
// 1000 a second with bursts of 1000 on every check.
func gatewayPolicy() *sluicev1.Policy {
	p := DemoPolicy()
	p.GatewayTokenSha256 = policy.HashKey(testGatewayToken)
	p.Rules = []*sluicev1.Rule{
		{Name: "images-per-tenant", Match: &sluicev1.RuleMatch{Method: "/v1/images"},
			Limit: &sluicev1.Rule_FixedWindow{FixedWindow: &sluicev1.WindowLimit{Limit: 3, Window: durationpb.New(time.Minute)}}},
		{Name: "tokens-per-key", Scope: sluicev1.RuleScope_RULE_SCOPE_KEY, Match: &sluicev1.RuleMatch{Key: "plan=trial"},
			Counts: sluicev1.RuleCounts_RULE_COUNTS_COST,
			Limit:  &sluicev1.Rule_TokenBucket{TokenBucket: &sluicev1.TokenBucketLimit{Count: 100, Per: durationpb.New(time.Hour), Burst: 100}}},
		{Name: "ip", Scope: sluicev1.RuleScope_RULE_SCOPE_CLIENT_IP, Match: &sluicev1.RuleMatch{ClientIp: "203.0.113.0/24"},
			Limit: &sluicev1.Rule_FixedWindow{FixedWindow: &sluicev1.WindowLimit{Limit: 2, Window: durationpb.New(time.Hour)}}},
		{Name: "everything", Scope: sluicev1.RuleScope_RULE_SCOPE_GLOBAL,
			Limit: &sluicev1.Rule_Gcra{Gcra: &sluicev1.TokenBucketLimit{Count: 1000, Per: durationpb.New(time.Second), Burst: 1000}}},
	}
	return p
}

func limitClient(n *Node, token string) sluicev1connect.LimitServiceClient {
	return sluicev1connect.NewLimitServiceClient(httpClientFor(n), baseURL(n), connect.WithInterceptors(testAuth(token)))
}

func header(hs []*sluicev1.Header, name string) string {
	for _, h := range hs {
		if h.Name == name {
			return h.Value
		}
	}
	return ""
}

func TestCheckChargesUntilTheLimitThenRefusesWithWhenAndWhy(t *testing.T) {
	n := startNodeWith(t, 0, gatewayPolicy())
	c := limitClient(n, testGatewayToken)
	ctx := context.Background()
	check := func(req *sluicev1.CheckRequest) *sluicev1.CheckResponse {
		t.Helper()
		res, err := c.Check(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		return res.Msg
	}
	img := &sluicev1.CheckRequest{Tenant: "carol", Method: "/v1/images"}
	// check_only decides without charging: any number of them leave all 3.
	for range 5 {
		if r := check(&sluicev1.CheckRequest{Tenant: "carol", Method: "/v1/images", CheckOnly: true}); r.Verdict != sluicev1.CheckVerdict_CHECK_VERDICT_ALLOWED {
			t.Fatalf("check_only: %v", r)
		}
	}
	for i := range 3 {
		r := check(img)
		if r.Verdict != sluicev1.CheckVerdict_CHECK_VERDICT_ALLOWED {
			t.Fatalf("check %d: %v, want allowed", i+1, r)
		}
		if got := r.Rules[0]; got.Rule != "images-per-tenant" || got.Remaining != int64(2-i) || got.Limit != 3 || got.Unit != "requests" {
			t.Fatalf("check %d: rule %v, want images-per-tenant with %d of 3 left", i+1, got, 2-i)
		}
	}
	r := check(img)
	if r.Verdict != sluicev1.CheckVerdict_CHECK_VERDICT_REFUSED || r.Rule != "images-per-tenant" ||
		r.RetryAfter.AsDuration() <= 0 || r.RetryAfter.AsDuration() > time.Minute {
		t.Fatalf("fourth check: %v, want refused by images-per-tenant within a minute", r)
	}
	if !strings.Contains(r.Message, `rate limited by rule "images-per-tenant" (3 requests per 1m0s (fixed window))`) {
		t.Fatalf("message %q", r.Message)
	}
	if h := header(r.Headers, "RateLimit"); !strings.Contains(h, `"images-per-tenant";r=0;t=`) || header(r.Headers, "Retry-After") == "" ||
		!strings.Contains(header(r.Headers, "RateLimit-Policy"), `"images-per-tenant";q=3;w=60`) {
		t.Fatalf("headers %v", r.Headers)
	}
	// Another tenant has its own window; the global rule counted every charged check.
	if r := check(&sluicev1.CheckRequest{Tenant: "dave", Method: "/v1/images"}); r.Verdict != sluicev1.CheckVerdict_CHECK_VERDICT_ALLOWED {
		t.Fatalf("dave: %v", r)
	}
	// A known API key is its tenant: alice's key charges alice.
	for range 3 {
		check(&sluicev1.CheckRequest{ApiKey: DemoAliceKey, Tenant: "someone-else", Method: "/v1/images"})
	}
	if r := check(&sluicev1.CheckRequest{Tenant: "alice", Method: "/v1/images"}); r.Verdict != sluicev1.CheckVerdict_CHECK_VERDICT_REFUSED {
		t.Fatalf("alice after her key's three checks: %v, want refused", r)
	}

	// Cost: a trial key's 100 tokens an hour; refunds give back what was not used.
	trial := func(cost int64, refund bool) *sluicev1.CheckResponse {
		return check(&sluicev1.CheckRequest{Tenant: "erin", Key: "plan=trial", Cost: cost, Refund: refund})
	}
	if r := trial(80, false); r.Verdict != sluicev1.CheckVerdict_CHECK_VERDICT_ALLOWED {
		t.Fatalf("80 tokens: %v", r)
	}
	if r := trial(30, false); r.Verdict != sluicev1.CheckVerdict_CHECK_VERDICT_REFUSED || r.Rule != "tokens-per-key" {
		t.Fatalf("30 more tokens: %v, want refused", r)
	}
	if r := trial(50, true); r.Verdict != sluicev1.CheckVerdict_CHECK_VERDICT_ALLOWED || r.Rules[0].Remaining < 70 {
		t.Fatalf("refund of 50: %v, want allowed with 70 left", r)
	}
	if r := trial(30, false); r.Verdict != sluicev1.CheckVerdict_CHECK_VERDICT_ALLOWED {
		t.Fatalf("30 tokens after the refund: %v", r)
	}

	// A batch: each check on its own, in order.
	batch, err := c.CheckBatch(ctx, connect.NewRequest(&sluicev1.CheckBatchRequest{Checks: []*sluicev1.CheckRequest{
		{Tenant: "frank", Method: "/v1/images"}, {Tenant: "frank", Method: "/v1/images"},
		{Tenant: "frank", Method: "/v1/images"}, {Tenant: "frank", Method: "/v1/images"},
	}}))
	if err != nil {
		t.Fatal(err)
	}
	var verdicts []string
	for _, r := range batch.Msg.Results {
		verdicts = append(verdicts, r.Verdict.String())
	}
	if want := "CHECK_VERDICT_ALLOWED CHECK_VERDICT_ALLOWED CHECK_VERDICT_ALLOWED CHECK_VERDICT_REFUSED"; strings.Join(verdicts, " ") != want {
		t.Fatalf("batch verdicts %v, want %s", verdicts, want)
	}
}

func TestCheckRefusesBadInputNamingTheField(t *testing.T) {
	n := startNodeWith(t, 0, gatewayPolicy())
	ctx := context.Background()
	for _, c := range []struct {
		token string
		req   *sluicev1.CheckRequest
		code  connect.Code
		want  string
	}{
		{"", &sluicev1.CheckRequest{}, connect.CodeUnauthenticated, "authorization: missing"},
		{DemoAliceKey, &sluicev1.CheckRequest{}, connect.CodePermissionDenied, "not the gateway token"},
		{testGatewayToken, &sluicev1.CheckRequest{ClientIp: "not-an-ip"}, connect.CodeInvalidArgument, `client_ip: "not-an-ip" is not an IP address`},
		{testGatewayToken, &sluicev1.CheckRequest{Cost: -1}, connect.CodeInvalidArgument, "cost: -1 must be between 0"},
		{testGatewayToken, &sluicev1.CheckRequest{Key: "novalue"}, connect.CodeInvalidArgument, `key: "novalue" is not key=value pairs`},
		{testGatewayToken, &sluicev1.CheckRequest{Tenant: strings.Repeat("t", 300)}, connect.CodeInvalidArgument, "tenant: 300 bytes exceed the limit of 256"},
		{testGatewayToken, &sluicev1.CheckRequest{Method: "Submit"}, connect.CodeInvalidArgument, "method: \"Submit\" is a method of Sluice's own job API"},
		{testGatewayToken, &sluicev1.CheckRequest{Refund: true, CheckOnly: true}, connect.CodeInvalidArgument, "refund: a refund cannot be check_only"},
	} {
		_, err := limitClient(n, c.token).Check(ctx, connect.NewRequest(c.req))
		if connect.CodeOf(err) != c.code || err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %v %q", c.req, err, c.code, c.want)
		}
	}
	// The admin token may check too.
	if _, err := limitClient(n, DemoAdminToken).Check(ctx, connect.NewRequest(&sluicev1.CheckRequest{Tenant: "x"})); err != nil {
		t.Fatalf("admin token: %v", err)
	}
	big := &sluicev1.CheckBatchRequest{Checks: make([]*sluicev1.CheckRequest, maxCheckBatch+1)}
	for i := range big.Checks {
		big.Checks[i] = &sluicev1.CheckRequest{}
	}
	if _, err := limitClient(n, testGatewayToken).CheckBatch(ctx, connect.NewRequest(big)); connect.CodeOf(err) != connect.CodeInvalidArgument ||
		!strings.Contains(err.Error(), "checks: 1001 checks exceed the limit of 1000") {
		t.Fatalf("1001 checks: %v", err)
	}
}

// rlsClient is a gRPC client (grpc-go over h2c, as Envoy's own gRPC client
// speaks to a rate limit service) with the gateway token in its metadata,
// as Envoy's grpc_service.initial_metadata sends it.
func rlsClient(t *testing.T, n *Node) (rlsv3.RateLimitServiceClient, context.Context) {
	conn, err := grpc.NewClient(n.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+testGatewayToken)
	return rlsv3.NewRateLimitServiceClient(conn), ctx
}

func descriptor(kv ...string) *rlcommon.RateLimitDescriptor {
	d := &rlcommon.RateLimitDescriptor{}
	for i := 0; i+1 < len(kv); i += 2 {
		d.Entries = append(d.Entries, &rlcommon.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
	}
	return d
}

func responseHeader(r *rlsv3.RateLimitResponse, name string) string {
	for _, h := range r.GetResponseHeadersToAdd() {
		if strings.EqualFold(h.GetKey(), name) {
			return h.GetValue()
		}
	}
	return ""
}

// TestEnvoyRateLimitServiceOverGRPC sends the requests an Envoy ratelimit
// filter sends (remote_address, request_headers and generic_key actions,
// hits_addend) and reads the answers as Envoy does.
func TestEnvoyRateLimitServiceOverGRPC(t *testing.T) {
	n := startNodeWith(t, 0, gatewayPolicy())
	c, ctx := rlsClient(t, n)
	ask := func(req *rlsv3.RateLimitRequest) *rlsv3.RateLimitResponse {
		t.Helper()
		res, err := c.ShouldRateLimit(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	// Envoy's actions: remote_address, then request_headers x-tenant → tenant and :path → path.
	images := func() *rlsv3.RateLimitRequest {
		return &rlsv3.RateLimitRequest{Domain: "sluice", Descriptors: []*rlcommon.RateLimitDescriptor{
			descriptor("remote_address", "198.51.100.7"),
			descriptor("tenant", "carol", "path", "/v1/images?size=1024"),
		}}
	}
	for i := range 3 {
		r := ask(images())
		if r.OverallCode != rlsv3.RateLimitResponse_OK || len(r.Statuses) != 2 {
			t.Fatalf("request %d: %v", i+1, r)
		}
		st := r.Statuses[1]
		if st.Code != rlsv3.RateLimitResponse_OK || st.CurrentLimit.GetName() != "images-per-tenant" || st.LimitRemaining != uint32(2-i) ||
			st.CurrentLimit.GetRequestsPerUnit() != 3 || st.CurrentLimit.GetUnit() != rlsv3.RateLimitResponse_RateLimit_MINUTE {
			t.Fatalf("request %d: status %v, want images-per-tenant 3/minute with %d left", i+1, st, 2-i)
		}
	}
	r := ask(images())
	if r.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT || r.Statuses[0].Code != rlsv3.RateLimitResponse_OK ||
		r.Statuses[1].Code != rlsv3.RateLimitResponse_OVER_LIMIT || r.Statuses[1].DurationUntilReset.AsDuration() <= 0 {
		t.Fatalf("fourth request: %v, want OVER_LIMIT on the second descriptor", r)
	}
	if responseHeader(r, "retry-after") == "" || !strings.Contains(responseHeader(r, "ratelimit"), `"images-per-tenant";r=0`) ||
		!strings.Contains(string(r.RawBody), `rate limited by rule "images-per-tenant"`) {
		t.Fatalf("fourth request's headers %v, body %q", r.ResponseHeadersToAdd, r.RawBody)
	}

	// All or nothing: the IP rule allows 2 an hour for 203.0.113.0/24. A request
	// whose other descriptor is refused charges neither.
	over := &rlsv3.RateLimitRequest{Domain: "sluice", Descriptors: []*rlcommon.RateLimitDescriptor{
		descriptor("remote_address", "203.0.113.9"), descriptor("tenant", "carol", "path", "/v1/images"),
	}}
	for range 3 {
		if r := ask(over); r.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT || r.Statuses[0].Code != rlsv3.RateLimitResponse_OK {
			t.Fatalf("refused by the tenant's window: %v", r)
		}
	}
	ip := &rlsv3.RateLimitRequest{Domain: "sluice", Descriptors: []*rlcommon.RateLimitDescriptor{descriptor("remote_address", "203.0.113.9")}}
	for i := range 2 {
		if r := ask(ip); r.OverallCode != rlsv3.RateLimitResponse_OK || r.Statuses[0].LimitRemaining != uint32(1-i) {
			t.Fatalf("IP check %d after three refused requests: %v, want OK with %d left (nothing charged before)", i+1, r, 1-i)
		}
	}
	if r := ask(ip); r.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("third IP check: %v", r)
	}

	// hits_addend counts cost; a descriptor's hits_addend of 0 only checks.
	tokens := func(hits uint32, per *wrapperspb.UInt64Value) *rlsv3.RateLimitResponse {
		d := descriptor("tenant", "erin", "plan", "trial")
		d.HitsAddend = per
		return ask(&rlsv3.RateLimitRequest{Domain: "sluice", HitsAddend: hits, Descriptors: []*rlcommon.RateLimitDescriptor{d}})
	}
	if r := tokens(60, nil); r.OverallCode != rlsv3.RateLimitResponse_OK || r.Statuses[0].LimitRemaining != 40 {
		t.Fatalf("60 tokens: %v", r)
	}
	for range 3 {
		if r := tokens(0, wrapperspb.UInt64(0)); r.OverallCode != rlsv3.RateLimitResponse_OK || r.Statuses[0].LimitRemaining != 40 {
			t.Fatalf("a check of 0 hits: %v, want OK with 40 still left", r)
		}
	}
	if r := tokens(1, wrapperspb.UInt64(41)); r.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("41 tokens with 40 left: %v", r)
	}
	if r := tokens(0, nil); r.OverallCode != rlsv3.RateLimitResponse_OK || r.Statuses[0].LimitRemaining != 39 {
		t.Fatalf("hits_addend unset counts 1: %v", r)
	}

	// A value too long to key on is keyed by its digest, never refused (an error
	// lets the request through an Envoy that fails open): a long query is cut,
	// and a long header value still has its own counter.
	long := &rlsv3.RateLimitRequest{Domain: "sluice", Descriptors: []*rlcommon.RateLimitDescriptor{
		descriptor("tenant", "carol", "path", "/v1/images?pad="+strings.Repeat("x", 600)),
		descriptor("api_key", strings.Repeat("k", 700), "user", strings.Repeat("u", 900)),
	}}
	if r := ask(long); r.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT || r.Statuses[0].GetCurrentLimit().GetName() != "images-per-tenant" {
		t.Fatalf("carol's images with a 600-byte query: %v, want her window (spent) to refuse it", r)
	}

	// What Envoy could send that Sluice cannot read is refused, naming the field.
	for _, c2 := range []struct {
		req  *rlsv3.RateLimitRequest
		want string
	}{
		{&rlsv3.RateLimitRequest{Descriptors: []*rlcommon.RateLimitDescriptor{descriptor("a", "b")}}, "domain: must not be empty"},
		{&rlsv3.RateLimitRequest{Domain: "sluice"}, "descriptors: needs at least one descriptor"},
		{&rlsv3.RateLimitRequest{Domain: "sluice", Descriptors: []*rlcommon.RateLimitDescriptor{{}}}, "descriptors[0].entries: needs at least one entry"},
		{&rlsv3.RateLimitRequest{Domain: "sluice", Descriptors: []*rlcommon.RateLimitDescriptor{descriptor("remote_address", "x")}}, `descriptors[0].client_ip: "x" is not an IP address`},
		{&rlsv3.RateLimitRequest{Domain: "sluice", Descriptors: []*rlcommon.RateLimitDescriptor{descriptor("tenant", "a", "tenant", "b")}}, `descriptors[0].entries[1].key: "tenant" appears twice`},
		{&rlsv3.RateLimitRequest{Domain: "sluice", Descriptors: []*rlcommon.RateLimitDescriptor{descriptor("", "b")}}, "descriptors[0].entries[0].key: must not be empty"},
	} {
		_, err := c.ShouldRateLimit(ctx, c2.req)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), c2.want) {
			t.Errorf("%v: %v, want invalid argument %q", c2.req, err, c2.want)
		}
	}
	// Without the token: unauthenticated, as gRPC says it.
	conn, _ := grpc.NewClient(n.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer conn.Close()
	if _, err := rlsv3.NewRateLimitServiceClient(conn).ShouldRateLimit(context.Background(), images()); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no token: %v", err)
	}
}

// TestShadowPolicyCountsAndLogsButNeverRefuses: with the policy's shadow
// switch every rule decides and counts but refuses nothing; the would-be
// refusals are logged and in the metrics.
func TestShadowPolicyCountsAndLogsButNeverRefuses(t *testing.T) {
	p := gatewayPolicy()
	p.Shadow = true
	logs := &logLines{}
	n := startNodeTuned(t, 0, p, func(c *Config) { c.Logger = logs.logger() })
	c := limitClient(n, testGatewayToken)
	for i := range 6 {
		res, err := c.Check(context.Background(), connect.NewRequest(&sluicev1.CheckRequest{Tenant: "carol", Method: "/v1/images"}))
		if err != nil {
			t.Fatal(err)
		}
		r := res.Msg
		if r.Verdict != sluicev1.CheckVerdict_CHECK_VERDICT_ALLOWED || !r.Rules[0].Shadow || r.Rules[0].Refused != (i >= 3) {
			t.Fatalf("check %d: %v, want allowed, its shadow rule refusing from the fourth", i+1, r)
		}
	}
	if !strings.Contains(logs.String(), `msg="shadow rule would have refused" rule=images-per-tenant refusals_since_last_line=1 tenant=carol`) {
		t.Fatalf("no shadow log line:\n%s", logs.String())
	}
	res, err := http.Get(baseURL(n) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{
		`sluice_limiter_decisions_total{outcome="shadow_over_limit",rule="images-per-tenant",scope="leader"} 3`,
		`sluice_limit_checks_total{outcome="allowed",scope="leader",source="check"} 6`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestChecksThroughAFollower: a follower forwards both APIs to the leader,
// and the counters are the cluster's: checks through any node share them.
func TestChecksThroughAFollower(t *testing.T) {
	c := startClusterWith(t, 3, 0, func(cfg *Config) {
		if cfg.Policy != nil {
			cfg.Policy = gatewayPolicy()
		}
	})
	leader := c.leader()
	f := c.followers()[0]
	img := &sluicev1.CheckRequest{Tenant: "carol", Method: "/v1/images"}
	for i, n := range []*Node{f, leader, f} {
		res, err := limitClient(n, testGatewayToken).Check(context.Background(), connect.NewRequest(img))
		if err != nil || res.Msg.Verdict != sluicev1.CheckVerdict_CHECK_VERDICT_ALLOWED || res.Msg.Rules[0].Remaining != int64(2-i) {
			t.Fatalf("check %d: %v %v", i+1, res, err)
		}
	}
	rc, ctx := rlsClient(t, c.followers()[1])
	r, err := rc.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "sluice", Descriptors: []*rlcommon.RateLimitDescriptor{descriptor("tenant", "carol", "path", "/v1/images")}})
	if err != nil || r.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT || responseHeader(r, "retry-after") == "" {
		t.Fatalf("fourth check, through the other follower over gRPC: %v %v", r, err)
	}
	// Bad input is refused by the follower itself.
	_, err = limitClient(f, testGatewayToken).Check(context.Background(), connect.NewRequest(&sluicev1.CheckRequest{ClientIp: "nope"}))
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeInvalidArgument {
		t.Fatalf("bad input through a follower: %v", err)
	}
}

// TestDemoPolicyTakesTheDemoGatewayToken: `sluice dev` prints dev-gateway
// as its gateway token, and the demo policy's LimitService takes it; a
// tenant's key is refused there.
func TestDemoPolicyTakesTheDemoGatewayToken(t *testing.T) {
	n := startNodeWith(t, 0, DemoPolicy())
	ctx := context.Background()
	res, err := limitClient(n, DemoGatewayToken).Check(ctx, connect.NewRequest(&sluicev1.CheckRequest{ApiKey: DemoAliceKey, CheckOnly: true}))
	if err != nil {
		t.Fatalf("the demo gateway token: %v", err)
	}
	if res.Msg.Verdict != sluicev1.CheckVerdict_CHECK_VERDICT_ALLOWED {
		t.Errorf("alice's first check: %v, want allowed", res.Msg.Verdict)
	}
	if _, err := limitClient(n, DemoAliceKey).Check(ctx, connect.NewRequest(&sluicev1.CheckRequest{})); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Errorf("a tenant's key as the gateway token: %v, want permission_denied", err)
	}
}
