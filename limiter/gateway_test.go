package limiter

import (
	"testing"
	"time"

	"pgregory.net/rapid"
)

// AdmitNow decides as Admit does, except that what Admit would delay it refuses, charging
// nothing, with RetryAt the time Admit would have started it; what Admit refuses it refuses.
// CheckNow predicts AdmitNow.
func TestAdmitNowRefusesWhatAdmitWouldDelay(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 4).Draw(t, "rules")
		rules := make([]Rule, n)
		for i := range rules {
			rules[i] = drawRule(t, i)
			if _, ok := rules[i].Algorithm.(TokenBucket); ok && rapid.Bool().Draw(t, "delay") {
				rules[i].Action, rules[i].MaxWait = Delay, time.Duration(rapid.Int64Range(1, 20).Draw(t, "maxWait"))*time.Second
			}
		}
		e := mustEngine(t, rules...)
		now := epoch
		var now1, ad, c Decision
		for i := range rapid.IntRange(1, 60).Draw(t, "requests") {
			now += rapid.Int64Range(0, 2*sec).Draw(t, "gap")
			req := drawRequest(t)
			e.Sweep(now)
			state := e.AppendSnapshot(nil)
			other := mustEngine(t, rules...)
			if err := other.Restore(state); err != nil {
				t.Fatal(err)
			}
			other.Admit(&req, now, &ad)
			e.CheckNow(&req, now, &c)
			e.AdmitNow(&req, now, &now1)
			if c.Verdict != now1.Verdict || c.RetryAt != now1.RetryAt {
				t.Fatalf("request %d: CheckNow said %v retry %d, AdmitNow %v retry %d", i, c.Verdict, c.RetryAt, now1.Verdict, now1.RetryAt)
			}
			switch {
			case ad.Verdict == Delayed:
				if now1.Verdict != Rejected || now1.RetryAt != ad.At {
					t.Fatalf("request %d: Admit delayed to %d; AdmitNow said %v retry %d", i, ad.At, now1.Verdict, now1.RetryAt)
				}
				if got := e.AppendSnapshot(nil); string(got) != string(state) {
					t.Fatalf("request %d: AdmitNow charged a request it refused", i)
				}
			case !ad.Allowed():
				// Refused either way; a rule that would delay refuses too, so the retry
				// time may be later, and a refusal beside a degrade is no longer a degrade.
				if now1.Allowed() || (ad.RetryAt != 0 && now1.RetryAt != 0 && now1.RetryAt < ad.RetryAt) {
					t.Fatalf("request %d: Admit said %v retry %d, AdmitNow %v retry %d", i, ad.Verdict, ad.RetryAt, now1.Verdict, now1.RetryAt)
				}
				if string(e.AppendSnapshot(nil)) != string(other.AppendSnapshot(nil)) {
					t.Fatalf("request %d: both refused but left different states", i)
				}
			case ad.Verdict != now1.Verdict || ad.RetryAt != now1.RetryAt || ad.At != now1.At:
				t.Fatalf("request %d: Admit said %v at %d retry %d, AdmitNow %v at %d retry %d",
					i, ad.Verdict, ad.At, ad.RetryAt, now1.Verdict, now1.At, now1.RetryAt)
			default:
				if string(e.AppendSnapshot(nil)) != string(other.AppendSnapshot(nil)) {
					t.Fatalf("request %d: AdmitNow and Admit agreed but left different states", i)
				}
			}
		}
	})
}

func TestKeyMatchesExactlyAndScopesAState(t *testing.T) {
	e := mustEngine(t,
		Rule{Name: "images", Match: Match{Key: "generic_key=images"}, Scope: Global,
			Algorithm: FixedWindow{Limit: 1, Window: time.Minute}},
		Rule{Name: "per-key", Scope: PerKey, Algorithm: FixedWindow{Limit: 2, Window: time.Minute}},
	)
	var d Decision
	images := Request{Key: "generic_key=images", Cost: 1}
	e.Admit(&images, epoch, &d)
	if d.Verdict != Admitted || len(d.Rules()) != 2 {
		t.Fatalf("first images: %v with %d rules, want admitted by both", d.Verdict, len(d.Rules()))
	}
	e.Admit(&images, epoch, &d)
	if d.Verdict != Rejected || d.Rule != "images" {
		t.Fatalf("second images: %v by %q, want rejected by images", d.Verdict, d.Rule)
	}
	// A longer key is not the same key: "images" matches exactly.
	other := Request{Key: "generic_key=images,region=eu", Cost: 1}
	for i := range 2 {
		e.Admit(&other, epoch, &d)
		if d.Verdict != Admitted || len(d.Rules()) != 1 {
			t.Fatalf("other key, hit %d: %v with %d rules, want admitted by per-key alone", i, d.Verdict, len(d.Rules()))
		}
	}
	e.Admit(&other, epoch, &d)
	if d.Verdict != Rejected || d.Rule != "per-key" {
		t.Fatalf("other key, third hit: %v by %q, want rejected by per-key (its own state)", d.Verdict, d.Rule)
	}
}

