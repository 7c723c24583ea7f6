package node

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/fsm"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// MaxPolicyBytes bounds a policy file.
const MaxPolicyBytes = 8 << 20

// ParsePolicy reads the YAML or JSON form of a sluice.v1.Policy and
// validates it. Errors name the offending field.
func ParsePolicy(data []byte) (*sluicev1.Policy, error) {
	if len(data) > MaxPolicyBytes {
		return nil, fmt.Errorf("policy: %d bytes exceed the %d-byte limit", len(data), MaxPolicyBytes)
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("policy: not valid YAML or JSON: %w", err)
	}
	p := &sluicev1.Policy{}
	js, err = normalizeDurations(js, p.ProtoReflect().Descriptor())
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if err := protojson.Unmarshal(js, p); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if err := fsm.ValidatePolicy(p); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return p, nil
}

// normalizeDurations rewrites Go-style durations ("10m", "1h30m") in the
// message's Duration fields into the "600s" form protojson requires, so
// policy files can be written the way people write durations.
func normalizeDurations(js []byte, md protoreflect.MessageDescriptor) ([]byte, error) {
	var doc any
	if err := json.Unmarshal(js, &doc); err != nil {
		return nil, err
	}
	if err := walkDurations(doc, md, ""); err != nil {
		return nil, err
	}
	return json.Marshal(doc)
}

func walkDurations(v any, md protoreflect.MessageDescriptor, path string) error {
	obj, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	for key, val := range obj {
		fd := md.Fields().ByJSONName(key)
		if fd == nil {
			fd = md.Fields().ByName(protoreflect.Name(key))
		}
		if fd == nil || fd.Message() == nil {
			continue
		}
		field := strings.TrimPrefix(path+"."+string(fd.Name()), ".")
		if fd.Message().FullName() == "google.protobuf.Duration" {
			if xs, ok := val.([]any); ok && fd.IsList() {
				for i, x := range xs {
					d, err := durationJSON(fmt.Sprintf("%s[%d]", field, i), x)
					if err != nil {
						return err
					}
					xs[i] = d
				}
				continue
			}
			d, err := durationJSON(field, val)
			if err != nil {
				return err
			}
			obj[key] = d
			continue
		}
		if fd.IsList() {
			if xs, ok := val.([]any); ok {
				for i, x := range xs {
					if err := walkDurations(x, fd.Message(), fmt.Sprintf("%s[%d]", field, i)); err != nil {
						return err
					}
				}
			}
			continue
		}
		if !fd.IsMap() {
			if err := walkDurations(val, fd.Message(), field); err != nil {
				return err
			}
		}
	}
	return nil
}

// durationJSON turns a duration such as "2s" into protojson's "2s" form.
func durationJSON(field string, val any) (string, error) {
	s, ok := val.(string)
	if !ok {
		return "", fmt.Errorf("%s: want a duration such as \"2s\" or \"10m\"", field)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return "", fmt.Errorf("%s: %q is not a duration such as \"2s\" or \"10m\"", field, s)
	}
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s", nil
}

// LoadPolicy reads and validates a policy file.
func LoadPolicy(path string) (*sluicev1.Policy, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Size() > MaxPolicyBytes {
		return nil, fmt.Errorf("%s: %d bytes exceed the %d-byte limit", path, fi.Size(), MaxPolicyBytes)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p, err := ParsePolicy(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// Demo credentials of the built-in policy; `sluice dev` prints them.
const (
	DemoAliceKey   = "dev-alice"
	DemoBobKey     = "dev-bob"
	DemoAdminToken = "dev-admin"
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
			{Name: "alice", Tier: "free", ApiKeySha256: []string{fsm.HashKey(DemoAliceKey)}, WebhookSecrets: []string{DemoWebhookSecret}},
			{Name: "bob", Tier: "pro", ApiKeySha256: []string{fsm.HashKey(DemoBobKey)}, WebhookSecrets: []string{DemoWebhookSecret}},
		},
		// Receivers on this machine, over http: for a dev cluster only.
		Webhooks: &sluicev1.WebhookSettings{AllowHttp: true, AllowPrivate: true},
		Models: []*sluicev1.Model{
			{Name: "sdxl", DefaultDuration: durationpb.New(2 * time.Second), GpuMemoryMb: 16384},
			{Name: "llama-8b", DefaultDuration: durationpb.New(500 * time.Millisecond), GpuMemoryMb: 20480},
		},
		AdminTokenSha256:    fsm.HashKey(DemoAdminToken),
		ExecutorTokenSha256: fsm.HashKey(DemoExecutorToken),
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
