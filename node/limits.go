package node

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/limiter"
	"github.com/sluicehq/sluice/policy"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// clientIP is the address rate limits key on: the peer's, or the first
// X-Forwarded-For hop when the policy trusts a proxy in front.
func (n limitChecks) clientIP(peerAddr string, h http.Header) string {
	if n.fsm.Policy().GetTrustForwardedFor() {
		if xff := h.Get("X-Forwarded-For"); xff != "" {
			first, _, _ := strings.Cut(xff, ",")
			if ip := net.ParseIP(strings.TrimSpace(first)); ip != nil {
				return ip.String()
			}
		}
	}
	host := hostOf(peerAddr)
	// A call forwarded by another node carries the client's address; trust
	// it only from a host that runs a member of the cluster.
	if fwd := h.Get(forwardedForHeader); fwd != "" && n.cluster.isMemberHost(host) {
		if ip := net.ParseIP(fwd); ip != nil {
			return ip.String()
		}
	}
	return host
}

// limitError turns a refusal into resource_exhausted with RetryInfo and
// QuotaFailure details and the Retry-After / RateLimit headers.
func (n limitChecks) limitError(tenant string, refusing string, retryAt int64, rules []limiter.RuleResult, detail string) *connect.Error {
	now := time.Now()
	msg := n.refusalMessage(refusing, retryAt, rules, now)
	if detail != "" {
		msg += " (" + detail + ")"
	}
	err := connect.NewError(connect.CodeResourceExhausted, errors.New(msg))
	var violations []*errdetails.QuotaFailure_Violation
	for _, r := range rules {
		if r.Allowed || r.Shadow {
			continue
		}
		violations = append(violations, &errdetails.QuotaFailure_Violation{
			Subject:     "tenant:" + tenant,
			Description: n.refusalMessage(r.Rule, r.RetryAt, []limiter.RuleResult{r}, now),
		})
	}
	if d, derr := connect.NewErrorDetail(&errdetails.QuotaFailure{Violations: violations}); derr == nil {
		err.AddDetail(d)
	}
	if wait, ok := retryDelay(retryAt, now); ok {
		if d, derr := connect.NewErrorDetail(&errdetails.RetryInfo{RetryDelay: durationpb.New(wait)}); derr == nil {
			err.AddDetail(d)
		}
		err.Meta().Set("Retry-After", strconv.FormatInt(int64((wait+time.Second-1)/time.Second), 10))
	}
	n.setRateLimitHeaders(err.Meta(), rules, now)
	return err
}

// retryDelay is how long to wait until retryAt; false when unknown or never.
func retryDelay(retryAt int64, now time.Time) (time.Duration, bool) {
	if retryAt == 0 || retryAt == limiter.Never {
		return 0, false
	}
	return max(time.Second, time.Duration(retryAt-now.UnixNano())), true
}

// refusalMessage explains a refusal in a user's words: which rule, what it
// allows, where the caller stands, and when to come back, e.g.
// `rule "free-daily" (20 requests per day (UTC)): 20/20 used today, resets 00:00 UTC (in 6h49m)`.
func (n limitChecks) refusalMessage(name string, retryAt int64, rules []limiter.RuleResult, now time.Time) string {
	var res *limiter.RuleResult
	for i := range rules {
		if rules[i].Rule == name {
			res = &rules[i]
		}
	}
	rule, _ := n.fsm.Rule(name)
	msg := fmt.Sprintf("rate limited by rule %q", name)
	if rule != nil {
		msg += " (" + policy.RuleDescription(rule) + ")"
	}
	wait, known := retryDelay(retryAt, now)
	switch {
	case res == nil:
	case rule.GetQuota() != nil:
		period := "today"
		if rule.GetQuota().Period == sluicev1.QuotaPeriod_QUOTA_PERIOD_MONTH {
			period = "this month"
		}
		msg += fmt.Sprintf(": %d/%d used %s", res.Limit-res.Remaining, res.Limit, period)
		if res.ResetAt > 0 {
			msg += ", resets " + resetWords(res.ResetAt, now, rule.GetQuota().TimeZone)
		}
		return msg
	case rule.GetConcurrency() != nil:
		return msg + fmt.Sprintf(": %d/%d in flight; retry when one of them finishes", res.Limit-res.Remaining, res.Limit)
	default:
		msg += ": too frequent"
	}
	switch {
	case known:
		msg += ", retry in " + roundWait(wait)
	case retryAt == limiter.Never:
		msg += "; this request's cost exceeds the limit and will never fit"
	}
	return msg
}

// resetWords says when a period ends in its own zone: "00:00 UTC (in 6h49m)".
func resetWords(at int64, now time.Time, zone string) string {
	loc := time.UTC
	if zone != "" {
		if l, err := policy.LoadZone(zone); err == nil {
			loc = l
		}
	}
	t := time.Unix(0, at).In(loc)
	when := t.Format("15:04 MST")
	if t.Sub(now) > 24*time.Hour {
		when = t.Format("Jan 2 15:04 MST")
	}
	return fmt.Sprintf("%s (in %s)", when, roundWait(t.Sub(now)))
}

func roundWait(d time.Duration) string {
	switch {
	case d < time.Second:
		return "1s"
	case d < time.Minute:
		return ((d + time.Second - 1) / time.Second * time.Second).String()
	}
	return d.Round(time.Minute).String()
}

