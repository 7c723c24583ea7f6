package fsm

import (
	"time"

	"github.com/sluicehq/sluice/policy"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

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
	ix.retention = policy.DefaultJobRetention
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
