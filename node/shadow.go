package node

import (
	"log/slog"
	"sync"
	"time"

	"github.com/sluicehq/sluice/limiter"
)

// shadowLog logs the refusals that shadow rules (Rule.shadow, or
// Policy.shadow for every rule) would have made, so that an operator can
// see what a limit would do on live traffic before enforcing it: one line
// per rule at most every shadowLogEvery, with how many since the last line
// and the last tenant it would have refused. The counts are also in
// sluice_limiter_decisions_total{outcome="shadow_over_limit"}.
type shadowLog struct {
	mu    sync.Mutex
	rules map[string]*shadowCount
}

type shadowCount struct {
	n      int64
	logged time.Time
}

const (
	shadowLogEvery = 10 * time.Second
	maxShadowRules = 1000
)

// note records the shadow refusals among rules, for a request of tenant.
func (s *shadowLog) note(log *slog.Logger, rules []limiter.RuleResult, tenant string) {
	for _, r := range rules {
		if !r.Shadow || r.Allowed {
			continue
		}
		now := time.Now()
		s.mu.Lock()
		if s.rules == nil {
			s.rules = map[string]*shadowCount{}
		}
		c, ok := s.rules[r.Rule]
		if !ok && len(s.rules) < maxShadowRules {
			c = &shadowCount{}
			s.rules[r.Rule] = c
		}
		var n int64
		if c != nil {
			c.n++
			if now.Sub(c.logged) >= shadowLogEvery {
				n, c.n, c.logged = c.n, 0, now
			}
		}
		s.mu.Unlock()
		if n > 0 {
			log.Info("shadow rule would have refused", "rule", r.Rule, "refusals_since_last_line", n,
				"tenant", tenant, "remaining", r.Remaining, "limit", r.Limit)
		}
	}
}
