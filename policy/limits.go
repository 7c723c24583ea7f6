package policy

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sluicehq/sluice/limiter"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// MethodSubmit is the method a Submit is charged as, by the API.
const MethodSubmit = "Submit"

// ReadMethods are the calls besides Submit that a rule may limit by naming
// them in match.method: reads, counted by each node that serves them.
var ReadMethods = []string{"GetJob", "ListJobs", "WatchJob", "GetUsage"}

// LimiterRules converts the policy's rules into the limiter's, naming the
// first bad field ("rules[2].token_bucket.per: ...").
func LimiterRules(p *sluicev1.Policy) ([]limiter.Rule, error) {
	out := make([]limiter.Rule, 0, len(p.GetRules()))
	for i, r := range p.GetRules() {
		field := fmt.Sprintf("rules[%d]", i)
		if m := r.GetMatch().GetMethod(); m != "" && m != "Submit" && !slices.Contains(ReadMethods, m) && !strings.HasPrefix(m, "/") {
			return nil, fmt.Errorf("%s.match.method: %q is not Submit, a read (%s) or a gateway's request path (starting with /)", field, m, strings.Join(ReadMethods, ", "))
		}
		if k := r.GetMatch().GetKey(); k != "" && !ValidCheckKey(k) {
			return nil, fmt.Errorf("%s.match.key: %q is not key=value pairs joined by commas (e.g. \"generic_key=images\")", field, k)
		}
		lr := limiter.Rule{
			Name:     r.Name,
			Shadow:   r.Shadow || p.GetShadow(),
			Replaces: r.Replaces,
			MaxKeys:  int(r.MaxKeys),
			Fallback: r.FallbackModel,
			MaxWait:  r.GetMaxWait().AsDuration(),
			Match: limiter.Match{
				Tenant: r.GetMatch().GetTenant(), APIKey: r.GetMatch().GetApiKeySha256(), Tier: r.GetMatch().GetTier(),
				ClientIP: r.GetMatch().GetClientIp(), Method: r.GetMatch().GetMethod(), Model: r.GetMatch().GetModel(),
				Key: r.GetMatch().GetKey(),
			},
		}
		switch r.Scope {
		case sluicev1.RuleScope_RULE_SCOPE_UNSPECIFIED, sluicev1.RuleScope_RULE_SCOPE_TENANT:
			lr.Scope = limiter.PerTenant
		case sluicev1.RuleScope_RULE_SCOPE_GLOBAL:
			lr.Scope = limiter.Global
		case sluicev1.RuleScope_RULE_SCOPE_API_KEY:
			lr.Scope = limiter.PerAPIKey
		case sluicev1.RuleScope_RULE_SCOPE_TIER:
			lr.Scope = limiter.PerTier
		case sluicev1.RuleScope_RULE_SCOPE_CLIENT_IP:
			lr.Scope = limiter.PerClientIP
		case sluicev1.RuleScope_RULE_SCOPE_METHOD:
			lr.Scope = limiter.PerMethod
		case sluicev1.RuleScope_RULE_SCOPE_MODEL:
			lr.Scope = limiter.PerModel
		case sluicev1.RuleScope_RULE_SCOPE_KEY:
			lr.Scope = limiter.PerKey
		default:
			return nil, fmt.Errorf("%s.scope: %d is not a scope", field, r.Scope)
		}
		switch r.Counts {
		case sluicev1.RuleCounts_RULE_COUNTS_UNSPECIFIED, sluicev1.RuleCounts_RULE_COUNTS_REQUESTS:
			lr.Counts = limiter.CountRequests
		case sluicev1.RuleCounts_RULE_COUNTS_COST:
			lr.Counts = limiter.CountCost
		default:
			return nil, fmt.Errorf("%s.counts: %d is not requests or cost", field, r.Counts)
		}
		switch r.Action {
		case sluicev1.OverLimitAction_OVER_LIMIT_ACTION_UNSPECIFIED, sluicev1.OverLimitAction_OVER_LIMIT_ACTION_REJECT:
			lr.Action = limiter.Reject
		case sluicev1.OverLimitAction_OVER_LIMIT_ACTION_DELAY:
			lr.Action = limiter.Delay
		case sluicev1.OverLimitAction_OVER_LIMIT_ACTION_DEGRADE:
			lr.Action = limiter.Degrade
		case sluicev1.OverLimitAction_OVER_LIMIT_ACTION_CHALLENGE:
			lr.Action = limiter.Challenge
		default:
			return nil, fmt.Errorf("%s.action: %d is not an action", field, r.Action)
		}
		if err := validateChallenge(r, field); err != nil {
			return nil, err
		}
		if d := r.GetMaxWait(); d != nil && (d.CheckValid() != nil || d.AsDuration() < 0) {
			return nil, fmt.Errorf("%s.max_wait: must be a non-negative duration", field)
		}
		alg, err := limitOf(r, field)
		if err != nil {
			return nil, err
		}
		lr.Algorithm = alg
		if _, isCap := alg.(limiter.Concurrency); isCap && lr.Match.Method == "" {
			// A cap counts jobs in flight, which only Submits make (a job's end
			// releases it): a gateway's check has nothing to release it with.
			// (A cap naming another method is not refused: a policy the log
			// already holds must still load.)
			lr.Match.Method = MethodSubmit
		}
		out = append(out, lr)
	}
	return out, nil
}

