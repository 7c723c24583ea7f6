package limiter

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

func mustEngine(t interface{ Fatal(...any) }, rules ...Rule) *Engine {
	e, err := NewEngine(rules)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

const sec = int64(time.Second)

// drawRule draws a rule over small attribute domains, so that requests often share keys.
func drawRule(t *rapid.T, i int) Rule {
	var alg Algorithm
	limit := rapid.Int64Range(1, 6).Draw(t, "limit")
	w := time.Duration(rapid.Int64Range(1, 10).Draw(t, "seconds")) * time.Second
	r := Rate{N: rapid.Int64Range(1, 3).Draw(t, "n"), Per: w}
	switch rapid.IntRange(0, 7).Draw(t, "alg") {
	case 0:
		alg = TokenBucket{Rate: r, Burst: limit}
	case 1:
		alg = GCRA{Rate: r, Burst: limit}
	case 2:
		alg = LeakyQueue{Rate: r, Capacity: limit}
	case 3:
		alg = FixedWindow{Limit: limit, Window: w}
	case 4:
		alg = SlidingLog{Limit: limit, Window: w}
	case 5:
		alg = SlidingCounter{Limit: limit, Window: w}
	case 6:
		alg = Concurrency{Limit: limit}
	default:
		alg = Quota{Limit: limit, Period: Daily, Location: mustZone("Asia/Tokyo")}
	}
	return Rule{
		Name: fmt.Sprintf("r%d", i),
		Match: Match{
			Tenant: rapid.SampledFrom([]string{"", "", "ann"}).Draw(t, "matchTenant"),
			Tier:   rapid.SampledFrom([]string{"", "", "free"}).Draw(t, "matchTier"),
			Model:  rapid.SampledFrom([]string{"", "", "sdxl"}).Draw(t, "matchModel"),
		},
		Scope:     rapid.SampledFrom([]Scope{Global, PerTenant, PerTier, PerModel, PerClientIP}).Draw(t, "scope"),
		Algorithm: alg,
		Counts:    rapid.SampledFrom([]Counts{CountRequests, CountCost}).Draw(t, "counts"),
		MaxKeys:   rapid.IntRange(1, 3).Draw(t, "maxKeys"),
	}
}

func drawRequest(t *rapid.T) Request {
	return Request{
		Tenant:   rapid.SampledFrom([]string{"ann", "bob", "cat"}).Draw(t, "tenant"),
		Tier:     rapid.SampledFrom([]string{"free", "pro"}).Draw(t, "tier"),
		Model:    rapid.SampledFrom([]string{"sdxl", "flux"}).Draw(t, "model"),
		ClientIP: rapid.SampledFrom([]string{"10.0.0.1", "10.0.0.2", "192.0.2.9"}).Draw(t, "ip"),
		Cost:     rapid.Int64Range(0, 4).Draw(t, "cost"),
	}
}

func tableBytes(e *Engine, i int) []byte { return e.rules[i].table.appendSnapshot(nil) }

// Each rule of an Engine evolves exactly as it would alone, charged only when every matching
// rule admits: all or nothing. Check predicts Admit and changes nothing.
func TestEngineChargesEveryMatchingRuleOrNone(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 5).Draw(t, "rules")
		rules := make([]Rule, n)
		alone := make([]*Engine, n)
		for i := range rules {
			rules[i] = drawRule(t, i)
			alone[i] = mustEngine(t, rules[i])
		}
		e := mustEngine(t, rules...)
		now := epoch
		var d, c, a Decision
		var admitted []struct {
			req Request
			at  int64
		}
		for i := range rapid.IntRange(1, 60).Draw(t, "requests") {
			now += rapid.Int64Range(0, 3*sec).Draw(t, "gap")
			if len(admitted) > 0 && rapid.IntRange(0, 4).Draw(t, "undo") == 0 {
				k := rapid.IntRange(0, len(admitted)-1).Draw(t, "which")
				p := admitted[k]
				admitted = append(admitted[:k], admitted[k+1:]...)
				switch rapid.IntRange(0, 2).Draw(t, "how") {
				case 0:
					e.Refund(&p.req, now, p.at)
					for _, x := range alone {
						x.Refund(&p.req, now, p.at)
					}
				case 1:
					e.Release(&p.req, now)
					for _, x := range alone {
						x.Release(&p.req, now)
					}
				default:
					actual := rapid.Int64Range(0, 6).Draw(t, "actual")
					e.Settle(&p.req, now, p.at, actual)
					for _, x := range alone {
						x.Settle(&p.req, now, p.at, actual)
					}
				}
				continue
			}
			req := drawRequest(t)
			// A request for a new key in a full table drops idle keys first, rejected or not:
			// invisible to decisions, but not to the bytes. Drop them now to compare the rest.
			e.Sweep(now)
			for _, x := range alone {
				x.Sweep(now)
			}
			before := e.AppendSnapshot(nil)
			e.Check(&req, now, &c)
			if !bytes.Equal(before, e.AppendSnapshot(nil)) {
				t.Fatalf("request %d: Check changed the engine", i)
			}
			e.Admit(&req, now, &d)
			if c.Verdict != d.Verdict || c.At != d.At || c.RetryAt != d.RetryAt {
				t.Fatalf("request %d: Check said %v at %d retry %d, Admit %v at %d retry %d", i, c.Verdict, c.At, c.RetryAt, d.Verdict, d.At, d.RetryAt)
			}
			want := true
			var results []RuleResult
			for j, x := range alone {
				x.Check(&req, now, &a)
				if len(a.Rules()) == 0 {
					continue
				}
				results = append(results, a.Rules()[0])
				want = want && a.Rules()[0].Allowed
				_ = j
			}
			if d.Allowed() != want {
				t.Fatalf("request %d %+v: verdict %v, want allowed=%v; rules %+v", i, req, d.Verdict, want, results)
			}
			if len(results) != len(d.Rules()) {
				t.Fatalf("request %d: %d rules matched, want %d", i, len(d.Rules()), len(results))
			}
			for j, r := range d.Rules() {
				if r.Rule != results[j].Rule || r.Allowed != results[j].Allowed {
					t.Fatalf("request %d: rule %d is %+v, alone %+v", i, j, r, results[j])
				}
			}
			if !d.Allowed() {
				if !bytes.Equal(before, e.AppendSnapshot(nil)) {
					t.Fatalf("request %d: rejected, yet charged something", i)
				}
				continue
			}
			for _, x := range alone {
				x.Admit(&req, now, &a)
			}
			admitted = append(admitted, struct {
				req Request
				at  int64
			}{req, now})
			for j := range alone {
				if !bytes.Equal(tableBytes(e, j), tableBytes(alone[j], 0)) {
					t.Fatalf("request %d: rule %s's state differs from the rule's alone", i, rules[j].Name)
				}
			}
		}
	})
}

