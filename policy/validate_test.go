package policy

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/limiter"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

func validPolicy() *sluicev1.Policy {
	return &sluicev1.Policy{
		Tiers:   []*sluicev1.Tier{{Name: "free", Weight: 1}, {Name: "pro", Weight: 4}},
		Tenants: []*sluicev1.Tenant{{Name: "alice", Tier: "free", ApiKeySha256: []string{HashKey("a")}}, {Name: "bob", Tier: "pro"}},
		Models:  []*sluicev1.Model{{Name: "sdxl", DefaultDuration: durationpb.New(2 * time.Second)}},
		Rules: []*sluicev1.Rule{{Name: "free-rate", Match: &sluicev1.RuleMatch{Tier: "free"},
			Limit: &sluicev1.Rule_TokenBucket{TokenBucket: &sluicev1.TokenBucketLimit{Count: 10, Per: durationpb.New(time.Minute), Burst: 5}}}},
		Scheduling: &sluicev1.Scheduling{MaxQueued: 10},
		Defaults:   &sluicev1.Defaults{MaxAttempts: 3},
	}
}

// TestValidateNamesTheBadField: each section's checker refuses its own
// mistakes and names the field, and a valid policy passes.
func TestValidateNamesTheBadField(t *testing.T) {
	if err := Validate(validPolicy()); err != nil {
		t.Fatalf("a valid policy was refused: %v", err)
	}
	for _, tc := range []struct {
		want string
		edit func(p *sluicev1.Policy)
	}{
		{"policy: missing", nil},
		{"tiers: 101 entries exceed the limit of 100", func(p *sluicev1.Policy) { p.Tiers = make([]*sluicev1.Tier, MaxTiers+1) }},
		{"tiers[1].name: \"free\" appears twice", func(p *sluicev1.Policy) { p.Tiers[1].Name = "free" }},
		{"tiers[0].weight: -1 is negative", func(p *sluicev1.Policy) { p.Tiers[0].Weight = -1 }},
		{"tenants[1].tier: \"gold\" is not one of the policy's tiers", func(p *sluicev1.Policy) { p.Tenants[1].Tier = "gold" }},
		{"tenants[0].max_queued: -2 is negative", func(p *sluicev1.Policy) { p.Tenants[0].MaxQueued = -2 }},
		{"tenants[1].api_key_sha256[0]: the same key is also given to tenant \"alice\"", func(p *sluicev1.Policy) {
			p.Tenants[1].ApiKeySha256 = []string{HashKey("a")}
		}},
		{"tenants[0].api_key_sha256[0]: must be 64 hex digits", func(p *sluicev1.Policy) { p.Tenants[0].ApiKeySha256 = []string{"abc"} }},
		{"admin_token_sha256: must be 64 hex digits", func(p *sluicev1.Policy) { p.AdminTokenSha256 = "x" }},
		{"models[0].name: must not be empty", func(p *sluicev1.Policy) { p.Models[0].Name = "" }},
		{"models[0].run_timeout: must be a non-negative duration", func(p *sluicev1.Policy) { p.Models[0].RunTimeout = durationpb.New(-time.Second) }},
		{"models[0].gpus: 65 is outside 0–64", func(p *sluicev1.Policy) { p.Models[0].Gpus = 65 }},
		{"rules[0].match.tier: \"gold\" is not one of the policy's tiers", func(p *sluicev1.Policy) { p.Rules[0].Match.Tier = "gold" }},
		{"rules[0].token_bucket.per: must be a positive duration", func(p *sluicev1.Policy) { p.Rules[0].GetTokenBucket().Per = nil }},
		{"webhooks.max_in_flight_per_tenant: -1 must be between 0 and 1000", func(p *sluicev1.Policy) {
			p.Webhooks = &sluicev1.WebhookSettings{MaxInFlightPerTenant: -1}
		}},
		{"scheduling.max_queued_per_model: -1 is negative", func(p *sluicev1.Policy) { p.Scheduling.MaxQueuedPerModel = -1 }},
		{"scheduling.reserve_after: must be a non-negative duration", func(p *sluicev1.Policy) { p.Scheduling.ReserveAfter = durationpb.New(-time.Second) }},
		{"defaults.max_attempts: 101 is outside 0–100", func(p *sluicev1.Policy) { p.Defaults.MaxAttempts = 101 }},
		{"defaults.job_retention: must be a non-negative duration", func(p *sluicev1.Policy) { p.Defaults.JobRetention = durationpb.New(-time.Hour) }},
	} {
		var p *sluicev1.Policy
		if tc.edit != nil {
			p = proto.Clone(validPolicy()).(*sluicev1.Policy)
			tc.edit(p)
		}
		if err := Validate(p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want an error containing %q, got %v", tc.want, err)
		}
	}
}

// TestCompiledPolicyFeedsLimiterAndScheduler: what a policy compiles into
// carries its rules and weights.
func TestCompiledPolicyFeedsLimiterAndScheduler(t *testing.T) {
	p := validPolicy()
	rules, err := LimiterRules(p)
	if err != nil || len(rules) != 1 || rules[0].Name != "free-rate" || rules[0].Match.Tier != "free" || rules[0].Scope != limiter.PerTenant {
		t.Fatalf("limiter rules %+v, %v", rules, err)
	}
	cfg := SchedulerConfig(p)
	if len(cfg.Tiers) != 2 || cfg.Tiers[1].Weight != 4 || len(cfg.Tenants) != 2 || cfg.Tenants[0].Tier != "free" || cfg.MaxQueued != 10 {
		t.Fatalf("scheduler config %+v", cfg)
	}
}
