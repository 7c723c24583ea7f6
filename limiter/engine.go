package limiter

import (
	"fmt"
	"slices"
)

// Engine holds the rules and the per-key state of each, and decides requests against all
// matching rules at once: either every matching rule passes and is charged, or none is.
//
// An Engine is a state machine: it never reads the clock (time is the now argument, unix
// nanoseconds, which the caller keeps from going backwards) and it is not safe for
// concurrent use; Check, Usage and AppendSnapshot do not mutate, so they may run concurrently
// with each other (not with anything else).
type Engine struct {
	rules   []rule
	general []int32                      // rules checked against every request
	index   [numAttrs]map[string][]int32 // rules with an exact-match field, by its value
}

// NewEngine validates rules and returns an Engine enforcing them, with no keys yet.
func NewEngine(rules []Rule) (*Engine, error) {
	e := &Engine{}
	if err := e.SetRules(rules); err != nil {
		return nil, err
	}
	return e, nil
}

// SetRules replaces the rules. A rule whose name, algorithm parameters, scope and key bound
// are unchanged keeps its keys' state; every other rule starts empty. On error nothing
// changes.
func (e *Engine) SetRules(rules []Rule) error {
	compiled, err := compile(rules)
	if err != nil {
		return err
	}
	var general []int32
	var index [numAttrs]map[string][]int32
	for i := range compiled {
		a := compiled[i].indexAttr()
		if a == numAttrs {
			general = append(general, int32(i))
			continue
		}
		if index[a] == nil {
			index[a] = make(map[string][]int32)
		}
		v := compiled[i].Match.attr(a)
		index[a][v] = append(index[a][v], int32(i))
	}
	// A request matches at most the general rules plus, per attribute, the rules indexed
	// under its value of that attribute.
	bound := len(general)
	for a := range index {
		longest := 0
		for _, list := range index[a] {
			longest = max(longest, len(list))
		}
		bound += longest
	}
	if bound > MaxRulesPerRequest {
		return fmt.Errorf("rules: up to %d rules can match one request, more than the %d a Decision holds", bound, MaxRulesPerRequest)
	}

	old := make(map[string]*rule, len(e.rules))
	for i := range e.rules {
		old[e.rules[i].Name] = &e.rules[i]
	}
	for i := range compiled {
		r := &compiled[i]
		if o, ok := old[r.Name]; ok && o.sameLimit(r) {
			r.table = o.table
		} else {
			r.table = r.Algorithm.newTable(r.maxKeys)
		}
	}
	e.rules, e.general, e.index = compiled, general, index
	return nil
}

// sameLimit reports whether r's keys mean the same to o: same algorithm and parameters, same
// scope, same bound.
func (o *rule) sameLimit(r *rule) bool {
	return o.Scope == r.Scope && o.maxKeys == r.maxKeys &&
		string(o.table.appendParams(nil)) == string(r.Algorithm.newTable(0).appendParams(nil))
}

// match writes the indices of the rules that apply to req into out, in rule order, with
// overrides in place of the rules they replace, and returns how many.
func (e *Engine) match(req *Request, out *[MaxRulesPerRequest]int32) int {
	var ip lazyAddr
	n := 0
	for _, i := range e.general {
		if n < MaxRulesPerRequest && e.rules[i].matches(req, &ip) {
			out[n] = i
			n++
		}
	}
	for a := range numAttrs {
		if e.index[a] == nil {
			continue
		}
		for _, i := range e.index[a][req.attr(a)] {
			if n < MaxRulesPerRequest && e.rules[i].matches(req, &ip) {
				out[n] = i
				n++
			}
		}
	}
	// Insertion sort: n is small, and rule order decides which override wins.
	for j := 1; j < n; j++ {
		for k := j; k > 0 && out[k] < out[k-1]; k-- {
			out[k], out[k-1] = out[k-1], out[k]
		}
	}
	// An override applies only with the rule it replaces, and in its place; the first
	// matching override of a rule wins.
	var gone, replaced uint32
	for j := 0; j < n; j++ {
		b := e.rules[out[j]].base
		if b < 0 {
			continue
		}
		k := slices.Index(out[:n], b)
		if k < 0 || replaced&(1<<k) != 0 {
			gone |= 1 << j
			continue
		}
		replaced |= 1 << k
		gone |= 1 << k
	}
	if gone == 0 {
		return n
	}
	m := 0
	for j := 0; j < n; j++ {
		if gone&(1<<j) == 0 {
			out[m] = out[j]
			m++
		}
	}
	return m
}

