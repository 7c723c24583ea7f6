package node

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/fsm"
	"github.com/sluicehq/sluice/limiter"
	"github.com/sluicehq/sluice/policy"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// Gateway checks: LimitService (Check, CheckBatch) and the Envoy rate limit
// service (rls.go) ask whether a request may go ahead under the policy's
// rules. The leader decides: a check that its applied state already refuses
// is answered at once (fsm.PreCheck: a refusal charges nothing); the others
// go into the raft log (fsm.CmdCheck, group-committed with everything
// else) and are decided and charged as their entry applies, and answered
// once it is committed. So an allowed check is charged on a quorum before
// its answer leaves the leader, and no leader change can forget it
// (docs/gateway.md). A follower forwards checks to the leader.

// Bounds on a check's fields; a longer one is refused naming the field.
const (
	maxCheckBatch = 1000 // checks in a CheckBatch, descriptors in an Envoy request
	maxCheckField = 256  // bytes of a tenant, tier, method, model or client IP
	maxCheckKey   = 512  // bytes of a key (and of an API key)
	maxCheckCost  = 1 << 50
)

type limitService struct{ n *Node }

// gateway checks the caller's gateway token: Policy.gateway_token_sha256,
// or the admin token (which is accepted either way).
func (n limitChecks) gateway(h http.Header) error {
	tok, err := bearer(h)
	if err != nil {
		return connect.NewError(err.Code(), errors.New(strings.ReplaceAll(err.Message(), "<api key>", "<gateway token>")))
	}
	hash := []byte(policy.HashKey(tok))
	p := n.fsm.Policy()
	for _, want := range []string{p.GetGatewayTokenSha256(), p.GetAdminTokenSha256()} {
		if want != "" && subtle.ConstantTimeCompare(hash, []byte(want)) == 1 {
			return nil
		}
	}
	if !n.duty.canJudgeKeys() {
		return n.duty.notCaughtUpError()
	}
	return connect.NewError(connect.CodePermissionDenied, errors.New(
		"authorization: not the gateway token (the policy's gateway_token_sha256) or the admin token"))
}

func (s *limitService) Check(ctx context.Context, req *connect.Request[sluicev1.CheckRequest]) (*connect.Response[sluicev1.CheckResponse], error) {
	n := s.n
	if err := n.checks.gateway(req.Header()); err != nil {
		return nil, err
	}
	if err := validateCheck("", req.Msg); err != nil {
		return nil, err
	}
	if res, local, err := forward(ctx, n, req, func(ctx context.Context, c leaderClients, r *connect.Request[sluicev1.CheckRequest]) (*connect.Response[sluicev1.CheckResponse], error) {
		return c.limits.Check(ctx, r)
	}); !local {
		return res, err
	}
	g := n.checks.checkGroup(req.Msg.GetAllowDelay(), req.Msg)
	outs, err := n.checks.decideChecks(ctx, []*raftv1.CheckGroup{g})
	if err != nil {
		return nil, err
	}
	n.checks.noteCheck("check", g.Items[0], &outs[0].Items[0])
	return connect.NewResponse(n.checks.checkResponse(&outs[0].Items[0])), nil
}

func (s *limitService) CheckBatch(ctx context.Context, req *connect.Request[sluicev1.CheckBatchRequest]) (*connect.Response[sluicev1.CheckBatchResponse], error) {
	n := s.n
	if err := n.checks.gateway(req.Header()); err != nil {
		return nil, err
	}
	checks := req.Msg.GetChecks()
	if len(checks) > maxCheckBatch {
		return nil, fieldError("checks", "%d checks exceed the limit of %d per batch", len(checks), maxCheckBatch)
	}
	for i, c := range checks {
		if err := validateCheck(fmt.Sprintf("checks[%d].", i), c); err != nil {
			return nil, err
		}
	}
	if res, local, err := forward(ctx, n, req, func(ctx context.Context, c leaderClients, r *connect.Request[sluicev1.CheckBatchRequest]) (*connect.Response[sluicev1.CheckBatchResponse], error) {
		return c.limits.CheckBatch(ctx, r)
	}); !local {
		return res, err
	}
	out := &sluicev1.CheckBatchResponse{Results: make([]*sluicev1.CheckResponse, len(checks))}
	if len(checks) == 0 {
		return connect.NewResponse(out), nil
	}
	groups := make([]*raftv1.CheckGroup, len(checks))
	for i, c := range checks {
		groups[i] = n.checks.checkGroup(c.GetAllowDelay(), c)
	}
	outs, err := n.checks.decideChecks(ctx, groups)
	if err != nil {
		return nil, err
	}
	for i := range outs {
		n.checks.noteCheck("check", groups[i].Items[0], &outs[i].Items[0])
		out.Results[i] = n.checks.checkResponse(&outs[i].Items[0])
	}
	return connect.NewResponse(out), nil
}

