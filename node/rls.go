package node

import (
	"context"
	"fmt"
	"strings"
	"time"

	"connectrpc.com/connect"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sluicehq/sluice/fsm"
	"github.com/sluicehq/sluice/limiter"
	"github.com/sluicehq/sluice/policy"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// The Envoy rate limit service (envoy.service.ratelimit.v3), served on the
// API port beside LimitService: an Envoy ratelimit filter (or any gateway
// that speaks the protocol) asks ShouldRateLimit with a domain and
// descriptors, and each descriptor becomes one check of one group:
// charged together or not at all (docs/gateway.md has the mapping).

const rlsProcedure = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"

// maxDescriptorEntries bounds the entries of one descriptor.
const maxDescriptorEntries = 32

// fallbackModelHeader names a degrade rule's fallback model on an
// OVER_LIMIT answer.
const fallbackModelHeader = "Sluice-Fallback-Model"

func (n limitChecks) shouldRateLimit(ctx context.Context, req *connect.Request[rlsv3.RateLimitRequest]) (*connect.Response[rlsv3.RateLimitResponse], error) {
	if err := n.gateway(req.Header()); err != nil {
		return nil, err
	}
	checks, err := rlsChecks(req.Msg)
	if err != nil {
		return nil, err
	}
	if res, local, err := forward(ctx, n.Node, req, func(ctx context.Context, c leaderClients, r *connect.Request[rlsv3.RateLimitRequest]) (*connect.Response[rlsv3.RateLimitResponse], error) {
		return c.rls.CallUnary(ctx, r)
	}); !local {
		return res, err
	}
	g := n.checkGroup(false, checks...)
	outs, err := n.decideChecks(ctx, []*raftv1.CheckGroup{g})
	if err != nil {
		return nil, err
	}
	o := &outs[0]
	for i := range o.Items {
		n.noteCheck("rls", g.Items[i], &o.Items[i])
	}
	return connect.NewResponse(n.rlsResponse(o)), nil
}

// rlsChecks maps a request's descriptors onto checks, one each, refusing
// what Sluice cannot read with the field that is wrong.
func rlsChecks(r *rlsv3.RateLimitRequest) ([]*sluicev1.CheckRequest, error) {
	if r.GetDomain() == "" {
		return nil, fieldError("domain", "must not be empty")
	}
	ds := r.GetDescriptors()
	switch {
	case len(ds) == 0:
		return nil, fieldError("descriptors", "needs at least one descriptor")
	case len(ds) > maxCheckBatch:
		return nil, fieldError("descriptors", "%d descriptors exceed the limit of %d", len(ds), maxCheckBatch)
	}
	hits := max(1, int64(r.GetHitsAddend())) // 0: not set, which means 1
	out := make([]*sluicev1.CheckRequest, len(ds))
	for i, d := range ds {
		field := fmt.Sprintf("descriptors[%d]", i)
		es := d.GetEntries()
		switch {
		case len(es) == 0:
			return nil, fieldError(field+".entries", "needs at least one entry")
		case len(es) > maxDescriptorEntries:
			return nil, fieldError(field+".entries", "%d entries exceed the limit of %d", len(es), maxDescriptorEntries)
		}
		c := &sluicev1.CheckRequest{Cost: hits}
		if h := d.GetHitsAddend(); h != nil {
			if h.GetValue() == 0 {
				c.CheckOnly = true // set to 0: check without counting
			} else {
				c.Cost = int64(min(h.GetValue(), maxCheckCost+1)) // past the limit: refused below
			}
		}
		c.Refund = d.GetIsNegativeHits() && !c.CheckOnly
		var generic []string
		seen := map[string]bool{}
		for j, e := range es {
			ef := fmt.Sprintf("%s.entries[%d]", field, j)
			k, v := e.GetKey(), e.GetValue()
			if k == "" {
				return nil, fieldError(ef+".key", "must not be empty")
			}
			if k == "path" {
				v, _, _ = strings.Cut(v, "?") // the :path header carries the query
			}
			// A value too long to key on is keyed by its digest, not refused: an
			// error lets the request through an Envoy that fails open.
			v = fit(v, k)
			var dst *string
			switch k {
			case "tenant":
				dst = &c.Tenant
			case "api_key":
				dst = &c.ApiKey
			case "tier":
				dst = &c.Tier
			case "remote_address":
				dst = &c.ClientIp
			case "path":
				dst = &c.Method
			case "model":
				dst = &c.Model
			default:
				generic = append(generic, escapeKeyPart(fit(k, ""), true)+"="+escapeKeyPart(v, false))
				continue
			}
			if seen[k] {
				return nil, fieldError(ef+".key", "%q appears twice in one descriptor", k)
			}
			seen[k] = true
			*dst = v
		}
		if c.Key = strings.Join(generic, ","); len(c.Key) > maxCheckKey {
			c.Key = "~" + policy.HashKey(c.Key)
		}
		if err := validateCheck(field+".", c); err != nil {
			return nil, err
		}
		out[i] = c
	}
	return out, nil
}

// fit is v, or when v is longer than a check's field of descriptor key k
// may be, "~" and its SHA-256 in hex (65 bytes): still one key per value.
func fit(v, k string) string {
	limit := maxCheckField
	switch k {
	case "api_key":
		limit = MaxCredentialBytes
	case "tenant", "tier", "remote_address", "path", "model":
	default:
		limit = maxCheckKey / 4 // a generic entry: room for a few in one key
	}
	if len(v) <= limit {
		return v
	}
	return "~" + policy.HashKey(v)
}

// escapeKeyPart escapes what would break RuleMatch.key's key=value,...
// form: % and , always, = in keys.
func escapeKeyPart(s string, key bool) string {
	if !strings.ContainsAny(s, "%,=") {
		return s
	}
	s = strings.ReplaceAll(s, "%", "%25")
	s = strings.ReplaceAll(s, ",", "%2C")
	if key {
		s = strings.ReplaceAll(s, "=", "%3D")
	}
	return s
}

// rlsResponse is a group's outcome as Envoy reads it: a status per
// descriptor, RateLimit-Policy, RateLimit and (refused) Retry-After to add
// to the client's response, and the refusal in words as the 429's body.
func (n limitChecks) rlsResponse(o *fsm.CheckOutcome) *rlsv3.RateLimitResponse {
	r := &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}
	if !o.Allowed {
		r.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
	}
	var all []limiter.RuleResult // each rule once, at its least remaining
	var retryAt, now int64
	var fallback string
	var body []string
	for i := range o.Items {
		d := &o.Items[i]
		now = d.Now
		st := &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK}
		if !d.Allowed() {
			st.Code = rlsv3.RateLimitResponse_OVER_LIMIT
			retryAt = max(retryAt, d.RetryAt)
			if d.Verdict == limiter.Degraded && fallback == "" {
				fallback = d.Fallback
			}
			body = append(body, n.refusalMessage(d.Rule, d.RetryAt, d.Rules, time.Unix(0, d.Now)))
		}
		if t := tightest(d); t != nil {
			st.CurrentLimit = n.rlsLimit(t)
			st.LimitRemaining = uint32(min(max(t.Remaining, 0), 1<<32-1))
			if t.ResetAt > d.Now {
				st.DurationUntilReset = durationpb.New(time.Duration(t.ResetAt - d.Now))
			}
		}
		r.Statuses = append(r.Statuses, st)
		for _, rr := range d.Rules {
			k := -1
			for j := range all {
				if all[j].Rule == rr.Rule {
					k = j
				}
			}
			switch {
			case k < 0:
				all = append(all, rr)
			case rr.Remaining < all[k].Remaining || !rr.Allowed:
				all[k] = rr
			}
		}
	}
	if retryAt == limiter.Never {
		retryAt = 0
	}
	h := n.checkHeaders(o.Allowed, retryAt, all, time.Unix(0, now))
	if fallback != "" {
		h.Set(fallbackModelHeader, fallback)
	}
	for _, name := range []string{"RateLimit-Policy", "RateLimit", "Retry-After", fallbackModelHeader} {
		if v := h.Get(name); v != "" {
			r.ResponseHeadersToAdd = append(r.ResponseHeadersToAdd, &corev3.HeaderValue{Key: strings.ToLower(name), Value: v})
		}
	}
	if len(body) > 0 {
		r.RawBody = []byte(strings.Join(body, "\n") + "\n")
	}
	return r
}

