package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/predict"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/limiter"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// Limits on a policy, so that a bad file is refused instead of exhausting a node.
const (
	MaxTenants = 100000
	MaxModels  = 1000
	MaxTiers   = 100
	MaxNameLen = 128
	MaxRules   = 1000
)

// Defaults used where the policy leaves a value zero.
const (
	DefaultMaxAttempts  = 3
	DefaultRetryBackoff = time.Second
	DefaultMaxBackoff   = time.Minute
	DefaultJobRetention = 7 * 24 * time.Hour
	DefaultGPUs         = 1
	MinRunTimeout       = time.Minute
)

// HashKey returns the hex SHA-256 of an API key or admin token, the form in
// which the policy stores them.
func HashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// Validate checks a policy and names the first bad field.
func Validate(p *sluicev1.Policy) error {
	if p == nil {
		return fmt.Errorf("policy: missing")
	}
	if err := checkSizes(p); err != nil {
		return err
	}
	tiers, err := validateTiers(p.Tiers)
	if err != nil {
		return err
	}
	tenants, err := validateTenants(p.Tenants, tiers)
	if err != nil {
		return err
	}
	if p.AdminTokenSha256 != "" {
		if err := checkHash("admin_token_sha256", p.AdminTokenSha256); err != nil {
			return err
		}
	}
	models, err := validateModels(p.Models)
	if err != nil {
		return err
	}
	for _, check := range []func() error{
		func() error { return validateRules(p, tiers, tenants, models) },
		func() error { return validateWebhooks(p) },
		func() error { return validateScheduling(p.Scheduling) },
		func() error { return validateDefaults(p.Defaults) },
	} {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

// checkSizes bounds the lists a policy holds.
func checkSizes(p *sluicev1.Policy) error {
	for _, l := range []struct {
		field    string
		n, limit int
	}{{"tiers", len(p.Tiers), MaxTiers}, {"tenants", len(p.Tenants), MaxTenants}, {"models", len(p.Models), MaxModels}} {
		if l.n > l.limit {
			return fmt.Errorf("%s: %d entries exceed the limit of %d", l.field, l.n, l.limit)
		}
	}
	return nil
}

// validateTiers checks the tiers and returns their names.
func validateTiers(ts []*sluicev1.Tier) (map[string]bool, error) {
	tiers := make(map[string]bool, len(ts))
	for i, t := range ts {
		field := fmt.Sprintf("tiers[%d]", i)
		if err := checkUnique(field, t.Name, tiers); err != nil {
			return nil, err
		}
		if t.Weight < 0 {
			return nil, fmt.Errorf("%s.weight: %d is negative", field, t.Weight)
		}
	}
	return tiers, nil
}

// validateTenants checks the tenants, each in one of tiers and with keys
// no other tenant has, and returns their names.
func validateTenants(ts []*sluicev1.Tenant, tiers map[string]bool) (map[string]bool, error) {
	names := make(map[string]bool, len(ts))
	keys := make(map[string]string)
	for i, t := range ts {
		field := fmt.Sprintf("tenants[%d]", i)
		if err := checkUnique(field, t.Name, names); err != nil {
			return nil, err
		}
		if !tiers[t.Tier] {
			return nil, fmt.Errorf("%s.tier: %q is not one of the policy's tiers", field, t.Tier)
		}
		for _, n := range []struct {
			name string
			v    int64
		}{{"weight", int64(t.Weight)}, {"max_running", int64(t.MaxRunning)}, {"max_queued", t.MaxQueued}} {
			if n.v < 0 {
				return nil, fmt.Errorf("%s.%s: %d is negative", field, n.name, n.v)
			}
		}
		for j, h := range t.ApiKeySha256 {
			kf := fmt.Sprintf("%s.api_key_sha256[%d]", field, j)
			if err := checkHash(kf, h); err != nil {
				return nil, err
			}
			if other, ok := keys[h]; ok {
				return nil, fmt.Errorf("%s: the same key is also given to tenant %q", kf, other)
			}
			keys[h] = t.Name
		}
	}
	return names, nil
}

// validateModels checks the models and returns their names.
func validateModels(ms []*sluicev1.Model) (map[string]bool, error) {
	models := make(map[string]bool, len(ms))
	for i, m := range ms {
		field := fmt.Sprintf("models[%d]", i)
		if err := checkUnique(field, m.Name, models); err != nil {
			return nil, err
		}
		if err := nonNegative(field+".default_duration", m.DefaultDuration); err != nil {
			return nil, err
		}
		if err := nonNegative(field+".run_timeout", m.RunTimeout); err != nil {
			return nil, err
		}
		if m.Gpus < 0 || m.Gpus > 64 {
			return nil, fmt.Errorf("%s.gpus: %d is outside 0–64", field, m.Gpus)
		}
		if m.GpuMemoryMb < 0 {
			return nil, fmt.Errorf("%s.gpu_memory_mb: %d is negative", field, m.GpuMemoryMb)
		}
		if err := predict.Validate(field+".size", m.Size); err != nil {
			return nil, err
		}
	}
	return models, nil
}

// validateDefaults checks the job defaults.
func validateDefaults(d *sluicev1.Defaults) error {
	if d == nil {
		return nil
	}
	for _, f := range []struct {
		name string
		v    *durationpb.Duration
	}{{"defaults.queue_timeout", d.QueueTimeout}, {"defaults.retry_backoff", d.RetryBackoff},
		{"defaults.max_backoff", d.MaxBackoff}, {"defaults.job_retention", d.JobRetention}} {
		if err := nonNegative(f.name, f.v); err != nil {
			return err
		}
	}
	if d.MaxAttempts < 0 || d.MaxAttempts > 100 {
		return fmt.Errorf("defaults.max_attempts: %d is outside 0–100", d.MaxAttempts)
	}
	return nil
}

// nonNegative checks an optional duration: unset, or valid and not negative.
func nonNegative(field string, d *durationpb.Duration) error {
	if d != nil && (d.CheckValid() != nil || d.AsDuration() < 0) {
		return fmt.Errorf("%s: must be a non-negative duration", field)
	}
	return nil
}

// validateRules checks the rate-limit rules, including that the tenants,
// tiers and models they name exist (a typo would silently never match).
func validateRules(p *sluicev1.Policy, tiers, tenants, models map[string]bool) error {
	if len(p.Rules) > MaxRules {
		return fmt.Errorf("rules: %d entries exceed the limit of %d", len(p.Rules), MaxRules)
	}
	for i, r := range p.Rules {
		field := fmt.Sprintf("rules[%d]", i)
		if err := checkName(field+".name", r.Name); err != nil {
			return err
		}
		m := r.GetMatch()
		switch {
		case m.GetTenant() != "" && !tenants[m.GetTenant()]:
			return fmt.Errorf("%s.match.tenant: %q is not one of the policy's tenants", field, m.GetTenant())
		case m.GetTier() != "" && !tiers[m.GetTier()]:
			return fmt.Errorf("%s.match.tier: %q is not one of the policy's tiers", field, m.GetTier())
		case m.GetModel() != "" && !models[m.GetModel()]:
			return fmt.Errorf("%s.match.model: %q is not one of the policy's models", field, m.GetModel())
		case r.FallbackModel != "" && !models[r.FallbackModel]:
			return fmt.Errorf("%s.fallback_model: %q is not one of the policy's models", field, r.FallbackModel)
		}
		if h := m.GetApiKeySha256(); h != "" {
			if err := checkHash(field+".match.api_key_sha256", h); err != nil {
				return err
			}
		}
	}
	rules, err := LimiterRules(p)
	if err != nil {
		return err
	}
	if _, err := limiter.NewEngine(rules); err != nil {
		return fmt.Errorf("rules: %w", err)
	}
	return nil
}

// checkUnique checks a list entry's name, and that no entry before it
// (those in seen) has it; it adds the name to seen.
func checkUnique(field, name string, seen map[string]bool) error {
	if err := checkName(field+".name", name); err != nil {
		return err
	}
	if seen[name] {
		return fmt.Errorf("%s.name: %q appears twice", field, name)
	}
	seen[name] = true
	return nil
}

func checkName(field, s string) error {
	if s == "" {
		return fmt.Errorf("%s: must not be empty", field)
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("%s: %d bytes exceed the %d-byte limit", field, len(s), MaxNameLen)
	}
	return nil
}

func checkHash(field, h string) error {
	if len(h) != 64 {
		return fmt.Errorf("%s: must be 64 hex digits (a SHA-256; see `sluice hash-key`), got %d characters", field, len(h))
	}
	if _, err := hex.DecodeString(h); err != nil {
		return fmt.Errorf("%s: must be 64 hex digits (a SHA-256), not %q", field, h)
	}
	return nil
}

// validateScheduling checks the queue bounds and durations.
func validateScheduling(s *sluicev1.Scheduling) error {
	if s == nil {
		return nil
	}
	if err := nonNegative("scheduling.reserve_after", s.ReserveAfter); err != nil {
		return err
	}
	if err := nonNegative("scheduling.max_predicted_wait", s.MaxPredictedWait); err != nil {
		return err
	}
	for _, b := range []struct {
		name string
		v    int64
	}{{"scheduling.max_queued", s.MaxQueued}, {"scheduling.max_queued_per_tenant", s.MaxQueuedPerTenant},
		{"scheduling.max_queued_per_model", s.MaxQueuedPerModel}} {
		if b.v < 0 {
			return fmt.Errorf("%s: %d is negative", b.name, b.v)
		}
	}
	return nil
}