func TestEngineOverrideReplacesTierRule(t *testing.T) {
	e := mustEngine(t,
		Rule{Name: "free-rpm", Match: Match{Tier: "free"}, Scope: PerTenant,
			Algorithm: FixedWindow{Limit: 2, Window: time.Minute}},
		Rule{Name: "carol-rpm", Replaces: "free-rpm", Match: Match{Tenant: "carol"}, Scope: PerTenant,
			Algorithm: FixedWindow{Limit: 5, Window: time.Minute}},
		Rule{Name: "global", Algorithm: TokenBucket{Rate: Rate{N: 100, Per: time.Second}, Burst: 100}},
	)
	count := func(req Request) (n int, rules string) {
		var d Decision
		for range 10 {
			e.Admit(&req, epoch, &d)
			if d.Allowed() {
				n++
			}
		}
		var names []string
		for _, r := range d.Rules() {
			names = append(names, r.Rule)
		}
		return n, strings.Join(names, ",")
	}
	for _, tc := range []struct {
		req   Request
		n     int
		rules string
	}{
		{Request{Tenant: "bob", Tier: "free", Cost: 1}, 2, "free-rpm,global"},
		{Request{Tenant: "carol", Tier: "free", Cost: 1}, 5, "carol-rpm,global"}, // replaced, not added
		{Request{Tenant: "carol", Tier: "pro", Cost: 1}, 10, "global"},           // no tier rule: no override
	} {
		if n, rules := count(tc.req); n != tc.n || rules != tc.rules {
			t.Errorf("%+v: %d admitted under %s, want %d under %s", tc.req, n, rules, tc.n, tc.rules)
		}
	}
}