// tightest is the rule a descriptor's status reports: the one that refused
// it, else the enforced rule with the least remaining (a shadow rule only
// when no other matched).
func tightest(d *fsm.CheckDecision) *limiter.RuleResult {
	var best *limiter.RuleResult
	for i := range d.Rules {
		r := &d.Rules[i]
		switch {
		case !d.Allowed() && r.Rule == d.Rule:
			return r
		case best == nil, best.Shadow && !r.Shadow, best.Shadow == r.Shadow && r.Remaining < best.Remaining:
			best = r
		}
	}
	return best
}

// rlsUnits are Envoy's units of time that Sluice's periods map onto, shortest first.
var rlsUnits = []struct {
	unit rlsv3.RateLimitResponse_RateLimit_Unit
	d    time.Duration
}{
	{rlsv3.RateLimitResponse_RateLimit_SECOND, time.Second}, {rlsv3.RateLimitResponse_RateLimit_MINUTE, time.Minute},
	{rlsv3.RateLimitResponse_RateLimit_HOUR, time.Hour}, {rlsv3.RateLimitResponse_RateLimit_DAY, 24 * time.Hour},
}

// rlsLimit describes a rule in Envoy's terms: requests per unit of time.
func (n limitChecks) rlsLimit(r *limiter.RuleResult) *rlsv3.RateLimitResponse_RateLimit {
	out := &rlsv3.RateLimitResponse_RateLimit{Name: r.Rule, RequestsPerUnit: uint32(min(max(r.Limit, 0), 1<<32-1))}
	rule := n.ruleInfos().of(r.Rule).rule
	if rule == nil {
		return out
	}
	per := func(count int64, d time.Duration) {
		if d <= 0 {
			return
		}
		for i := len(rlsUnits) - 1; i >= 0; i-- { // the largest unit d is a whole number of
			u := rlsUnits[i]
			if d >= u.d && d%u.d == 0 {
				out.Unit, out.RequestsPerUnit = u.unit, uint32(min(count, 1<<32-1))
				if m := d / u.d; m > 1 {
					out.UnitMultiplier = wrapperspb.UInt32(uint32(min(int64(m), 1<<32-1)))
				}
				return
			}
		}
		// Not a whole number of seconds: the rate per second, or per minute,
		// hour or day when that is under 1 (1 per 1.5 s is 40 a minute).
		for i, u := range rlsUnits {
			if r := float64(count) * float64(u.d) / float64(d); r >= 1 || i == len(rlsUnits)-1 {
				out.Unit, out.RequestsPerUnit = u.unit, uint32(min(r, 1<<32-1))
				return
			}
		}
	}
	switch l := rule.Limit.(type) {
	case *sluicev1.Rule_TokenBucket:
		per(l.TokenBucket.Count, l.TokenBucket.Per.AsDuration())
	case *sluicev1.Rule_Gcra:
		per(l.Gcra.Count, l.Gcra.Per.AsDuration())
	case *sluicev1.Rule_LeakyQueue:
		per(l.LeakyQueue.Count, l.LeakyQueue.Per.AsDuration())
	case *sluicev1.Rule_FixedWindow:
		per(l.FixedWindow.Limit, l.FixedWindow.Window.AsDuration())
	case *sluicev1.Rule_SlidingLog:
		per(l.SlidingLog.Limit, l.SlidingLog.Window.AsDuration())
	case *sluicev1.Rule_SlidingWindow:
		per(l.SlidingWindow.Limit, l.SlidingWindow.Window.AsDuration())
	case *sluicev1.Rule_Quota:
		out.Unit = rlsv3.RateLimitResponse_RateLimit_DAY
		if l.Quota.Period == sluicev1.QuotaPeriod_QUOTA_PERIOD_MONTH {
			out.Unit = rlsv3.RateLimitResponse_RateLimit_MONTH
		}
	}
	return out
}
