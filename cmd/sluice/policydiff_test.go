package main

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/node"
	"github.com/sluicehq/sluice/policy"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

func TestPolicyDiffNamesEachAddedRemovedAndChangedEntry(t *testing.T) {
	cur := node.DemoPolicy()
	if d := policyDiff(cur, proto.Clone(cur).(*sluicev1.Policy)); len(d) != 0 {
		t.Fatalf("equal policies differ: %q", d)
	}
	next := proto.Clone(cur).(*sluicev1.Policy)
	next.Tiers = append(next.Tiers, &sluicev1.Tier{Name: "enterprise", Weight: 8})
	next.Tiers[1].Weight = 6
	next.Tenants = next.Tenants[1:] // alice removed
	newKey := policy.HashKey("bob-2")
	next.Tenants[0].ApiKeySha256 = append(next.Tenants[0].ApiKeySha256, newKey)
	next.Tenants = append(next.Tenants, &sluicev1.Tenant{Name: "carol", Tier: "enterprise", ApiKeySha256: []string{policy.HashKey("carol")}})
	next.Models[0].DefaultDuration = durationpb.New(3 * time.Second)
	next.Rules = next.Rules[1:]
	next.AdminTokenSha256 = ""
	next.Defaults.MaxAttempts = 5

	got := strings.Join(policyDiff(cur, next), "\n")
	t.Logf("diff:\n%s", got)
	for _, want := range []string{
		"tiers:\n  + enterprise {weight: 8}\n  ~ pro: weight: 4 → 6",
		"  + carol {tier: \"enterprise\"} (1 API key: " + policy.HashKey("carol")[:8] + "…)",
		"  - alice (1 API key)",
		"  ~ bob: API keys +1 -0 (added " + newKey[:8] + "…)",
		"models:\n  ~ sdxl: default_duration: 2s → 3s",
		"rules:\n  - free-rate",
		"  ~ admin_token_sha256: " + policy.HashKey(node.DemoAdminToken)[:8] + "… → (unset)",
		"  ~ defaults.max_attempts: 3 → 5",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the diff lacks %q", want)
		}
	}
	for _, h := range []string{newKey, policy.HashKey("carol"), policy.HashKey(node.DemoAdminToken)} {
		if strings.Contains(got, h) {
			t.Errorf("the diff prints a whole hash %s", h)
		}
	}
}