func TestEngineShadowRuleNeverRejects(t *testing.T) {
	e := mustEngine(t, Rule{Name: "trial", Shadow: true, Scope: PerTenant,
		Algorithm: FixedWindow{Limit: 1, Window: time.Minute}})
	req := Request{Tenant: "ann", Cost: 1}
	var d Decision
	for i := range 3 {
		e.Admit(&req, epoch, &d)
		r := d.Rules()[0]
		if d.Verdict != Admitted || !r.Shadow || r.Allowed != (i == 0) {
			t.Fatalf("hit %d: %v, rule %+v; want admitted, the shadow rule refusing after the first", i, d.Verdict, r)
		}
	}
	if u := e.Usage(&req, epoch, nil); u[0].Used != 1 {
		t.Fatalf("shadow rule counted %d, want 1 (what it would have admitted)", u[0].Used)
	}
}

func TestEngineDelayAdmitsAtFitTimeAndChargesAsOfThen(t *testing.T) {
	for _, alg := range []Algorithm{
		TokenBucket{Rate: Rate{N: 1, Per: time.Second}, Burst: 1},
		GCRA{Rate: Rate{N: 1, Per: time.Second}, Burst: 1},
	} {
		e := mustEngine(t, Rule{Name: "smooth", Algorithm: alg, Action: Delay, MaxWait: 2 * time.Second})
		req := Request{Cost: 1}
		var d Decision
		for i, want := range []struct {
			v       Verdict
			at      int64
			retryAt int64
		}{
			{Admitted, epoch, 0},
			{Delayed, epoch + sec, 0},
			{Delayed, epoch + 2*sec, 0},
			{Rejected, 0, epoch + 3*sec}, // would wait 3s > MaxWait
		} {
			e.Admit(&req, epoch, &d)
			if d.Verdict != want.v || d.At != want.at || d.RetryAt != want.retryAt {
				t.Fatalf("%T hit %d: %v at %d retry %d, want %v at %d retry %d", alg, i, d.Verdict, d.At, d.RetryAt, want.v, want.at, want.retryAt)
			}
		}
		// The delayed hits were charged as of their start: the next slot is at +3s.
		e.Admit(&req, epoch+2*sec, &d)
		if d.Verdict != Delayed || d.At != epoch+3*sec || d.Rule != "smooth" {
			t.Fatalf("%T at +2s: %v at %d, want delayed to +3s", alg, d.Verdict, d.At)
		}
	}
}

func TestEngineDelayOnAWindowRejectsWithRetryAt(t *testing.T) {
	e := mustEngine(t, Rule{Name: "rpm", Algorithm: FixedWindow{Limit: 1, Window: time.Minute},
		Action: Delay, MaxWait: time.Hour})
	req := Request{Cost: 1}
	var d Decision
	e.Admit(&req, epoch, &d)
	e.Admit(&req, epoch, &d)
	if next := (epoch/int64(time.Minute) + 1) * int64(time.Minute); d.Verdict != Rejected || d.RetryAt != next {
		t.Fatalf("%v retry %d, want rejected until the next window %d", d.Verdict, d.RetryAt, next)
	}
}

func TestEngineLeakyQueueDelaysEveryHitItQueues(t *testing.T) {
	e := mustEngine(t, Rule{Name: "queue", Algorithm: LeakyQueue{Rate: Rate{N: 4, Per: time.Second}, Capacity: 2}})
	req := Request{Cost: 1}
	var d Decision
	e.Admit(&req, epoch, &d)
	if d.Verdict != Admitted || d.At != epoch {
		t.Fatalf("first: %v at %d", d.Verdict, d.At)
	}
	e.Admit(&req, epoch, &d)
	if d.Verdict != Delayed || d.At != epoch+sec/4 || d.Rule != "queue" {
		t.Fatalf("second: %v at %d, want delayed 250ms", d.Verdict, d.At)
	}
}

