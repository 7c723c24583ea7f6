package node

import (
	"slices"
	"sync"
	"time"

	"github.com/sluicehq/sluice/limiter"
	"github.com/sluicehq/sluice/policy"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// Reads are limited too: a client polling GetJob in a loop costs every node
// it asks. A rule whose match names a read method (policy.ReadMethods) limits
// that method's calls; a rule that names no method limits Submit only, as
// it always has. Reads are served by whichever node is asked, never through
// the log, so each node keeps its own count of them (soft state, like
// envoy's local rate limits): a rule of 10 GetJob a second lets a client
// make 10 a second to each node it asks.
type readLimits struct {
	mu     sync.Mutex
	policy *sluicev1.Policy // the policy the engine was built from (by pointer: a new one replaces it)
	engine *limiter.Engine
	dec    limiter.Decision
}

// limitRead charges one read call to the rules that limit method, and
// refuses it, as Submit's refusals are (429, Retry-After), when one is over.
func (n limitChecks) limitRead(method string, t *sluicev1.Tenant, keyHash, clientIP string) error {
	r := &n.reads
	r.mu.Lock()
	defer r.mu.Unlock()
	if p := n.fsm.Policy(); p != r.policy {
		r.policy = p
		r.engine = nil
		rules, err := policy.LimiterRules(p)
		if err != nil {
			return nil // the log holds only policies that compiled
		}
		rules = slices.DeleteFunc(rules, func(l limiter.Rule) bool { return !slices.Contains(policy.ReadMethods, l.Match.Method) })
		if len(rules) > 0 {
			r.engine, _ = limiter.NewEngine(rules)
		}
	}
	if r.engine == nil {
		return nil
	}
	now := time.Now()
	r.engine.Admit(&limiter.Request{Tenant: t.Name, APIKey: keyHash, Tier: t.Tier, ClientIP: clientIP, Method: method, Cost: 1}, now.UnixNano(), &r.dec)
	if r.dec.Verdict == limiter.Rejected || r.dec.Verdict == limiter.Challenged { // a read has no way to answer a challenge
		return n.limitError(t.Name, r.dec.Rule, r.dec.RetryAt, r.dec.Rules(), "")
	}
	return nil
}
