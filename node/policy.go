package node

import (
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/policy"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// Demo credentials of the built-in policy; `sluice dev` prints them.
const (
	DemoAliceKey   = "dev-alice"
	DemoBobKey     = "dev-bob"
	DemoAdminToken = "dev-admin"
	// DemoGatewayToken is what a gateway presents to LimitService and
	// Envoy's rate-limit service (sluice check --key dev-gateway).
	DemoGatewayToken = "dev-gateway"
	// DemoExecutorToken is what the demo executors present.
	DemoExecutorToken = "dev-executor"
	// DemoWebhookSecret signs alice's and bob's webhooks.
	DemoWebhookSecret = "whsec_ZGV2LXdlYmhvb2stc2VjcmV0LW5vdC1mb3ItcHJvZHVjdGlvbg=="
)

// DemoPolicy is what `sluice dev` runs without --policy: tenants alice
// (free) and bob (pro), models sdxl (2 s) and llama-8b (500 ms).
func DemoPolicy() *sluicev1.Policy {
	return &sluicev1.Policy{
		Tiers: []*sluicev1.Tier{{Name: "free", Weight: 1}, {Name: "pro", Weight: 4}},
		Tenants: []*sluicev1.Tenant{
			{Name: "alice", Tier: "free", ApiKeySha256: []string{policy.HashKey(DemoAliceKey)}, WebhookSecrets: []string{DemoWebhookSecret}},
			{Name: "bob", Tier: "pro", ApiKeySha256: []string{policy.HashKey(DemoBobKey)}, WebhookSecrets: []string{DemoWebhookSecret}},
		},
		// Receivers on this machine, over http: for a dev cluster only.
		Webhooks: &sluicev1.WebhookSettings{AllowHttp: true, AllowPrivate: true},
		Models: []*sluicev1.Model{
			{Name: "sdxl", DefaultDuration: durationpb.New(2 * time.Second), GpuMemoryMb: 16384},
			{Name: "llama-8b", DefaultDuration: durationpb.New(500 * time.Millisecond), GpuMemoryMb: 20480},
		},
		AdminTokenSha256:    policy.HashKey(DemoAdminToken),
		ExecutorTokenSha256: policy.HashKey(DemoExecutorToken),
		GatewayTokenSha256:  policy.HashKey(DemoGatewayToken),
		Defaults: &sluicev1.Defaults{
			QueueTimeout: durationpb.New(30 * time.Minute),
			MaxAttempts:  3,
			RetryBackoff: durationpb.New(time.Second),
			MaxBackoff:   durationpb.New(time.Minute),
			JobRetention: durationpb.New(7 * 24 * time.Hour),
		},
		Rules: append(append(demoTierRules("free", 1), demoTierRules("pro", 10)...), demoReadRules()...),
		Scheduling: &sluicev1.Scheduling{
			ReserveAfter:       durationpb.New(30 * time.Second),
			MaxQueued:          100000,
			MaxQueuedPerTenant: 10000,
			MaxPredictedWait:   durationpb.New(time.Hour),
		},
	}
}

// demoReadRules limit polling, per API key and node: GetJob 100 a second
// (bursts of 200), ListJobs 20 (bursts of 40). Watching a job (WatchJob)
// is what a client should do instead.
func demoReadRules() []*sluicev1.Rule {
	rule := func(method string, perSecond int64) *sluicev1.Rule {
		return &sluicev1.Rule{Name: "poll-" + strings.ToLower(strings.TrimPrefix(method, "Get")), Scope: sluicev1.RuleScope_RULE_SCOPE_API_KEY,
			Match: &sluicev1.RuleMatch{Method: method},
			Limit: &sluicev1.Rule_TokenBucket{TokenBucket: &sluicev1.TokenBucketLimit{Count: perSecond, Per: durationpb.New(time.Second), Burst: 2 * perSecond}}}
	}
	return []*sluicev1.Rule{rule("GetJob", 100), rule("ListJobs", 20)}
}

// demoTierRules are the demo limits of a tier, scaled: per tenant, 10
// requests a minute with bursts of 5, 20 jobs a day, 2 jobs in flight.
func demoTierRules(tier string, scale int64) []*sluicev1.Rule {
	match := &sluicev1.RuleMatch{Tier: tier}
	return []*sluicev1.Rule{
		{Name: tier + "-rate", Match: match, Limit: &sluicev1.Rule_TokenBucket{TokenBucket: &sluicev1.TokenBucketLimit{
			Count: 10 * scale, Per: durationpb.New(time.Minute), Burst: 5 * scale}}},
		{Name: tier + "-daily", Match: match, Limit: &sluicev1.Rule_Quota{Quota: &sluicev1.QuotaLimit{
			Limit: 20 * scale, Period: sluicev1.QuotaPeriod_QUOTA_PERIOD_DAY}}},
		{Name: tier + "-inflight", Match: match, Limit: &sluicev1.Rule_Concurrency{Concurrency: &sluicev1.ConcurrencyLimit{
			Limit: 2 * scale}}},
	}
}
