package fsm

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"github.com/sluicehq/sluice/predict"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/limiter"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// Limits on a policy, so that a bad file is refused instead of exhausting a node.
const (
	MaxPolicyTenants = 100000
	MaxPolicyModels  = 1000
	MaxPolicyTiers   = 100
	MaxNameLen       = 128
	MaxPolicyRules   = 1000
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

// ValidatePolicy checks a policy and names the first bad field.
func ValidatePolicy(p *sluicev1.Policy) error {
	if p == nil {
		return fmt.Errorf("policy: missing")
	}
	if len(p.Tiers) > MaxPolicyTiers {
		return fmt.Errorf("tiers: %d entries exceed the limit of %d", len(p.Tiers), MaxPolicyTiers)
	}
	if len(p.Tenants) > MaxPolicyTenants {
		return fmt.Errorf("tenants: %d entries exceed the limit of %d", len(p.Tenants), MaxPolicyTenants)
	}
	if len(p.Models) > MaxPolicyModels {
		return fmt.Errorf("models: %d entries exceed the limit of %d", len(p.Models), MaxPolicyModels)
	}
	tiers := make(map[string]bool, len(p.Tiers))
	for i, t := range p.Tiers {
		field := fmt.Sprintf("tiers[%d]", i)
		if err := checkName(field+".name", t.Name); err != nil {
			return err
		}
		if tiers[t.Name] {
			return fmt.Errorf("%s.name: %q appears twice", field, t.Name)
		}
		if t.Weight < 0 {
			return fmt.Errorf("%s.weight: %d is negative", field, t.Weight)
		}
		tiers[t.Name] = true
	}
	names := make(map[string]bool, len(p.Tenants))
	keys := make(map[string]string)
	for i, t := range p.Tenants {
		field := fmt.Sprintf("tenants[%d]", i)
		if err := checkName(field+".name", t.Name); err != nil {
			return err
		}
		if names[t.Name] {
			return fmt.Errorf("%s.name: %q appears twice", field, t.Name)
		}
		names[t.Name] = true
		if !tiers[t.Tier] {
			return fmt.Errorf("%s.tier: %q is not one of the policy's tiers", field, t.Tier)
		}
		if t.Weight < 0 {
			return fmt.Errorf("%s.weight: %d is negative", field, t.Weight)
		}
		if t.MaxRunning < 0 {
			return fmt.Errorf("%s.max_running: %d is negative", field, t.MaxRunning)
		}
		if t.MaxQueued < 0 {
			return fmt.Errorf("%s.max_queued: %d is negative", field, t.MaxQueued)
		}
		for j, h := range t.ApiKeySha256 {
			kf := fmt.Sprintf("%s.api_key_sha256[%d]", field, j)
			if err := checkHash(kf, h); err != nil {
				return err
			}
			if other, ok := keys[h]; ok {
				return fmt.Errorf("%s: the same key is also given to tenant %q", kf, other)
			}
			keys[h] = t.Name
		}
	}
	if p.AdminTokenSha256 != "" {
		if err := checkHash("admin_token_sha256", p.AdminTokenSha256); err != nil {
			return err
		}
	}
	models := make(map[string]bool, len(p.Models))
	for i, m := range p.Models {
		field := fmt.Sprintf("models[%d]", i)
		if err := checkName(field+".name", m.Name); err != nil {
			return err
		}
		if models[m.Name] {
			return fmt.Errorf("%s.name: %q appears twice", field, m.Name)
		}
		models[m.Name] = true
		if d := m.DefaultDuration; d != nil && (d.CheckValid() != nil || d.AsDuration() < 0) {
			return fmt.Errorf("%s.default_duration: must be a non-negative duration", field)
		}
		if d := m.RunTimeout; d != nil && (d.CheckValid() != nil || d.AsDuration() < 0) {
			return fmt.Errorf("%s.run_timeout: must be a non-negative duration", field)
		}
		if m.Gpus < 0 || m.Gpus > 64 {
			return fmt.Errorf("%s.gpus: %d is outside 0–64", field, m.Gpus)
		}
		if m.GpuMemoryMb < 0 {
			return fmt.Errorf("%s.gpu_memory_mb: %d is negative", field, m.GpuMemoryMb)
		}
		if err := predict.Validate(field+".size", m.Size); err != nil {
			return err
		}
	}
	if err := validateRules(p, tiers, names, models); err != nil {
		return err
	}
	if err := validateWebhooks(p); err != nil {
		return err
	}
	if err := validateScheduling(p.Scheduling); err != nil {
		return err
	}
	if d := p.Defaults; d != nil {
		for _, f := range []struct {
			name string
			v    interface {
				CheckValid() error
				AsDuration() time.Duration
			}
			ok bool
		}{
			{"defaults.queue_timeout", d.QueueTimeout, d.QueueTimeout != nil},
			{"defaults.retry_backoff", d.RetryBackoff, d.RetryBackoff != nil},
			{"defaults.max_backoff", d.MaxBackoff, d.MaxBackoff != nil},
			{"defaults.job_retention", d.JobRetention, d.JobRetention != nil},
		} {
			if f.ok && (f.v.CheckValid() != nil || f.v.AsDuration() < 0) {
				return fmt.Errorf("%s: must be a non-negative duration", f.name)
			}
		}
		if d.MaxAttempts < 0 || d.MaxAttempts > 100 {
			return fmt.Errorf("defaults.max_attempts: %d is outside 0–100", d.MaxAttempts)
		}
	}
	return nil
}

// validateRules checks the rate-limit rules, including that the tenants,
// tiers and models they name exist (a typo would silently never match).
func validateRules(p *sluicev1.Policy, tiers, tenants, models map[string]bool) error {
	if len(p.Rules) > MaxPolicyRules {
		return fmt.Errorf("rules: %d entries exceed the limit of %d", len(p.Rules), MaxPolicyRules)
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

// policyIndex is derived from the policy for fast lookups; never encoded.
type policyIndex struct {
	tenants   map[string]*sluicev1.Tenant
	byKeyHash map[string]*sluicev1.Tenant
	models    map[string]*sluicev1.Model
	tiers     map[string]*sluicev1.Tier
	rules     map[string]*sluicev1.Rule // by name: every answer to a check names its rules
	webhooks  bool                      // some tenant has a default webhook
	// The policy's defaults as durations, read on every submit and finish.
	queueTimeout time.Duration // 0: none
	retention    time.Duration
}

func indexPolicy(p *sluicev1.Policy) policyIndex {
	ix := policyIndex{
		tenants:   make(map[string]*sluicev1.Tenant),
		byKeyHash: make(map[string]*sluicev1.Tenant),
		models:    make(map[string]*sluicev1.Model),
		tiers:     make(map[string]*sluicev1.Tier),
		rules:     make(map[string]*sluicev1.Rule),
	}
	ix.retention = DefaultJobRetention
	if p == nil {
		return ix
	}
	ix.queueTimeout = p.GetDefaults().GetQueueTimeout().AsDuration()
	if d := p.GetDefaults().GetJobRetention().AsDuration(); d > 0 {
		ix.retention = d
	}
	for _, t := range p.Tenants {
		ix.tenants[t.Name] = t
		ix.webhooks = ix.webhooks || t.Webhook.GetUrl() != ""
		for _, h := range t.ApiKeySha256 {
			ix.byKeyHash[h] = t
		}
	}
	for _, m := range p.Models {
		ix.models[m.Name] = m
	}
	for _, t := range p.Tiers {
		ix.tiers[t.Name] = t
	}
	for _, r := range p.Rules {
		ix.rules[r.Name] = r
	}
	return ix
}

// validateScheduling checks the queue bounds and durations.
func validateScheduling(s *sluicev1.Scheduling) error {
	if s == nil {
		return nil
	}
	for _, d := range []struct {
		name string
		v    *durationpb.Duration
	}{{"scheduling.reserve_after", s.ReserveAfter}, {"scheduling.max_predicted_wait", s.MaxPredictedWait}} {
		if d.v != nil && (d.v.CheckValid() != nil || d.v.AsDuration() < 0) {
			return fmt.Errorf("%s: must be a non-negative duration", d.name)
		}
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