func TestEngineDegradeNamesFallbackAndChargesNothing(t *testing.T) {
	e := mustEngine(t,
		Rule{Name: "sdxl-capacity", Match: Match{Model: "sdxl"}, Algorithm: Concurrency{Limit: 1},
			Action: Degrade, Fallback: "sd-turbo"},
		Rule{Name: "tenant-rpm", Scope: PerTenant, Algorithm: FixedWindow{Limit: 10, Window: time.Minute}},
	)
	req := Request{Tenant: "ann", Model: "sdxl", Cost: 1}
	var d Decision
	e.Admit(&req, epoch, &d)
	e.Admit(&req, epoch, &d)
	if d.Verdict != Degraded || d.Fallback != "sd-turbo" || d.Rule != "sdxl-capacity" {
		t.Fatalf("%v fallback %q rule %q, want degraded to sd-turbo", d.Verdict, d.Fallback, d.Rule)
	}
	if u := e.Usage(&req, epoch, nil); u[1].Used != 1 {
		t.Fatalf("tenant-rpm used %d, want 1: the degraded request is not charged", u[1].Used)
	}
	req.Model = d.Fallback
	if e.Admit(&req, epoch, &d); d.Verdict != Admitted {
		t.Fatalf("fallback model: %v", d.Verdict)
	}
}

func TestEngineSettleRefundsOrChargesTheDifference(t *testing.T) {
	e := mustEngine(t,
		Rule{Name: "tokens/min", Scope: PerTenant, Counts: CountCost,
			Algorithm: FixedWindow{Limit: 1000, Window: time.Minute}},
		Rule{Name: "requests/min", Scope: PerTenant, Algorithm: FixedWindow{Limit: 10, Window: time.Minute}},
	)
	req := Request{Tenant: "ann", Cost: 300} // the estimate
	var d Decision
	e.Admit(&req, epoch, &d)
	e.Settle(&req, epoch+sec, epoch, 120) // ran cheaper: 180 back
	u := e.Usage(&req, epoch+sec, nil)
	if u[0].Used != 120 || u[1].Used != 1 {
		t.Fatalf("after settling 300 down to 120: %+v", u)
	}
	e.Admit(&req, epoch+sec, &d)
	e.Settle(&req, epoch+2*sec, epoch+sec, 1100) // ran long: charged past the limit
	u = e.Usage(&req, epoch+2*sec, nil)
	if u[0].Used != 1000 || u[0].Remaining != 0 || u[1].Used != 2 {
		t.Fatalf("after settling 300 up to 1100: %+v", u)
	}
	if e.Check(&Request{Tenant: "ann", Cost: 0}, epoch+2*sec, &d); d.Allowed() {
		t.Fatal("a tenant over its limit after settling passes a check")
	}
}

func TestEngineRefundUndoesAnAdmission(t *testing.T) {
	e := mustEngine(t,
		Rule{Name: "daily", Scope: PerTenant, Algorithm: Quota{Limit: 2, Period: Daily}},
		Rule{Name: "running", Scope: PerTenant, Algorithm: Concurrency{Limit: 1}},
		Rule{Name: "bucket", Scope: PerTenant, Algorithm: GCRA{Rate: Rate{N: 1, Per: time.Hour}, Burst: 1}},
	)
	req := Request{Tenant: "ann", Cost: 1}
	var d Decision
	e.Admit(&req, epoch, &d)
	before := e.AppendSnapshot(nil)
	e.Admit(&req, epoch, &d)
	if d.Allowed() {
		t.Fatal("second request admitted while the first holds the cap")
	}
	e.Refund(&req, epoch+sec, epoch)
	for _, u := range e.Usage(&req, epoch+sec, nil) {
		if u.Used != 0 {
			t.Fatalf("after the refund %s still uses %d", u.Rule, u.Used)
		}
	}
	if e.Admit(&req, epoch+sec, &d); !d.Allowed() {
		t.Fatalf("after the refund: %v by %s", d.Verdict, d.Rule)
	}
	_ = before
}

