package sim

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/policy"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// Retention is the defaults.job_retention of every simulation's effective
// policy, whatever the policy file says: finished jobs are dropped from the
// state machine a minute (virtual) after they end, so that a run of
// millions of jobs holds only the jobs of its last minute. Retention only
// decides how long a finished job stays readable (and deduplicates its
// idempotency key); it never changes scheduling, limits or timing, and the
// simulator reads every outcome as it happens.
const Retention = time.Minute

// EffectivePolicy is the policy a run applies: the workload's policy (or an
// empty one) plus the tiers, tenants and models of the workload that it
// lacks, with defaults.job_retention set to Retention.
func (w *Workload) EffectivePolicy() *sluicev1.Policy {
	return proto.Clone(w.effective).(*sluicev1.Policy)
}

func (w *Workload) effectivePolicy() (*sluicev1.Policy, error) {
	p := &sluicev1.Policy{}
	if w.Policy != nil {
		p = proto.Clone(w.Policy).(*sluicev1.Policy)
	}
	tiers := map[string]*sluicev1.Tier{}
	for _, t := range p.Tiers {
		tiers[t.Name] = t
	}
	for i, t := range w.Tiers {
		f := fmt.Sprintf("tiers[%d]", i)
		if pt, ok := tiers[t.Name]; ok {
			if t.Weight != 0 && t.Weight != pt.Weight {
				return nil, fmt.Errorf("%s.weight: %d differs from the policy's %d", f, t.Weight, pt.Weight)
			}
			if t.Strict != pt.Strict {
				return nil, fmt.Errorf("%s.strict: %v differs from the policy's %v", f, t.Strict, pt.Strict)
			}
			continue
		}
		nt := &sluicev1.Tier{Name: t.Name, Weight: t.Weight, Strict: t.Strict}
		p.Tiers = append(p.Tiers, nt)
		tiers[t.Name] = nt
	}
	tenants := map[string]*sluicev1.Tenant{}
	for _, t := range p.Tenants {
		tenants[t.Name] = t
	}
	for i, ts := range w.Tenants {
		f := fmt.Sprintf("tenants[%d]", i)
		for _, name := range ts.expanded {
			if pt, ok := tenants[name]; ok {
				if ts.Tier != "" && ts.Tier != pt.Tier {
					return nil, fmt.Errorf("%s.tier: %q differs from the policy's %q for tenant %q", f, ts.Tier, pt.Tier, name)
				}
				if ts.Weight != 0 && ts.Weight != pt.Weight {
					return nil, fmt.Errorf("%s.weight: %d differs from the policy's %d for tenant %q", f, ts.Weight, pt.Weight, name)
				}
				continue
			}
			tier := ts.Tier
			if tier == "" {
				switch len(p.Tiers) {
				case 0:
					tier = "default"
				case 1:
					tier = p.Tiers[0].Name
				default:
					return nil, fmt.Errorf("%s.tier: tenant %q is not in the policy; say which of its %d tiers it is in", f, name, len(p.Tiers))
				}
			}
			if _, ok := tiers[tier]; !ok {
				if w.Policy != nil {
					return nil, fmt.Errorf("%s.tier: %q is neither one of the policy's tiers nor in the workload's tiers", f, tier)
				}
				nt := &sluicev1.Tier{Name: tier, Weight: 1}
				p.Tiers = append(p.Tiers, nt)
				tiers[tier] = nt
			}
			nt := &sluicev1.Tenant{Name: name, Tier: tier, Weight: ts.Weight}
			p.Tenants = append(p.Tenants, nt)
			tenants[name] = nt
		}
	}
	models := map[string]*sluicev1.Model{}
	for _, m := range p.Models {
		models[m.Name] = m
	}
	for i, ms := range w.Models {
		f := fmt.Sprintf("models[%d]", i)
		if pm, ok := models[ms.Name]; ok {
			if ms.GPUs != 0 && ms.GPUs != pm.Gpus {
				return nil, fmt.Errorf("%s.gpus: %d differs from the policy's %d", f, ms.GPUs, pm.Gpus)
			}
			if ms.GPUMemoryMB != 0 && ms.GPUMemoryMB != pm.GpuMemoryMb {
				return nil, fmt.Errorf("%s.gpu_memory_mb: %d differs from the policy's %d", f, ms.GPUMemoryMB, pm.GpuMemoryMb)
			}
			continue
		}
		nm := &sluicev1.Model{Name: ms.Name, DefaultDuration: durationpb.New(ms.Service.Mean.D()),
			Gpus: ms.GPUs, GpuMemoryMb: ms.GPUMemoryMB}
		p.Models = append(p.Models, nm)
		models[ms.Name] = nm
	}
	if p.Defaults == nil {
		p.Defaults = &sluicev1.Defaults{}
	}
	p.Defaults.JobRetention = durationpb.New(Retention)
	if err := policy.Validate(p); err != nil {
		return nil, fmt.Errorf("policy (with the workload's tenants and models added): %w", err)
	}
	return p, nil
}