// validateCheck checks a CheckRequest's fields; prefix is its place in a
// batch ("checks[3].").
func validateCheck(prefix string, c *sluicev1.CheckRequest) error {
	for _, f := range []struct {
		name, v string
		max     int
	}{
		{"tenant", c.GetTenant(), maxCheckField}, {"tier", c.GetTier(), maxCheckField},
		{"client_ip", c.GetClientIp(), maxCheckField}, {"method", c.GetMethod(), maxCheckField},
		{"model", c.GetModel(), maxCheckField}, {"key", c.GetKey(), maxCheckKey},
		{"api_key", c.GetApiKey(), MaxCredentialBytes},
	} {
		if len(f.v) > f.max {
			return fieldError(prefix+f.name, "%d bytes exceed the limit of %d", len(f.v), f.max)
		}
	}
	if m := c.GetMethod(); m == "Submit" || slices.Contains(policy.ReadMethods, m) {
		return fieldError(prefix+"method", "%q is a method of Sluice's own job API; name the gateway's endpoint (its path, e.g. \"/v1/images\")", m)
	}
	if ip := c.GetClientIp(); ip != "" {
		if _, err := netip.ParseAddr(ip); err != nil {
			return fieldError(prefix+"client_ip", "%q is not an IP address", ip)
		}
	}
	if k := c.GetKey(); k != "" && !policy.ValidCheckKey(k) {
		return fieldError(prefix+"key", "%q is not key=value pairs joined by commas (e.g. \"generic_key=images\")", k)
	}
	if cost := c.GetCost(); cost < 0 || cost > maxCheckCost {
		return fieldError(prefix+"cost", "%d must be between 0 (meaning 1) and %d", cost, int64(maxCheckCost))
	}
	if c.GetRefund() && c.GetCheckOnly() {
		return fieldError(prefix+"refund", "a refund cannot be check_only")
	}
	return nil
}

// checkGroup resolves checks (validated) into one all-or-nothing group: a
// known API key gives its tenant and tier, a known tenant its tier.
func (n limitChecks) checkGroup(allowDelay bool, checks ...*sluicev1.CheckRequest) *raftv1.CheckGroup {
	g := &raftv1.CheckGroup{AllowDelay: allowDelay, Items: make([]*raftv1.CheckItem, len(checks))}
	for i, c := range checks {
		it := &raftv1.CheckItem{
			Tenant: c.GetTenant(), Tier: c.GetTier(), Method: c.GetMethod(), Model: c.GetModel(), Key: c.GetKey(),
			Cost: max(1, c.GetCost()), CheckOnly: c.GetCheckOnly(), Refund: c.GetRefund(),
		}
		if ip := c.GetClientIp(); ip != "" {
			a, _ := netip.ParseAddr(ip)
			it.ClientIp = a.Unmap().String()
		}
		if k := c.GetApiKey(); k != "" {
			it.ApiKeySha256 = policy.HashKey(k)
			if t, ok := n.fsm.TenantByKeyHash(it.ApiKeySha256); ok {
				it.Tenant, it.Tier = t.Name, t.Tier
			}
		}
		if it.Tenant != "" {
			if t, ok := n.fsm.Tenant(it.Tenant); ok {
				it.Tier = t.Tier
			}
		}
		g.Items[i] = it
	}
	return g
}

// checksSafe is the proposer's batchesSafe, asked at most every
// checksSafeFor: it reads the raft configuration and builds its key, a
// few percent of a check's CPU. A server that cannot read checks cannot
// join meanwhile (checkJoiner), and the gate turns off on its own.
func (n limitChecks) checksSafe() bool {
	now := time.Now().UnixNano()
	if now < n.checksSafeUntil.Load() {
		return true
	}
	if !n.proposer.batchesSafe() {
		return false
	}
	n.checksSafeUntil.Store(now + int64(checksSafeFor))
	return true
}

const checksSafeFor = 100 * time.Millisecond

// checksGateWait is how long a check waits for the log format gate.
const checksGateWait = 3 * time.Second

// errChecksOff answers checks while some server may not read them.
var errChecksOff = errors.New("gateway checks wait until every server reads log format " + strconv.Itoa(logFormat) +
	" (a server of an older version is in the cluster, or the new leader is still asking); retry shortly")

