package fsm

import (
	"github.com/sluicehq/sluice/limiter"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
)

// Gateway checks (CmdCheck): a gateway asks whether a request may go ahead,
// and the limits are decided here, in log order, against the same counters
// that Submits charge. A check's charge is part of the replicated state the
// moment its entry is committed, so an answer given after commit survives
// any leader change.

// CheckOutcome is one CheckGroup's answer.
type CheckOutcome struct {
	// Allowed: every item passed and, unless check-only, was charged. When
	// false nothing of the group is charged.
	Allowed bool
	// Items holds each item's decision, in order.
	Items []CheckDecision
}

// CheckDecision is one item's decision: a limiter.Decision's fields that
// outlive it.
type CheckDecision struct {
	Verdict  limiter.Verdict
	At       int64 // when it may start (Delayed: later than Now)
	RetryAt  int64 // for a refusal, as limiter.Decision.RetryAt
	Rule     string
	Fallback string
	Rules    []limiter.RuleResult
	Now      int64 // the log time it was decided at
}

// Allowed reports whether the item may go ahead (now or at At).
func (d *CheckDecision) Allowed() bool {
	return d.Verdict == limiter.Admitted || d.Verdict == limiter.Delayed
}

// checkRequest is the limiter's request for an item (cost at least 1).
func checkRequest(it *raftv1.CheckItem) limiter.Request {
	return limiter.Request{
		Tenant: it.Tenant, APIKey: it.ApiKeySha256, Tier: it.Tier, ClientIP: it.ClientIp,
		Method: it.Method, Model: it.Model, Key: it.Key, Cost: max(1, it.Cost),
	}
}

func (f *FSM) check(c *raftv1.Check) Result {
	out := make([]CheckOutcome, len(c.Groups))
	for i, g := range c.Groups {
		out[i] = f.checkGroup(g)
	}
	return Result{Checks: out}
}

// checkGroup decides a group's items, all or nothing: one item is decided
// and charged in one step; several are first decided without charging, and
// charged only when every one passes. Should an item then be refused (two
// items of the group charge the same state), the items charged before it
// are refunded. A refund item gives its cost back (after the group's
// charges) and reports what is left.
func (f *FSM) checkGroup(g *raftv1.CheckGroup) CheckOutcome {
	o := CheckOutcome{Allowed: true, Items: make([]CheckDecision, len(g.Items))}
	decide := func(i int, charge bool) bool {
		it := g.Items[i]
		req := checkRequest(it)
		switch {
		case it.Refund:
			if charge {
				req.Cost = max(0, it.Cost)
				f.limits.Refund(&req, f.now, f.now)
			}
			req.Cost = 0 // report what is left: a request of cost 0 only checks
			f.limits.CheckNow(&req, f.now, &f.dec)
		case charge && g.AllowDelay:
			f.limits.Admit(&req, f.now, &f.dec)
		case charge:
			f.limits.AdmitNow(&req, f.now, &f.dec)
		case g.AllowDelay:
			f.limits.Check(&req, f.now, &f.dec)
		default:
			f.limits.CheckNow(&req, f.now, &f.dec)
		}
		if !charge && !it.Refund {
			if f.peek == nil {
				f.peek = new(limiter.Decision)
			}
			unspent(f.limits, req, f.now, &f.dec, f.peek) // nothing was charged: report what is left now
		}
		d := &o.Items[i]
		*d = CheckDecision{Verdict: f.dec.Verdict, At: f.dec.At, RetryAt: f.dec.RetryAt, Rule: f.dec.Rule,
			Fallback: f.dec.Fallback, Rules: decisionRules(&f.dec), Now: f.now}
		if it.Refund {
			refunded(d) // a refund is never refused, whatever state it finds
		}
		return d.Allowed()
	}
	if len(g.Items) == 1 {
		o.Allowed = decide(0, !g.Items[0].CheckOnly)
		return o
	}
	for i := range g.Items {
		if !decide(i, false) {
			o.Allowed = false
		}
	}
	if !o.Allowed {
		return o
	}
	for i, it := range g.Items {
		if it.CheckOnly || it.Refund {
			continue
		}
		if !decide(i, true) {
			for k := range i {
				if prev := g.Items[k]; !prev.CheckOnly && !prev.Refund {
					req := checkRequest(prev)
					f.limits.Refund(&req, f.now, o.Items[k].At)
					decide(k, false) // and say what is left after the undo
				}
			}
			o.Allowed = false
			return o
		}
	}
	for i, it := range g.Items { // refunds last: only once the rest is charged
		if it.Refund && !it.CheckOnly {
			decide(i, true)
		}
	}
	return o
}

// PreCheck decides g against the applied state without charging anything:
// the leader's pre-check, so that a refused check never touches the log (a
// refusal charges nothing). Entries not applied yet can only have charged
// more, so a refusal stands; an allowed group is decided again, and
// charged, when its entry applies.
func (r ConfigReads) PreCheck(g *raftv1.CheckGroup, now int64) CheckOutcome {
	f := r.f
	at := max(now, f.now)
	o := CheckOutcome{Allowed: true, Items: make([]CheckDecision, len(g.Items))}
	var d, peek limiter.Decision
	for i, it := range g.Items {
		req := checkRequest(it)
		if it.Refund {
			req.Cost = 0
		}
		if g.AllowDelay {
			f.limits.Check(&req, at, &d)
		} else {
			f.limits.CheckNow(&req, at, &d)
		}
		unspent(f.limits, req, at, &d, &peek)
		var rules []limiter.RuleResult
		if rs := d.Rules(); len(rs) > 0 {
			rules = append(rules, rs...)
		}
		o.Items[i] = CheckDecision{Verdict: d.Verdict, At: d.At, RetryAt: d.RetryAt, Rule: d.Rule,
			Fallback: d.Fallback, Rules: rules, Now: at}
		if it.Refund {
			refunded(&o.Items[i])
		}
		if !o.Items[i].Allowed() {
			o.Allowed = false
		}
	}
	return o
}

// refunded makes a refund item's decision ALLOWED: its rules' state (read
// with a request of cost 0) says what is left, but a state in debt, which
// refuses even cost 0, does not refuse giving back.
func refunded(d *CheckDecision) {
	d.Verdict, d.At, d.RetryAt, d.Rule, d.Fallback = limiter.Admitted, d.Now, 0, "", ""
}

// unspent makes d, a decision on req at now that charged nothing, report
// each rule's state as it is (what is left, when it is full again) rather
// than as it would be after req: what a request of cost 0 sees, which
// only reads. Matching does not depend on the cost, so the rules are the
// same, in the same order.
func unspent(limits *limiter.Engine, req limiter.Request, now int64, d, scratch *limiter.Decision) {
	req.Cost = 0
	limits.CheckNow(&req, now, scratch)
	rs, now0 := d.Rules(), scratch.Rules()
	for j := range min(len(rs), len(now0)) {
		rs[j].Remaining, rs[j].ResetAt = now0[j].Remaining, now0[j].ResetAt
	}
}