// ValidCheckKey reports whether k is key=value pairs joined by commas, each key non-empty.
func ValidCheckKey(k string) bool {
	for pair := range strings.SplitSeq(k, ",") {
		key, _, ok := strings.Cut(pair, "=")
		if !ok || key == "" {
			return false
		}
	}
	return true
}

// maxLimitAmount bounds counts, bursts and limits in a policy.
const maxLimitAmount = 1 << 50

func positive(field string, v int64) error {
	if v < 1 || v > maxLimitAmount {
		return fmt.Errorf("%s: %d must be between 1 and %d", field, v, int64(maxLimitAmount))
	}
	return nil
}

// checkAmounts checks a limit's numbers under the policy's own field names.
func checkAmounts(r *sluicev1.Rule, field string) error {
	var checks []struct {
		name string
		v    int64
	}
	add := func(name string, v int64) {
		checks = append(checks, struct {
			name string
			v    int64
		}{name, v})
	}
	switch l := r.Limit.(type) {
	case *sluicev1.Rule_TokenBucket:
		add("token_bucket.count", l.TokenBucket.Count)
		add("token_bucket.burst", l.TokenBucket.Burst)
	case *sluicev1.Rule_Gcra:
		add("gcra.count", l.Gcra.Count)
		add("gcra.burst", l.Gcra.Burst)
	case *sluicev1.Rule_LeakyQueue:
		add("leaky_queue.count", l.LeakyQueue.Count)
		add("leaky_queue.capacity", l.LeakyQueue.Capacity)
	case *sluicev1.Rule_FixedWindow:
		add("fixed_window.limit", l.FixedWindow.Limit)
	case *sluicev1.Rule_SlidingLog:
		add("sliding_log.limit", l.SlidingLog.Limit)
	case *sluicev1.Rule_SlidingWindow:
		add("sliding_window.limit", l.SlidingWindow.Limit)
	case *sluicev1.Rule_Concurrency:
		add("concurrency.limit", l.Concurrency.Limit)
	case *sluicev1.Rule_Quota:
		add("quota.limit", l.Quota.Limit)
	}
	for _, c := range checks {
		if err := positive(field+"."+c.name, c.v); err != nil {
			return err
		}
	}
	return nil
}