// Check decides req at now as Admit would, without charging or changing anything: the
// leader's pre-check. For a new key whose rule's table is full but has an idle key to drop,
// it assumes the key gets its own state, as Admit then does.
func (e *Engine) Check(req *Request, now int64, d *Decision) { e.decide(req, now, d, false, true) }

// Admit decides req at now and, if it is admitted, charges every matching rule: at now, or
// for a delayed rule as of the time it fits. A refused request charges nothing (a new key in a
// full table may still have made it drop idle keys, which changes no decision).
func (e *Engine) Admit(req *Request, now int64, d *Decision) { e.decide(req, now, d, true, true) }

// CheckNow is Check for a caller that cannot hold a request back (a gateway): a request
// that would be delayed is refused instead, with RetryAt the time it would have started.
func (e *Engine) CheckNow(req *Request, now int64, d *Decision) { e.decide(req, now, d, false, false) }

// AdmitNow is Admit for a caller that cannot hold a request back: it admits only what may
// start now, and refuses what Admit would delay, charging nothing, with RetryAt the time it
// would have started.
func (e *Engine) AdmitNow(req *Request, now int64, d *Decision) { e.decide(req, now, d, true, false) }

func (e *Engine) decide(req *Request, now int64, d *Decision, charge, delay bool) {
	d.Verdict, d.At, d.RetryAt, d.Rule, d.Fallback, d.delayed = Admitted, now, 0, "", "", 0
	d.n = e.match(req, &d.idx)
	refuse, degrade, challenge, delayedBy := -1, -1, -1, -1
	for j := 0; j < d.n; j++ {
		r := &e.rules[d.idx[j]]
		d.keys[j] = hashed(r.key(req))
		v, rf := r.table.evaluate(d.keys[j], now, r.units(req), charge)
		d.refs[j] = rf
		rr := &d.results[j]
		rr.Rule, rr.Action, rr.Shadow, rr.Overflow = r.Name, r.Action, r.Shadow, rf == refOverflow || rf == refFull
		rr.Exempt = len(req.Exempt) > 0 && slices.Contains(req.Exempt, r.Name)
		v.fill(&rr.Result, r.table.limit(), now)
		if r.Shadow || rr.Exempt {
			continue
		}
		if v.allowed && v.at > now && !delay { // would start later: refused, to retry then
			rr.Allowed, rr.RetryAt, rr.ServeAt = false, v.at, 0
			rr.Remaining = min(rr.Limit, rr.Remaining+r.units(req))
			v.allowed = false
		}
		if v.allowed { // v.at is ServeAt
			if v.at > d.At {
				d.At, delayedBy = v.at, j
			}
			continue
		}
		switch { // v.at is RetryAt
		case delay && r.Action == Delay && r.table.canDelay() && v.at != Never && v.at-now <= int64(r.MaxWait):
			d.delayed |= 1 << j
			rr.Allowed, rr.ServeAt, rr.Remaining = true, v.at, 0
			if v.at > d.At {
				d.At, delayedBy = v.at, j
			}
			continue
		case r.Action == Degrade:
			if degrade < 0 {
				degrade = j
			}
		case r.Action == Challenge:
			if challenge < 0 {
				challenge = j
			}
		default:
			if refuse < 0 {
				refuse = j
			}
		}
		d.RetryAt = laterRetry(d.RetryAt, v.at)
	}
	switch {
	case refuse >= 0:
		d.Verdict, d.At, d.Rule = Rejected, 0, e.rules[d.idx[refuse]].Name
		e.unchargeRemaining(req, d)
		return
	case degrade >= 0:
		r := &e.rules[d.idx[degrade]]
		d.Verdict, d.At, d.Rule, d.Fallback = Degraded, 0, r.Name, r.Fallback
		e.unchargeRemaining(req, d)
		return
	case challenge >= 0:
		d.Verdict, d.At, d.Rule = Challenged, 0, e.rules[d.idx[challenge]].Name
		e.unchargeRemaining(req, d)
		return
	}
	d.RetryAt = 0
	if d.At > now {
		d.Verdict, d.Rule = Delayed, e.rules[d.idx[delayedBy]].Name
	}
	if !charge {
		return
	}
	for j := 0; j < d.n; j++ {
		r := &e.rules[d.idx[j]]
		units := r.units(req)
		rr := &d.results[j]
		if units == 0 || !rr.Allowed {
			continue // a shadow or exempt rule that would have refused is not charged
		}
		if d.delayed&(1<<j) == 0 {
			r.table.commit(d.keys[j], d.refs[j], now, units)
			continue
		}
		res := r.table.force(d.keys[j], d.refs[j], now, units).result(r.table.limit(), now)
		res.ServeAt, res.RetryAt = rr.ServeAt, rr.RetryAt
		rr.Result = res
	}
}