func TestEngineReleaseFreesAConcurrencySlot(t *testing.T) {
	e := mustEngine(t,
		Rule{Name: "running", Scope: PerTenant, Algorithm: Concurrency{Limit: 2}},
		Rule{Name: "daily", Scope: PerTenant, Algorithm: Quota{Limit: 10, Period: Daily}},
	)
	req := Request{Tenant: "ann", Cost: 1}
	var d Decision
	for range 3 {
		e.Admit(&req, epoch, &d)
	}
	if d.Verdict != Rejected || d.Rule != "running" || d.RetryAt != 0 {
		t.Fatalf("third job: %v by %q retry %d, want rejected by running, retry unknown", d.Verdict, d.Rule, d.RetryAt)
	}
	e.Release(&req, epoch+sec)
	if e.Admit(&req, epoch+sec, &d); !d.Allowed() {
		t.Fatalf("after a release: %v", d.Verdict)
	}
	if u := e.Usage(&req, epoch+sec, nil); u[0].Used != 2 || u[1].Used != 3 {
		t.Fatalf("usage %+v, want running 2 and 3 counted today (a release is not a refund)", u)
	}
}

func TestEngineUsageReport(t *testing.T) {
	ny := mustZone("America/New_York")
	e := mustEngine(t,
		Rule{Name: "daily images", Match: Match{Model: "sdxl"}, Scope: PerTenant,
			Algorithm: Quota{Limit: 5, Period: Daily, Location: ny}},
		Rule{Name: "running", Scope: PerTenant, Algorithm: Concurrency{Limit: 5}},
		Rule{Name: "requests/min", Scope: PerTenant, Algorithm: FixedWindow{Limit: 10, Window: time.Minute}},
	)
	now := time.Date(2025, 3, 8, 16, 48, 0, 0, ny).UnixNano() // 7h12m before local midnight
	var d Decision
	for i := range 8 {
		req := Request{Tenant: "ann", Model: "llm", Cost: 1}
		if i < 3 {
			req.Model = "sdxl"
		}
		if e.Admit(&req, now, &d); !d.Allowed() {
			t.Fatalf("request %d: %v by %s", i, d.Verdict, d.Rule)
		}
		if i >= 2 {
			e.Release(&req, now) // six finished, two still running
		}
	}
	var lines []string
	for _, u := range e.Usage(&Request{Tenant: "ann", Model: "sdxl"}, now, nil) {
		line := fmt.Sprintf("%s %d/%d", u.Rule, u.Used, u.Limit)
		if u.ResetAt > now {
			line += fmt.Sprintf(" (resets in %v)", time.Duration(u.ResetAt-now))
		}
		lines = append(lines, line)
	}
	got := strings.Join(lines, "; ")
	want := "daily images 3/5 (resets in 7h12m0s); running 2/5; requests/min 8/10 (resets in 1m0s)"
	if got != want {
		t.Fatalf("usage:\n got %s\nwant %s", got, want)
	}
}

func TestEngineFullKeyTableSharesOverflowState(t *testing.T) {
	e := mustEngine(t, Rule{Name: "per-ip", Scope: PerClientIP, MaxKeys: 2,
		Algorithm: FixedWindow{Limit: 1, Window: time.Minute}})
	var d Decision
	admit := func(ip string, now int64) {
		e.Admit(&Request{ClientIP: ip, Cost: 1}, now, &d)
	}
	admit("a", epoch)
	admit("b", epoch)
	admit("c", epoch) // the table is full: c shares the overflow state, which is fresh
	if d.Verdict != Admitted || !d.Rules()[0].Overflow {
		t.Fatalf("c: %v overflow=%v, want admitted in the overflow state", d.Verdict, d.Rules()[0].Overflow)
	}
	admit("d", epoch) // limited together with c: never unlimited
	if d.Verdict != Rejected || !d.Rules()[0].Overflow {
		t.Fatalf("d: %v overflow=%v, want rejected in the overflow state", d.Verdict, d.Rules()[0].Overflow)
	}
	if e.Keys() != 2 {
		t.Fatalf("%d keys held, bound 2", e.Keys())
	}
	// A minute on, a and b are idle: a new key sweeps them and gets its own state.
	admit("e", epoch+int64(time.Minute))
	if d.Verdict != Admitted || d.Rules()[0].Overflow || e.Keys() != 1 {
		t.Fatalf("e: %v overflow=%v keys=%d, want its own state after a sweep", d.Verdict, d.Rules()[0].Overflow, e.Keys())
	}
}

