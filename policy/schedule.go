package policy

import (
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/scheduler"
)

// SchedulerConfig is the scheduling part of a policy: tier and tenant
// weights, strict tiers, per-tenant caps, the big-job reservation and the
// backpressure bounds.
func SchedulerConfig(p *sluicev1.Policy) scheduler.Config {
	s := p.GetScheduling()
	cfg := scheduler.Config{
		ReserveAfter:       int64(s.GetReserveAfter().AsDuration()),
		MaxQueued:          s.GetMaxQueued(),
		MaxQueuedPerTenant: s.GetMaxQueuedPerTenant(),
		MaxQueuedPerModel:  s.GetMaxQueuedPerModel(),
		MaxPredictedWait:   int64(s.GetMaxPredictedWait().AsDuration()),
	}
	for _, t := range p.GetTiers() {
		cfg.Tiers = append(cfg.Tiers, scheduler.TierConfig{Name: t.Name, Weight: t.Weight, Strict: t.Strict})
	}
	for _, t := range p.GetTenants() {
		cfg.Tenants = append(cfg.Tenants, scheduler.TenantConfig{Name: t.Name, Tier: t.Tier, Weight: t.Weight,
			MaxRunning: t.MaxRunning, MaxQueued: t.MaxQueued})
	}
	return cfg
}