func TestAdmitNowOnALeakyQueueAdmitsOnlyWhatStartsNow(t *testing.T) {
	e := mustEngine(t, Rule{Name: "smooth", Scope: Global, Algorithm: LeakyQueue{Rate: Rate{N: 1, Per: time.Second}, Capacity: 5}})
	var d Decision
	req := Request{Cost: 1}
	e.AdmitNow(&req, epoch, &d)
	if d.Verdict != Admitted || d.At != epoch {
		t.Fatalf("first: %v at %d, want admitted now", d.Verdict, d.At)
	}
	for i := range 3 {
		e.AdmitNow(&req, epoch, &d)
		if d.Verdict != Rejected || d.RetryAt != epoch+sec {
			t.Fatalf("hit %d: %v retry %d, want rejected until %d", i+2, d.Verdict, d.RetryAt, epoch+sec)
		}
		if r := d.Rules()[0]; r.Allowed || r.Remaining != 4 {
			t.Fatalf("hit %d: rule allowed %v remaining %d, want refused with 4 of 5 left", i+2, r.Allowed, r.Remaining)
		}
	}
	e.AdmitNow(&req, epoch+sec, &d)
	if d.Verdict != Admitted {
		t.Fatalf("a second later: %v, want admitted", d.Verdict)
	}
}

// A rule keyed on an attribute applies only to requests that have it: a
// gateway's descriptor without an IP does not share one state under "".
func TestScopedRuleSkipsRequestsWithoutItsAttribute(t *testing.T) {
	e := mustEngine(t, Rule{Name: "per-ip", Scope: PerClientIP, Algorithm: FixedWindow{Limit: 1, Window: time.Minute}})
	var d Decision
	for i := range 3 {
		e.Admit(&Request{Tenant: "ann", Cost: 1}, epoch, &d)
		if d.Verdict != Admitted || len(d.Rules()) != 0 {
			t.Fatalf("request %d without an IP: %v by %d rules, want admitted by none", i+1, d.Verdict, len(d.Rules()))
		}
	}
	e.Admit(&Request{ClientIP: "10.0.0.1", Cost: 1}, epoch, &d)
	e.Admit(&Request{ClientIP: "10.0.0.1", Cost: 1}, epoch, &d)
	if d.Verdict != Rejected {
		t.Fatalf("second request from 10.0.0.1: %v, want rejected", d.Verdict)
	}
}

// Freeze's encoding is AppendSnapshot's at the time of the freeze, however the Engine
// changes after it (a sliding log's ring included), and the same each time it runs.
func TestFreezeEncodesTheStateItWasTakenAt(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 5).Draw(t, "rules")
		rules := make([]Rule, n)
		for i := range rules {
			rules[i] = drawRule(t, i)
		}
		e := mustEngine(t, rules...)
		now := epoch
		var d Decision
		step := func() {
			now += rapid.Int64Range(0, 2*sec).Draw(t, "gap")
			req := drawRequest(t)
			e.Admit(&req, now, &d)
		}
		for range rapid.IntRange(0, 30).Draw(t, "before") {
			step()
		}
		want := e.AppendSnapshot(nil)
		frozen := e.Freeze()
		for range rapid.IntRange(1, 30).Draw(t, "after") {
			step()
		}
		e.Sweep(now + int64(time.Hour))
		for i := range 2 {
			if got := frozen(nil); string(got) != string(want) {
				t.Fatalf("encoding %d of the frozen state differs from the state at the freeze", i+1)
			}
		}
	})
}
