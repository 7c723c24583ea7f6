package fsm

import (
	"math"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"pgregory.net/rapid"

	"github.com/sluicehq/sluice/limiter"
	"github.com/sluicehq/sluice/policy"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// The lifecycle model of model_test.go with rate-limit rules of every
// algorithm, counting requests or cost: the model decides each submission,
// keeps a ledger of what every job reserved at admission and what it was
// charged or refunded when it ended, and after every step the state
// machine's usage of every rule, for every key, equals the model's.
//
// The model's limits are a second limiter.Engine that sees only what the
// ledger says should happen: a charge when a job is admitted, and when it
// ends (done, failed, cancelled, expired, dead-lettered) a settlement to its
// real cost and the release of its concurrency slots. The limiter's
// algorithms have their own models (limiter/*_test.go); this test is about
// when the state machine charges, settles and releases, and with what. The
// concurrency caps and calendar quotas are also computed from the ledger
// alone, without the limiter, and checked against the state machine.

// The request shapes the test submits with: every rule scope sees more than
// one key.
var (
	ledgerKeys = []string{policy.HashKey("key-1"), policy.HashKey("key-2")}
	ledgerIPs  = []string{"10.0.0.1", "10.0.0.2"}
)

const (
	ruleJobs  = "jobs in flight" // concurrency, requests, per tenant
	ruleGPU   = "gpu in flight"  // concurrency, cost, global
	ruleDay   = "daily cost"     // quota, cost, per tenant, Asia/Kolkata days
	ruleMonth = "monthly jobs"   // quota, requests, per tenant
	ledgerTZ  = "Asia/Kolkata"   // midnight at 18:30 UTC
)

// settlementPolicy is testPolicy with one rule of every algorithm; what they
// count, their actions and their sizes are drawn, from tight (most
// submissions refused or delayed) to loose.
func settlementPolicy(t *rapid.T) *sluicev1.Policy {
	p := testPolicy()
	counts := func(name string) sluicev1.RuleCounts {
		return rapid.SampledFrom([]sluicev1.RuleCounts{sluicev1.RuleCounts_RULE_COUNTS_REQUESTS, sluicev1.RuleCounts_RULE_COUNTS_COST}).Draw(t, name+" counts")
	}
	// amount is a limit in the rule's unit: jobs, or cost (a job is
	// estimated at 500 or 2000 unless it declares its cost).
	amount := func(name string, c sluicev1.RuleCounts) int64 {
		if c == sluicev1.RuleCounts_RULE_COUNTS_COST {
			return rapid.SampledFrom([]int64{2500, 8000, 40000}).Draw(t, name+" cost")
		}
		return rapid.Int64Range(2, 12).Draw(t, name+" requests")
	}
	action := func(name string) sluicev1.OverLimitAction {
		return rapid.SampledFrom([]sluicev1.OverLimitAction{sluicev1.OverLimitAction_OVER_LIMIT_ACTION_REJECT, sluicev1.OverLimitAction_OVER_LIMIT_ACTION_DELAY}).Draw(t, name+" action")
	}
	d := durationpb.New
	rule := func(name string, scope sluicev1.RuleScope, limit func(c sluicev1.RuleCounts, n int64) *sluicev1.Rule) *sluicev1.Rule {
		c := counts(name)
		r := limit(c, amount(name, c))
		r.Name, r.Scope, r.Counts, r.Action, r.MaxWait = name, scope, c, action(name), d(5*time.Second)
		r.Shadow = rapid.IntRange(0, 5).Draw(t, name+" shadow") == 0
		return r
	}
	p.Rules = []*sluicev1.Rule{
		rule("bucket", sluicev1.RuleScope_RULE_SCOPE_TENANT, func(c sluicev1.RuleCounts, n int64) *sluicev1.Rule {
			return &sluicev1.Rule{Limit: &sluicev1.Rule_TokenBucket{TokenBucket: &sluicev1.TokenBucketLimit{Count: n, Per: d(10 * time.Second), Burst: n}}}
		}),
		rule("gcra", sluicev1.RuleScope_RULE_SCOPE_API_KEY, func(c sluicev1.RuleCounts, n int64) *sluicev1.Rule {
			return &sluicev1.Rule{Limit: &sluicev1.Rule_Gcra{Gcra: &sluicev1.TokenBucketLimit{Count: n, Per: d(5 * time.Second), Burst: n}}}
		}),
		rule("leaky", sluicev1.RuleScope_RULE_SCOPE_CLIENT_IP, func(c sluicev1.RuleCounts, n int64) *sluicev1.Rule {
			return &sluicev1.Rule{Limit: &sluicev1.Rule_LeakyQueue{LeakyQueue: &sluicev1.LeakyQueueLimit{Count: n, Per: d(2 * time.Second), Capacity: 2 * n}}}
		}),
		rule("fixed", sluicev1.RuleScope_RULE_SCOPE_MODEL, func(c sluicev1.RuleCounts, n int64) *sluicev1.Rule {
			return &sluicev1.Rule{Limit: &sluicev1.Rule_FixedWindow{FixedWindow: &sluicev1.WindowLimit{Limit: 3 * n, Window: d(time.Minute)}}}
		}),
		rule("log", sluicev1.RuleScope_RULE_SCOPE_TENANT, func(c sluicev1.RuleCounts, n int64) *sluicev1.Rule {
			return &sluicev1.Rule{Limit: &sluicev1.Rule_SlidingLog{SlidingLog: &sluicev1.WindowLimit{Limit: n, Window: d(30 * time.Second)}}}
		}),
		rule("window", sluicev1.RuleScope_RULE_SCOPE_GLOBAL, func(c sluicev1.RuleCounts, n int64) *sluicev1.Rule {
			return &sluicev1.Rule{Limit: &sluicev1.Rule_SlidingWindow{SlidingWindow: &sluicev1.WindowLimit{Limit: 4 * n, Window: d(time.Minute)}}}
		}),
		// Too many sdxl jobs in a minute degrade to llama-8b.
		rule("degrade", sluicev1.RuleScope_RULE_SCOPE_TENANT, func(c sluicev1.RuleCounts, n int64) *sluicev1.Rule {
			return &sluicev1.Rule{Match: &sluicev1.RuleMatch{Model: "sdxl"},
				Limit: &sluicev1.Rule_SlidingWindow{SlidingWindow: &sluicev1.WindowLimit{Limit: n, Window: d(time.Minute)}}}
		}),
		{Name: ruleJobs, Counts: sluicev1.RuleCounts_RULE_COUNTS_REQUESTS,
			Limit: &sluicev1.Rule_Concurrency{Concurrency: &sluicev1.ConcurrencyLimit{Limit: rapid.Int64Range(2, 10).Draw(t, "jobs limit")}}},
		{Name: ruleGPU, Scope: sluicev1.RuleScope_RULE_SCOPE_GLOBAL, Counts: sluicev1.RuleCounts_RULE_COUNTS_COST,
			Limit: &sluicev1.Rule_Concurrency{Concurrency: &sluicev1.ConcurrencyLimit{Limit: rapid.SampledFrom([]int64{10000, 1 << 50}).Draw(t, "gpu limit")}}},
		{Name: ruleDay, Counts: sluicev1.RuleCounts_RULE_COUNTS_COST,
			Limit: &sluicev1.Rule_Quota{Quota: &sluicev1.QuotaLimit{Limit: rapid.SampledFrom([]int64{30000, 1 << 40}).Draw(t, "day limit"), TimeZone: ledgerTZ}}},
		{Name: ruleMonth, Counts: sluicev1.RuleCounts_RULE_COUNTS_REQUESTS,
			Limit: &sluicev1.Rule_Quota{Quota: &sluicev1.QuotaLimit{Limit: rapid.Int64Range(10, 60).Draw(t, "month limit"), Period: sluicev1.QuotaPeriod_QUOTA_PERIOD_MONTH}}},
	}
	p.Rules[6].Action, p.Rules[6].FallbackModel, p.Rules[6].Shadow = sluicev1.OverLimitAction_OVER_LIMIT_ACTION_DEGRADE, "llama-8b", false
	return p
}

// modelCharge is one admitted job's charge.
type modelCharge struct {
	req      limiter.Request // as admitted: the fallback model when degraded, Cost the estimate
	at       int64           // admission time: every rule was charged then
	open     bool            // not yet settled
	actual   int64           // the settled cost, once closed
	settled  int64           // when it was settled
	delayed  string          // the rule that delayed it
	degraded string          // the rule that degraded it
}

// tenantLedger is what one tenant reserved, was charged and was refunded,
// and what its calendar quotas count.
type tenantLedger struct {
	reserved int64 // estimates of charges still open
	charged  int64 // real costs of settled charges
	refunded int64 // estimates that were not used
	overrun  int64 // real costs above their estimates
	day      map[int64]int64
	month    map[int64]int64
}

type ledger struct {
	ref     *limiter.Engine
	dec     limiter.Decision
	charges map[uint64]*modelCharge // by job id, forgotten jobs too
	tenants map[string]*tenantLedger
	tiers   map[string]string
	dayQ    limiter.Quota
	monthQ  limiter.Quota
	limits  map[string]int64
	ops     int // settlements so far
}

func newLedger(t *rapid.T, p *sluicev1.Policy) *ledger {
	rules, err := policy.LimiterRules(p)
	if err != nil {
		t.Fatalf("rules: %v", err)
	}
	ref, err := limiter.NewEngine(rules)
	if err != nil {
		t.Fatalf("engine: %v", err)
	}
	loc, err := policy.LoadZone(ledgerTZ)
	if err != nil {
		t.Fatalf("zone: %v", err)
	}
	l := &ledger{ref: ref, charges: map[uint64]*modelCharge{}, tenants: map[string]*tenantLedger{}, tiers: map[string]string{},
		dayQ: limiter.Quota{Period: limiter.Daily, Location: loc}, monthQ: limiter.Quota{Period: limiter.Monthly}, limits: map[string]int64{}}
	for _, tn := range p.Tenants {
		l.tiers[tn.Name] = tn.Tier
		l.tenants[tn.Name] = &tenantLedger{day: map[int64]int64{}, month: map[int64]int64{}}
	}
	for _, r := range p.Rules {
		switch lim := r.Limit.(type) {
		case *sluicev1.Rule_Concurrency:
			l.limits[r.Name] = lim.Concurrency.Limit
		case *sluicev1.Rule_Quota:
			l.limits[r.Name] = lim.Quota.Limit
		}
	}
	return l
}

// draw fills in the parts of a submission the rules key on, and a declared
// cost: none (the estimate), small, large, or garbage.
func (l *ledger) draw(t *rapid.T, c *raftv1.Submit) {
	c.ApiKeySha256 = rapid.SampledFrom(ledgerKeys).Draw(t, "api_key")
	c.ClientIp = rapid.SampledFrom(ledgerIPs).Draw(t, "client_ip")
	c.Method = "Submit"
	c.Spec.DeclaredCost = rapid.SampledFrom([]int64{0, 0, 0, 1, 700, 5000, -5, 1 << 62}).Draw(t, "declared_cost")
}

// estimate is what admission charges a job of model: its declared cost,
// else one GPU for the model's expected duration, in milliseconds.
func estimate(declared int64, model string) int64 {
	if declared > 0 {
		return declared
	}
	return max(1, modelDefaultDuration[model].Milliseconds())
}

// clamp is the cost a rule counts: the limiter clamps costs into [0, 2^60].
func clamp(c int64) int64 { return min(max(c, 0), 1<<60) }

// The ledger's sums check only that nothing goes negative: garbage costs
// (2^62) must not overflow them. small caps a cost for the reserved sum
// (taken and given back alike); satAdd saturates the others.
func small(c int64) int64 { return min(max(c, 0), 1<<40) }

func satAdd(a, b int64) int64 {
	if b > 0 && a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

type ledgerAdmission struct {
	err   error
	ready int64
	model string
}

// admit decides a submission as the rules do: admitted now or later, or
// degraded to the fallback model and decided again, or refused.
func (l *ledger) admit(id uint64, c *raftv1.Submit, now int64) ledgerAdmission {
	spec := c.Spec
	req := limiter.Request{Tenant: c.Tenant, APIKey: c.ApiKeySha256, Tier: l.tiers[c.Tenant], ClientIP: c.ClientIp,
		Method: c.Method, Model: spec.Model, Cost: estimate(spec.DeclaredCost, spec.Model)}
	ch := &modelCharge{at: now, open: true}
	for hops := 0; ; hops++ {
		l.ref.Admit(&req, now, &l.dec)
		switch l.dec.Verdict {
		case limiter.Admitted, limiter.Delayed:
			if l.dec.Verdict == limiter.Delayed {
				ch.delayed = l.dec.Rule
			}
			ch.req = req
			l.charges[id] = ch
			tl := l.tenants[c.Tenant]
			tl.reserved += small(req.Cost)
			tl.day[l.period(l.dayQ, now)] += clamp(req.Cost)
			tl.month[l.period(l.monthQ, now)]++
			return ledgerAdmission{ready: max(now, l.dec.At), model: req.Model}
		case limiter.Degraded:
			if _, ok := modelDefaultDuration[l.dec.Fallback]; !ok || hops >= maxDegrades {
				return ledgerAdmission{err: &LimitError{Rule: l.dec.Rule}}
			}
			ch.degraded = l.dec.Rule
			req.Model, req.Cost = l.dec.Fallback, estimate(spec.DeclaredCost, l.dec.Fallback)
		default:
			return ledgerAdmission{err: &LimitError{Rule: l.dec.Rule}}
		}
	}
}

func (l *ledger) period(q limiter.Quota, at int64) int64 {
	start, _ := q.PeriodAt(at)
	return start
}

// settle closes a finished job's charge: the real cost is what the executor
// reported, else nothing if it never ran, else its declared cost, else the
// GPU-milliseconds it ran. Rules that count cost are corrected to it (the
// unused estimate refunded in the period it was charged in, an overrun
// charged now); concurrency slots are released.
func (l *ledger) settle(j *modelJob, reported, now int64) {
	ch := l.charges[j.id]
	if ch == nil || !ch.open {
		return
	}
	var actual int64
	switch {
	case reported > 0:
		actual = reported
	case j.ranNs == 0:
	case j.declared > 0:
		actual = j.declared
	default:
		actual = max(1, j.ranNs/int64(time.Millisecond))
	}
	ch.open, ch.actual, ch.settled = false, actual, now
	l.ref.Settle(&ch.req, now, ch.at, actual)
	l.ref.Release(&ch.req, now)
	l.ops++
	tl := l.tenants[ch.req.Tenant]
	tl.reserved -= small(ch.req.Cost)
	tl.charged = satAdd(tl.charged, actual)
	if est := ch.req.Cost; actual < est {
		tl.refunded = satAdd(tl.refunded, est-actual)
	} else {
		tl.overrun = satAdd(tl.overrun, actual-est)
	}
	switch diff := clamp(actual) - clamp(ch.req.Cost); {
	case diff > 0:
		tl.day[l.period(l.dayQ, now)] += diff
	case diff < 0:
		// A period that has ended is not refunded.
		if p := l.period(l.dayQ, ch.at); p == l.period(l.dayQ, now) {
			tl.day[p] -= min(tl.day[p], -diff)
		}
	}
}

// checkJob compares a job's admission record with its charge.
func (l *ledger) checkJob(t *rapid.T, j *modelJob, r *raftv1.JobRecord) {
	ch := l.charges[j.id]
	a, c := JobAdmission(r), r.GetCharge()
	switch {
	case a.GetReservedCost() != ch.req.Cost || c.GetCost() != ch.req.Cost:
		t.Fatalf("job %d reserved %d (charge %d), model %d", j.id, a.GetReservedCost(), c.GetCost(), ch.req.Cost)
	case c.GetClosed() == ch.open:
		t.Fatalf("job %d %s: charge closed %v, model open %v", j.id, StateName(j.state), c.GetClosed(), ch.open)
	case !ch.open && a.GetSettledCost() != ch.actual:
		t.Fatalf("job %d %s (ran %v, declared %d): settled %d, model %d", j.id, StateName(j.state), time.Duration(j.ranNs), j.declared, a.GetSettledCost(), ch.actual)
	case a.GetDelayedBy() != ch.delayed || a.GetDegradedBy() != ch.degraded:
		t.Fatalf("job %d delayed by %q degraded by %q, model %q %q", j.id, a.GetDelayedBy(), a.GetDegradedBy(), ch.delayed, ch.degraded)
	}
	// A charge is open while its job is queued or running, and settled once
	// it ends; a redriven dead letter runs again on its settled charge
	// (docs/scheduling.md: "its rate-limit charge is not taken again").
	if active := j.state == mQueued || j.state == mRunning; ch.open && !active || !ch.open && active && j.redrives == 0 {
		t.Fatalf("job %d is %s with its charge open=%v", j.id, StateName(j.state), ch.open)
	}
}

// check compares every rule's usage, for every key the test uses, with the
// model's limiter, and the concurrency caps and quotas with the ledger.
func (l *ledger) check(t *rapid.T, f *FSM, now int64) {
	inFlight := map[string]int64{}
	var gpu int64
	for _, ch := range l.charges {
		if ch.open {
			inFlight[ch.req.Tenant]++
			gpu += clamp(ch.req.Cost)
		}
	}
	for tenant, tl := range l.tenants {
		if tl.reserved < 0 || tl.charged < 0 {
			t.Fatalf("%s: reserved %d charged %d", tenant, tl.reserved, tl.charged)
		}
		for _, model := range []string{"sdxl", "llama-8b"} {
			for _, key := range ledgerKeys {
				for _, ip := range ledgerIPs {
					req := limiter.Request{Tenant: tenant, APIKey: key, Tier: l.tiers[tenant], ClientIP: ip, Method: "Submit", Model: model}
					got, want := f.Reads().Usage(req, now), l.ref.Usage(&req, now, nil)
					if !slices.Equal(got, want) {
						t.Fatalf("usage of %s/%s/%s/%s after %d settlements:\nstate machine %+v\nmodel         %+v", tenant, model, key[:6], ip, l.ops, got, want)
					}
					for _, u := range got {
						var used int64
						switch u.Rule {
						case ruleJobs:
							used = inFlight[tenant]
						case ruleGPU:
							used = gpu
						case ruleDay:
							used = tl.day[l.period(l.dayQ, now)]
						case ruleMonth:
							used = tl.month[l.period(l.monthQ, now)]
						default:
							continue
						}
						if want := min(used, l.limits[u.Rule]); u.Used != want {
							t.Fatalf("%s: rule %q uses %d, the ledger says %d (of %d)", tenant, u.Rule, u.Used, want, l.limits[u.Rule])
						}
					}
				}
			}
		}
	}
}

// TestQuotaSettlementMatchesModel is the lifecycle model with rate limits:
// besides everything TestJobLifecycleMatchesModel checks, submissions are
// admitted, delayed, degraded and refused as the model's limits decide, and
// every charge is settled exactly once, when its job ends, whichever way it
// ends (success, failure, cancel while queued or running, queue timeout,
// run timeout into dead letter, a lost lease into dead letter), to the real
// cost, with concurrency slots released.
func TestQuotaSettlementMatchesModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		// Some runs start three minutes before midnight in Kolkata, so a
		// day's quota turns over with charges open.
		start := rapid.SampledFrom([]int64{1000 * sec, 66600*sec - 3*int64(time.Minute)}).Draw(t, "start")
		p := settlementPolicy(t)
		l := newLifecycle(t, start, p)
		l.m.ledger = newLedger(t, p)
		l.run(t, true)
	})
}