// decideChecks decides groups on the leader: those its applied state
// refuses at once, the rest in one log entry, answered once committed.
func (n limitChecks) decideChecks(ctx context.Context, groups []*raftv1.CheckGroup) ([]fsm.CheckOutcome, error) {
	if !n.IsLeader() {
		return nil, writeError(errNotLeader)
	}
	// A new leader, or a new member, is asked for its log format first
	// (gateBatches, within a second or two): wait for that rather than fail.
	for wait := time.Now().Add(checksGateWait); !n.checksSafe(); {
		if time.Now().After(wait) || ctx.Err() != nil || !n.IsLeader() {
			e := connect.NewError(connect.CodeUnavailable, errChecksOff)
			e.Meta().Set("Retry-After", "1")
			return nil, e
		}
		time.Sleep(20 * time.Millisecond)
	}
	out := make([]fsm.CheckOutcome, len(groups))
	now := time.Now().UnixNano()
	var pending []*raftv1.CheckGroup
	var at []int
	for i, g := range groups {
		if o := n.fsm.PreCheck(g, now); !o.Allowed {
			out[i] = o
			continue
		}
		pending = append(pending, g)
		at = append(at, i)
	}
	if len(pending) == 0 {
		return out, nil
	}
	res, err := n.propose(ctx, fsm.CmdCheck, &raftv1.Check{Groups: pending})
	switch {
	case errors.Is(err, errOutcomeUnknown):
		// A check is not retried with a key that makes it idempotent: say
		// what a retry costs (at worst a second charge, never a missed one).
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf(
			"the leader changed while the check was being committed: it may or may not have been charged (a retry may charge it twice); retry shortly"))
	case err != nil:
		return nil, writeError(err)
	case res.Err != nil:
		return nil, resultError(res)
	case len(res.Checks) != len(pending):
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("%d check outcomes for %d checks", len(res.Checks), len(pending)))
	}
	for k, i := range at {
		out[i] = res.Checks[k]
	}
	return out, nil
}

// checkResponse is a decision as LimitService answers it. Durations are
// from the log time it was decided at.
func (n limitChecks) checkResponse(d *fsm.CheckDecision) *sluicev1.CheckResponse {
	now := time.Unix(0, d.Now)
	r := &sluicev1.CheckResponse{Rule: d.Rule}
	switch d.Verdict {
	case limiter.Admitted:
		r.Verdict, r.Rule = sluicev1.CheckVerdict_CHECK_VERDICT_ALLOWED, ""
	case limiter.Delayed:
		r.Verdict = sluicev1.CheckVerdict_CHECK_VERDICT_DELAYED
		r.StartAfter = durationpb.New(time.Duration(d.At - d.Now))
	case limiter.Degraded:
		r.Verdict, r.FallbackModel = sluicev1.CheckVerdict_CHECK_VERDICT_DEGRADED, d.Fallback
	default:
		r.Verdict = sluicev1.CheckVerdict_CHECK_VERDICT_REFUSED
	}
	if !d.Allowed() {
		r.Message = n.refusalMessage(d.Rule, d.RetryAt, d.Rules, now)
		if wait, ok := retryDelay(d.RetryAt, now); ok {
			r.RetryAfter = durationpb.New(wait)
		}
	}
	infos := n.ruleInfos()
	for _, rr := range d.Rules {
		info := infos.of(rr.Rule)
		rc := &sluicev1.RuleCheck{Rule: rr.Rule, Limit: rr.Limit, Remaining: rr.Remaining, Refused: !rr.Allowed, Shadow: rr.Shadow,
			Unit: info.unit, Description: info.words}
		if rr.ResetAt > d.Now {
			rc.ResetAfter = durationpb.New(time.Duration(rr.ResetAt - d.Now))
		}
		r.Rules = append(r.Rules, rc)
	}
	h := n.checkHeaders(d.Allowed(), d.RetryAt, d.Rules, now)
	for _, name := range []string{"RateLimit-Policy", "RateLimit", "Retry-After"} {
		if v := h.Get(name); v != "" {
			r.Headers = append(r.Headers, &sluicev1.Header{Name: name, Value: v})
		}
	}
	return r
}

// checkHeaders are the RateLimit fields of a check's rules and, when it was
// refused, its Retry-After.
func (n limitChecks) checkHeaders(allowed bool, retryAt int64, rules []limiter.RuleResult, now time.Time) http.Header {
	h := http.Header{}
	n.setRateLimitHeaders(h, rules, now)
	if wait, ok := retryDelay(retryAt, now); ok && !allowed {
		h.Set("Retry-After", strconv.FormatInt(int64((wait+time.Second-1)/time.Second), 10))
	}
	return h
}

// noteCheck counts a decided check in the metrics, and logs the shadow
// rules that would have refused it.
func (n limitChecks) noteCheck(source string, it *raftv1.CheckItem, d *fsm.CheckDecision) {
	outcome := "refused"
	switch d.Verdict {
	case limiter.Admitted:
		outcome = "allowed"
	case limiter.Delayed:
		outcome = "delayed"
	case limiter.Degraded:
		outcome = "degraded"
	}
	n.metrics.Check(source, outcome, d.Rules)
	if outcome == "refused" || outcome == "degraded" {
		n.rejected.note(d.Rule, it.Tenant, time.Now())
	}
	n.shadows.note(n.log, d.Rules, it.Tenant)
}