func limitOf(r *sluicev1.Rule, field string) (limiter.Algorithm, error) {
	if err := checkAmounts(r, field); err != nil {
		return nil, err
	}
	per := func(name string, d interface{ AsDuration() time.Duration }, set bool) (time.Duration, error) {
		if !set || d.AsDuration() <= 0 {
			return 0, fmt.Errorf("%s.%s: must be a positive duration", field, name)
		}
		return d.AsDuration(), nil
	}
	switch l := r.Limit.(type) {
	case *sluicev1.Rule_TokenBucket:
		p, err := per("token_bucket.per", l.TokenBucket.GetPer(), l.TokenBucket.GetPer() != nil)
		if err != nil {
			return nil, err
		}
		return limiter.TokenBucket{Rate: limiter.Rate{N: l.TokenBucket.Count, Per: p}, Burst: l.TokenBucket.Burst}, nil
	case *sluicev1.Rule_Gcra:
		p, err := per("gcra.per", l.Gcra.GetPer(), l.Gcra.GetPer() != nil)
		if err != nil {
			return nil, err
		}
		return limiter.GCRA{Rate: limiter.Rate{N: l.Gcra.Count, Per: p}, Burst: l.Gcra.Burst}, nil
	case *sluicev1.Rule_LeakyQueue:
		p, err := per("leaky_queue.per", l.LeakyQueue.GetPer(), l.LeakyQueue.GetPer() != nil)
		if err != nil {
			return nil, err
		}
		return limiter.LeakyQueue{Rate: limiter.Rate{N: l.LeakyQueue.Count, Per: p}, Capacity: l.LeakyQueue.Capacity}, nil
	case *sluicev1.Rule_FixedWindow:
		w, err := per("fixed_window.window", l.FixedWindow.GetWindow(), l.FixedWindow.GetWindow() != nil)
		if err != nil {
			return nil, err
		}
		return limiter.FixedWindow{Limit: l.FixedWindow.Limit, Window: w}, nil
	case *sluicev1.Rule_SlidingLog:
		w, err := per("sliding_log.window", l.SlidingLog.GetWindow(), l.SlidingLog.GetWindow() != nil)
		if err != nil {
			return nil, err
		}
		return limiter.SlidingLog{Limit: l.SlidingLog.Limit, Window: w}, nil
	case *sluicev1.Rule_SlidingWindow:
		w, err := per("sliding_window.window", l.SlidingWindow.GetWindow(), l.SlidingWindow.GetWindow() != nil)
		if err != nil {
			return nil, err
		}
		return limiter.SlidingCounter{Limit: l.SlidingWindow.Limit, Window: w}, nil
	case *sluicev1.Rule_Concurrency:
		return limiter.Concurrency{Limit: l.Concurrency.Limit}, nil
	case *sluicev1.Rule_Quota:
		q := limiter.Quota{Limit: l.Quota.Limit, Period: limiter.Daily}
		switch l.Quota.Period {
		case sluicev1.QuotaPeriod_QUOTA_PERIOD_UNSPECIFIED, sluicev1.QuotaPeriod_QUOTA_PERIOD_DAY:
		case sluicev1.QuotaPeriod_QUOTA_PERIOD_MONTH:
			q.Period = limiter.Monthly
		default:
			return nil, fmt.Errorf("%s.quota.period: %d is not day or month", field, l.Quota.Period)
		}
		if tz := l.Quota.TimeZone; tz != "" {
			loc, err := LoadZone(tz) // the embedded database only: every replica the same (zones.go)
			if err != nil {
				return nil, fmt.Errorf("%s.quota.time_zone: %q is not an IANA time zone", field, tz)
			}
			q.Location = loc
		}
		return q, nil
	case nil:
		return nil, fmt.Errorf("%s: needs one limit (token_bucket, gcra, leaky_queue, fixed_window, sliding_log, sliding_window, concurrency or quota)", field)
	}
	return nil, fmt.Errorf("%s: unknown limit type %T", field, r.Limit)
}

// RuleDescription says what a rule limits in words: "10 per 1m0s, burst 5".
func RuleDescription(r *sluicev1.Rule) string {
	unit := "requests"
	if r.Counts == sluicev1.RuleCounts_RULE_COUNTS_COST {
		unit = "cost"
	}
	switch l := r.Limit.(type) {
	case *sluicev1.Rule_TokenBucket:
		return fmt.Sprintf("%d %s per %v, burst %d", l.TokenBucket.Count, unit, l.TokenBucket.Per.AsDuration(), l.TokenBucket.Burst)
	case *sluicev1.Rule_Gcra:
		return fmt.Sprintf("%d %s per %v, burst %d", l.Gcra.Count, unit, l.Gcra.Per.AsDuration(), l.Gcra.Burst)
	case *sluicev1.Rule_LeakyQueue:
		return fmt.Sprintf("%d %s per %v, smoothed, %d may wait", l.LeakyQueue.Count, unit, l.LeakyQueue.Per.AsDuration(), l.LeakyQueue.Capacity)
	case *sluicev1.Rule_FixedWindow:
		return fmt.Sprintf("%d %s per %v (fixed window)", l.FixedWindow.Limit, unit, l.FixedWindow.Window.AsDuration())
	case *sluicev1.Rule_SlidingLog:
		return fmt.Sprintf("%d %s per sliding %v", l.SlidingLog.Limit, unit, l.SlidingLog.Window.AsDuration())
	case *sluicev1.Rule_SlidingWindow:
		return fmt.Sprintf("%d %s per sliding %v (approximate)", l.SlidingWindow.Limit, unit, l.SlidingWindow.Window.AsDuration())
	case *sluicev1.Rule_Concurrency:
		u := "jobs"
		if unit == "cost" {
			u = "cost"
		}
		return fmt.Sprintf("%d %s in flight", l.Concurrency.Limit, u)
	case *sluicev1.Rule_Quota:
		period := "day"
		if l.Quota.Period == sluicev1.QuotaPeriod_QUOTA_PERIOD_MONTH {
			period = "month"
		}
		tz := l.Quota.TimeZone
		if tz == "" {
			tz = "UTC"
		}
		return fmt.Sprintf("%d %s per %s (%s)", l.Quota.Limit, unit, period, tz)
	}
	return ""
}