func TestEngineFullConcurrencyTableRejectsNewKeys(t *testing.T) {
	e := mustEngine(t, Rule{Name: "running", Scope: PerTenant, MaxKeys: 1, Algorithm: Concurrency{Limit: 3}})
	var d Decision
	e.Admit(&Request{Tenant: "ann", Cost: 1}, epoch, &d)
	e.Admit(&Request{Tenant: "bob", Cost: 1}, epoch, &d)
	if d.Verdict != Rejected || !d.Rules()[0].Overflow {
		t.Fatalf("bob with the table full of running keys: %v", d.Verdict)
	}
	e.Release(&Request{Tenant: "ann", Cost: 1}, epoch)
	if e.Admit(&Request{Tenant: "bob", Cost: 1}, epoch, &d); d.Verdict != Admitted {
		t.Fatalf("bob after ann's release: %v", d.Verdict)
	}
}

func TestEngineSweepDropsIdleKeys(t *testing.T) {
	e := mustEngine(t,
		Rule{Name: "rpm", Scope: PerTenant, Algorithm: SlidingLog{Limit: 5, Window: time.Minute}},
		Rule{Name: "running", Scope: PerTenant, Algorithm: Concurrency{Limit: 5}},
	)
	var d Decision
	for _, tenant := range []string{"a", "b", "c"} {
		e.Admit(&Request{Tenant: tenant, Cost: 1}, epoch, &d)
	}
	e.Release(&Request{Tenant: "a", Cost: 1}, epoch)
	if n := e.Sweep(epoch + int64(time.Minute) - 1); n != 1 {
		t.Fatalf("swept %d before the window passed, want 1 (a's released slot)", n)
	}
	if n := e.Sweep(epoch + int64(time.Minute)); n != 3 || e.Keys() != 2 {
		t.Fatalf("swept %d, %d keys left; want 3 swept and b, c still running", n, e.Keys())
	}
}

func TestEngineSetRulesKeepsUnchangedRulesState(t *testing.T) {
	rpm := Rule{Name: "rpm", Scope: PerTenant, Algorithm: FixedWindow{Limit: 2, Window: time.Minute}}
	daily := Rule{Name: "daily", Scope: PerTenant, Algorithm: Quota{Limit: 2, Period: Daily}}
	e := mustEngine(t, rpm, daily)
	var d Decision
	req := Request{Tenant: "ann", Cost: 1}
	e.Admit(&req, epoch, &d)
	daily.Algorithm = Quota{Limit: 3, Period: Daily}
	if err := e.SetRules([]Rule{daily, rpm}); err != nil {
		t.Fatal(err)
	}
	u := e.Usage(&req, epoch, nil)
	if u[0].Rule != "daily" || u[0].Used != 0 || u[1].Rule != "rpm" || u[1].Used != 1 {
		t.Fatalf("after SetRules: %+v, want daily reset (changed) and rpm kept", u)
	}
}

func TestNewEngineNamesTheBadField(t *testing.T) {
	tb := TokenBucket{Rate: Rate{N: 1, Per: time.Second}, Burst: 1}
	tooMany := make([]Rule, MaxRulesPerRequest+1)
	for i := range tooMany {
		tooMany[i] = Rule{Name: fmt.Sprint(i), Algorithm: tb}
	}
	for _, tc := range []struct {
		rules []Rule
		want  string
	}{
		{[]Rule{{Algorithm: tb}}, "rules[0].name"},
		{[]Rule{{Name: "a", Algorithm: tb}, {Name: "a", Algorithm: tb}}, `rules[1].name: "a" is used twice`},
		{[]Rule{{Name: "a"}}, `rule "a": algorithm`},
		{[]Rule{{Name: "a", Algorithm: TokenBucket{Rate: Rate{N: 1, Per: time.Second}}}}, `rule "a": burst`},
		{[]Rule{{Name: "a", Algorithm: tb, Action: Delay}}, `rule "a": max_wait`},
		{[]Rule{{Name: "a", Algorithm: tb, Action: Degrade}}, `rule "a": fallback`},
		{[]Rule{{Name: "a", Algorithm: tb, Replaces: "b"}}, `rule "a": replaces`},
		{[]Rule{{Name: "a", Algorithm: tb, Match: Match{ClientIP: "10.0.0.0/33"}}}, `rule "a": match.client_ip`},
		{[]Rule{{Name: "a", Algorithm: tb, MaxKeys: -1}}, `rule "a": max_keys`},
		{tooMany, "rules: up to 17 rules"},
	} {
		_, err := NewEngine(tc.rules)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("error %v, want one starting %q", err, tc.want)
		}
	}
}

