package scheduler

// Config is the scheduling part of the policy. The zero Config is a plain
// fair queue: every tier and tenant weighs 1, nothing is strict, capped or
// bounded, and no capacity is ever reserved.
type Config struct {
	Tiers   []TierConfig
	Tenants []TenantConfig
	// ReserveAfter is how long, in nanoseconds since its Ready time, a job
	// that fits no free slot may wait before its tenant holds back its
	// other jobs and, once it heads its tier, an executor is held for it
	// (see Placer.Place). 0 or less: never.
	ReserveAfter int64
	// Backpressure bounds for CheckAdmission; 0 means no bound.
	MaxQueued          int64 // queued jobs in all
	MaxQueuedPerTenant int64 // queued jobs of one tenant, unless its TenantConfig says otherwise
	MaxQueuedPerModel  int64 // queued jobs of one model
	MaxPredictedWait   int64 // nanoseconds a new job is predicted to wait
}

// TierConfig is one tier, e.g. "pro" with weight 4 and "free" with weight 1.
type TierConfig struct {
	Name string
	// Weight is the tier's share of GPU time against the other tiers of its
	// kind (strict or not) while they are backlogged; 0 or less means 1.
	Weight int32
	// Strict tiers are always served before non-strict ones when they have
	// a job that can run now: they can starve non-strict tiers by design.
	Strict bool
}

// TenantConfig is one tenant's share and limits.
type TenantConfig struct {
	Name string
	// Tier is used for jobs whose Job.Tier is empty.
	Tier string
	// Weight is the tenant's share of its tier's GPU time; 0 or less means 1.
	Weight int32
	// MaxRunning caps the tenant's running jobs; further jobs stay queued
	// (never rejected) until one stops. 0 means no cap.
	MaxRunning int32
	// MaxQueued overrides Config.MaxQueuedPerTenant when above 0.
	MaxQueued int64
}

// MaxCost bounds Job.Cost so that virtual-time arithmetic cannot overflow:
// about 35 GPU-years in milli-GPU-seconds. Larger costs count as MaxCost.
const MaxCost = 1 << 40

// weightOf maps a configured weight to the one used (0 or less means 1).
func weightOf(w int32) int64 {
	if w <= 0 {
		return 1
	}
	return int64(w)
}

// costOf maps a job's cost to the one charged: at least 1, at most MaxCost.
func costOf(c int64) int64 {
	switch {
	case c <= 0:
		return 1
	case c > MaxCost:
		return MaxCost
	}
	return c
}

// prioOf clamps a job priority to 0..9.
func prioOf(p int32) int {
	switch {
	case p < 0:
		return 0
	case p > 9:
		return 9
	}
	return int(p)
}

// settings is a Config with its tiers and tenants indexed by name.
type settings struct {
	cfg       Config
	tierCfg   map[string]int // name → index in cfg.Tiers
	tenantCfg map[string]int // name → index in cfg.Tenants
}

func indexConfig(cfg Config) settings {
	s := settings{cfg: cfg, tierCfg: make(map[string]int, len(cfg.Tiers)), tenantCfg: make(map[string]int, len(cfg.Tenants))}
	for i, t := range cfg.Tiers {
		s.tierCfg[t.Name] = i
	}
	for i, t := range cfg.Tenants {
		s.tenantCfg[t.Name] = i
	}
	return s
}

// tierOfTenant is the tier the tenant is configured in, or "".
func (s *settings) tierOfTenant(name string) string {
	if i, ok := s.tenantCfg[name]; ok {
		return s.cfg.Tenants[i].Tier
	}
	return ""
}