// setRateLimitHeaders writes RateLimit-Policy and RateLimit in the syntax
// of draft-ietf-httpapi-ratelimit-headers-11: one list item per rule,
// `"name";q=<quota>;w=<window s>` and `"name";r=<remaining>;t=<reset s>`.
func (n limitChecks) setRateLimitHeaders(h http.Header, rules []limiter.RuleResult, now time.Time) {
	if len(rules) == 0 {
		return
	}
	infos := n.ruleInfos()
	var policies, states []byte
	for i, r := range rules {
		if i > 0 {
			policies, states = append(policies, ", "...), append(states, ", "...)
		}
		info := infos.of(r.Rule)
		policies = append(policies, info.quoted...)
		policies = strconv.AppendInt(append(policies, ";q="...), r.Limit, 10)
		if info.window > 0 {
			policies = strconv.AppendInt(append(policies, ";w="...), info.window, 10)
		}
		states = append(states, info.quoted...)
		if wait, ok := retryDelay(r.RetryAt, now); ok && !r.Allowed && !r.Shadow {
			// Refused: nothing is left until the retry time, which is also what
			// Retry-After says (draft -11: Retry-After SHOULD NOT point earlier
			// than t; a bucket's retry time is before it is full again).
			states = strconv.AppendInt(append(states, ";r=0;t="...), int64((wait+time.Second-1)/time.Second), 10)
			continue
		}
		states = strconv.AppendInt(append(states, ";r="...), r.Remaining, 10)
		if r.ResetAt > 0 {
			states = strconv.AppendInt(append(states, ";t="...), max(0, (r.ResetAt-now.UnixNano()+int64(time.Second)-1)/int64(time.Second)), 10)
		}
	}
	h["Ratelimit-Policy"] = []string{string(policies)}
	h["Ratelimit"] = []string{string(states)}
}

// ruleInfo is what answers say of a rule, made once per policy.
type ruleInfo struct {
	rule        *sluicev1.Rule // nil: not in the policy (any more)
	quoted      string         // the name as a structured-field string
	window      int64          // windowSeconds
	unit, words string         // ruleUnit, policy.RuleDescription
}

type ruleInfoCache struct {
	policy *sluicev1.Policy
	rules  map[string]ruleInfo
}

// of is name's info; a name the policy lacks gets its quoted name only.
func (c *ruleInfoCache) of(name string) ruleInfo {
	if info, ok := c.rules[name]; ok {
		return info
	}
	return ruleInfo{quoted: sfString(name)}
}

// ruleInfos is the current policy's rule info, made when the policy changes.
func (n limitChecks) ruleInfos() *ruleInfoCache {
	p := n.fsm.Policy()
	if c := n.ruleCache.Load(); c != nil && c.policy == p {
		return c
	}
	c := &ruleInfoCache{policy: p, rules: make(map[string]ruleInfo, len(p.GetRules()))}
	for _, r := range p.GetRules() {
		c.rules[r.Name] = ruleInfo{rule: r, quoted: sfString(r.Name), window: windowSeconds(r), unit: ruleUnit(r), words: policy.RuleDescription(r)}
	}
	n.ruleCache.Store(c)
	return c
}

// sfString quotes s as a structured-field string (RFC 8941).
func sfString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range []byte(s) {
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c > 0x7e:
			b.WriteByte('?')
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// windowSeconds is the span a rule's quota refers to: the window, the
// period, or the time a bucket takes to refill from empty; 0 for caps.
func windowSeconds(r *sluicev1.Rule) int64 {
	refill := func(burst, count int64, per time.Duration) int64 {
		if count <= 0 {
			return 0
		}
		return max(1, int64(time.Duration(burst)*per/time.Duration(count)/time.Second))
	}
	switch l := r.Limit.(type) {
	case *sluicev1.Rule_TokenBucket:
		return refill(l.TokenBucket.Burst, l.TokenBucket.Count, l.TokenBucket.Per.AsDuration())
	case *sluicev1.Rule_Gcra:
		return refill(l.Gcra.Burst, l.Gcra.Count, l.Gcra.Per.AsDuration())
	case *sluicev1.Rule_LeakyQueue:
		return refill(l.LeakyQueue.Capacity, l.LeakyQueue.Count, l.LeakyQueue.Per.AsDuration())
	case *sluicev1.Rule_FixedWindow:
		return int64(l.FixedWindow.Window.AsDuration() / time.Second)
	case *sluicev1.Rule_SlidingLog:
		return int64(l.SlidingLog.Window.AsDuration() / time.Second)
	case *sluicev1.Rule_SlidingWindow:
		return int64(l.SlidingWindow.Window.AsDuration() / time.Second)
	case *sluicev1.Rule_Quota:
		if l.Quota.Period == sluicev1.QuotaPeriod_QUOTA_PERIOD_MONTH {
			return 30 * 86400
		}
		return 86400
	}
	return 0
}

// ruleUnit says what a rule's numbers count.
func ruleUnit(r *sluicev1.Rule) string {
	switch {
	case r.GetConcurrency() != nil:
		return "jobs in flight"
	case r.Counts == sluicev1.RuleCounts_RULE_COUNTS_COST:
		return "cost"
	}
	return "requests"
}