func TestEngineMatchesClientIPPrefixes(t *testing.T) {
	e := mustEngine(t, Rule{Name: "office", Match: Match{ClientIP: "10.0.0.0/8"}, Scope: PerClientIP,
		Algorithm: FixedWindow{Limit: 1, Window: time.Minute}})
	var d Decision
	for _, tc := range []struct {
		ip    string
		rules int
	}{{"10.1.2.3", 1}, {"::ffff:10.1.2.4", 1}, {"192.0.2.1", 0}, {"not an ip", 0}} {
		if e.Check(&Request{ClientIP: tc.ip, Cost: 1}, epoch, &d); len(d.Rules()) != tc.rules {
			t.Errorf("%s matched %d rules, want %d", tc.ip, len(d.Rules()), tc.rules)
		}
	}
}

// The decision path allocates nothing once a key exists.
func TestEngineDecisionAllocatesNothing(t *testing.T) {
	e := mustEngine(t,
		Rule{Name: "global", Algorithm: GCRA{Rate: Rate{N: 1000, Per: time.Second}, Burst: 100}},
		Rule{Name: "tier", Match: Match{Tier: "free"}, Scope: PerTenant, Algorithm: TokenBucket{Rate: Rate{N: 10, Per: time.Second}, Burst: 10}},
		Rule{Name: "carol", Replaces: "tier", Match: Match{Tenant: "carol"}, Scope: PerTenant, Algorithm: SlidingLog{Limit: 100, Window: time.Second}},
		Rule{Name: "ip", Match: Match{ClientIP: "10.0.0.0/8"}, Scope: PerClientIP, Algorithm: SlidingCounter{Limit: 100, Window: time.Minute}},
		Rule{Name: "daily", Scope: PerTenant, Algorithm: Quota{Limit: 1 << 40, Period: Daily, Location: mustZone("Europe/Paris")}},
		Rule{Name: "running", Scope: PerTenant, Algorithm: Concurrency{Limit: 1 << 40}},
		Rule{Name: "queue", Scope: PerModel, Algorithm: LeakyQueue{Rate: Rate{N: 1e6, Per: time.Second}, Capacity: 1e6}},
		Rule{Name: "window", Scope: PerMethod, Algorithm: FixedWindow{Limit: 1 << 40, Window: time.Second}},
	)
	req := Request{Tenant: "carol", Tier: "free", ClientIP: "10.1.1.1", Model: "sdxl", Method: "Submit", Cost: 1}
	var d Decision
	now := epoch
	e.Admit(&req, now, &d)
	if n := testing.AllocsPerRun(1000, func() {
		now += int64(time.Millisecond)
		e.Admit(&req, now, &d)
		e.Check(&req, now, &d)
	}); n != 0 {
		t.Fatalf("%v allocations per decision", n)
	}
	if len(d.Rules()) != 7 {
		t.Fatalf("%d rules matched, want 7", len(d.Rules()))
	}
}

func TestEngineRefusalReportsRemainingWithoutItsCharge(t *testing.T) {
	e := mustEngine(t,
		Rule{Name: "window", Scope: PerTenant, Algorithm: FixedWindow{Limit: 20, Window: time.Hour}},
		Rule{Name: "cap", Scope: PerTenant, Algorithm: Concurrency{Limit: 5}},
		Rule{Name: "strict", Scope: PerTenant, Algorithm: FixedWindow{Limit: 1, Window: time.Hour}})
	req := Request{Tenant: "ann", Cost: 1}
	var d Decision
	e.Admit(&req, epoch, &d)
	before := e.Usage(&req, epoch, nil)
	e.Admit(&req, epoch, &d)
	if d.Verdict != Rejected || d.Rule != "strict" {
		t.Fatalf("second hit: %v by %q, want rejected by strict", d.Verdict, d.Rule)
	}
	for i, r := range d.Rules()[:2] {
		if !r.Allowed || r.Remaining != before[i].Remaining {
			t.Fatalf("rule %s on a refusal reports remaining %d, want %d (nothing was charged)", r.Rule, r.Remaining, before[i].Remaining)
		}
	}
}
