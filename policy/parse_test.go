package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
)

func TestParsePolicyYAMLAndJSON(t *testing.T) {
	yml := `
tiers:
  - {name: free, weight: 1}
  - {name: pro, weight: 4}
tenants:
  - name: alice
    tier: free
    api_key_sha256: ["` + strings.Repeat("ab", 32) + `"]
models:
  - name: sdxl
    default_duration: 2s
    gpu_memory_mb: 16384
defaults:
  queue_timeout: 10m
  max_attempts: 3
`
	p, err := Parse([]byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	if p.Tenants[0].Name != "alice" || p.Models[0].DefaultDuration.AsDuration().Seconds() != 2 || p.Defaults.MaxAttempts != 3 {
		t.Fatalf("parsed %v", p)
	}
	js := `{"tiers":[{"name":"free"},{"name":"pro","weight":4}],"tenants":[{"name":"alice","tier":"free","apiKeySha256":["` + strings.Repeat("ab", 32) + `"]}],"models":[{"name":"sdxl","defaultDuration":"2s","gpuMemoryMb":"16384"}],"defaults":{"queueTimeout":"600s","maxAttempts":3}}`
	q, err := Parse([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	p.Tiers[0].Weight = 0
	if !proto.Equal(p, q) {
		t.Fatalf("YAML and JSON forms differ:\n%v\n%v", p, q)
	}
}

func TestParsePolicyNamesTheBadField(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"tenants: [{name: a, tier: gold}]", `tenants[0].tier: "gold" is not one of the policy's tiers`},
		{"tiers: [{name: free}, {name: free}]", `tiers[1].name: "free" appears twice`},
		{"tiers: [{name: free}]\ntenants: [{name: a, tier: free, api_key_sha256: [abc]}]", "tenants[0].api_key_sha256[0]: must be 64 hex digits"},
		{"models: [{name: m, default_duration: -1s}]", "models[0].default_duration: must be a non-negative duration"},
		{"models: [{name: m, gpus: 100}]", "models[0].gpus: 100 is outside 0–64"},
		{"modles: []", `unknown field "modles"`},
		{"tiers: 3", "policy:"},
		{"[", "not valid YAML or JSON"},
		{"defaults: {queue_timeout: soon}", `defaults.queue_timeout: "soon" is not a duration`},
		{"webhooks: {retry_schedule: [5s, soon]}", `webhooks.retry_schedule[1]: "soon" is not a duration`},
		{"models: [{name: ''}]", "models[0].name: must not be empty"},
		{"models: [{name: m, size: {terms: []}}]", "models[0].size.terms: 0 terms; give 1–4"},
		{"models: [{name: m, size: {terms: [{fields: [a]}, {fields: [b]}], reserve: true}}]", "models[0].size.reserve: reservations by size take one term; this declaration has 2"},
		{"models: [{name: m, size: {terms: [{fields: [steps, 'max tokens']}]}}]", `models[0].size.terms[0].fields[1]: "max tokens" is not an input field name`},
	} {
		_, err := Parse([]byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", tc.doc, err, tc.want)
		}
	}
}

func TestLoadPolicyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte("tiers: [{name: free}]\ntenants: [{name: x, tier: nope}]"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+": policy: tenants[0].tier") {
		t.Fatalf("LoadPolicy: %v", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Fatal("missing file accepted")
	}
}

// TestExamplePolicyLoads keeps examples/policy.yaml, which the README
// points to, a valid policy that uses what it shows.
func TestExamplePolicyLoads(t *testing.T) {
	p, err := Load("../examples/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Rules) != 5 || p.Rules[2].GetChallenge().GetDifficulty() != 18 || !p.Tiers[2].Strict || p.Tenants[1].MaxRunning != 20 ||
		p.Scheduling.GetReserveAfter().AsDuration() != 30*time.Second || p.Scheduling.MaxQueuedPerTenant != 10000 {
		t.Fatalf("example policy lost fields: %v", p)
	}
	if p.Tenants[0].ApiKeySha256[0] != HashKey("dev-alice") {
		t.Fatal("the example's alice key is not dev-alice")
	}
}