// unchargeRemaining makes the rules that would have allowed a refused
// request report what is left without its charge: nothing was charged, and
// the usage a client sees with the refusal must say so.
func (e *Engine) unchargeRemaining(req *Request, d *Decision) {
	for j := 0; j < d.n; j++ {
		rr := &d.results[j]
		if rr.Allowed {
			rr.Remaining = min(rr.Limit, rr.Remaining+e.rules[d.idx[j]].units(req))
		}
	}
}

// Settle corrects the charge of an admitted request once its real cost is known: req is the
// request as admitted at time at (its Cost the estimate charged), actual the real cost. Rules
// that count cost are refunded the difference or charged the excess, even past their limit
// (the work is done); rules that count requests, and concurrency caps, are unchanged. A key
// that shares its rule's overflow state is charged but not refunded there.
func (e *Engine) Settle(req *Request, now, at, actual int64) {
	var idx [MaxRulesPerRequest]int32
	n := e.match(req, &idx)
	diff := clampCost(actual) - clampCost(req.Cost)
	for _, i := range idx[:n] {
		r := &e.rules[i]
		switch {
		case r.Counts != CountCost || r.isCap || diff == 0:
		case diff > 0:
			r.table.charge(hashed(r.key(req)), now, diff)
		default:
			r.table.refund(hashed(r.key(req)), now, at, -diff)
		}
	}
}

// Refund undoes the charge of a request admitted at time at that will not run (cancelled
// before it started), on every rule including concurrency caps. Windows that have moved on
// since at are not refunded; buckets are refilled, never above full; a key that shares its
// rule's overflow state is not refunded (the overflow state recovers with time).
func (e *Engine) Refund(req *Request, now, at int64) {
	var idx [MaxRulesPerRequest]int32
	n := e.match(req, &idx)
	for _, i := range idx[:n] {
		r := &e.rules[i]
		r.table.refund(hashed(r.key(req)), now, at, r.units(req))
	}
}

// Release gives back what an admitted request held on concurrency caps, when it ends.
func (e *Engine) Release(req *Request, now int64) {
	var idx [MaxRulesPerRequest]int32
	n := e.match(req, &idx)
	for _, i := range idx[:n] {
		if r := &e.rules[i]; r.isCap {
			r.table.refund(hashed(r.key(req)), now, now, r.units(req))
		}
	}
}

// Usage is one rule's standing for one key, e.g. "daily images 3/5 (resets in 7h12m)".
type Usage struct {
	Rule      string
	Used      int64 // Limit − Remaining: units in use, not yet refilled, or counted this period
	Limit     int64
	Remaining int64
	ResetAt   int64 // when Used is back to 0; 0 when unknown (running work)
	Shadow    bool
	Overflow  bool // the key shares its rule's overflow state (or, on a cap, is refused one)
}

// Usage appends to dst the standing of every rule that applies to req, in rule order. It
// changes nothing.
func (e *Engine) Usage(req *Request, now int64, dst []Usage) []Usage {
	var idx [MaxRulesPerRequest]int32
	n := e.match(req, &idx)
	for _, i := range idx[:n] {
		r := &e.rules[i]
		v, rf := r.table.evaluate(hashed(r.key(req)), now, 0, false)
		res := v.result(r.table.limit(), now)
		u := Usage{Rule: r.Name, Used: res.Limit - res.Remaining, Limit: res.Limit,
			Remaining: res.Remaining, ResetAt: res.ResetAt, Shadow: r.Shadow}
		switch rf {
		case refFull:
			u.Used, u.Overflow = 0, true
		case refOverflow:
			u.Overflow = true
		}
		dst = append(dst, u)
	}
	return dst
}

// Sweep drops every key whose state is indistinguishable from a new key's at now and returns
// how many it dropped. It never changes a decision; the state machine calls it at points of
// its log (a new key in a full table also sweeps that table first), so replicas agree.
func (e *Engine) Sweep(now int64) int {
	n := 0
	for i := range e.rules {
		n += e.rules[i].table.sweep(now)
	}
	return n
}

// Keys returns how many keys the Engine holds over all rules.
func (e *Engine) Keys() int {
	n := 0
	for i := range e.rules {
		n += e.rules[i].table.len()
	}
	return n
}
