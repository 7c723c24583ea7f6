package limiter

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// Properties with inputs at the edges the other tests keep away from: clocks
// that go backwards, costs that are negative or above the clamp, limits of
// zero, negative and past the largest amount.

// drawEdgeCost draws a cost from anywhere in int64: mostly the usual small
// ones, else negative, or at and above the clamp.
func drawEdgeCost(t *rapid.T, limit int64) int64 {
	switch rapid.IntRange(0, 5).Draw(t, "edgeCostKind") {
	case 0:
		return rapid.SampledFrom([]int64{-1, math.MinInt64, -limit}).Draw(t, "negativeCost")
	case 1:
		return rapid.SampledFrom([]int64{maxAmount, maxAmount + 1, math.MaxInt64, math.MaxInt64 - 1}).Draw(t, "hugeCost")
	case 2:
		return rapid.Int64Range(math.MinInt64, math.MaxInt64).Draw(t, "anyCost")
	}
	return drawCost(t, limit)
}

// drawEdgeGap is drawGap that also goes backwards: a node's clock can step
// back, and a library caller can pass any time.
func drawEdgeGap(t *rapid.T, unit int64) int64 {
	if rapid.IntRange(0, 3).Draw(t, "backwards") == 0 {
		return -rapid.Int64Range(1, max(1, min(unit, 1e17))*2).Draw(t, "backGap")
	}
	return drawGap(t, unit)
}

// A cost counts as if clamped into [0, maxAmount]: a negative cost is free
// and never a credit, a huge one is the most a rule can count, and neither
// overflows anything.
func TestCostsOutsideTheClampCountAsClamped(t *testing.T) {
	forEachAlgorithm(t, func(t *rapid.T, sc scenario) {
		raw, clamped := sc.alg.newTable(4), sc.alg.newTable(4)
		now, last := epoch, epoch
		for i := range rapid.IntRange(1, 60).Draw(t, "steps") {
			now += drawGap(t, sc.unit)
			cost := drawEdgeCost(t, sc.limit)
			c := clampCost(cost)
			switch rapid.IntRange(0, 9).Draw(t, "op") {
			case 0:
				raw.charge(hashed("k"), now, cost)
				clamped.charge(hashed("k"), now, c)
			case 1:
				raw.refund(hashed("k"), now, last, cost)
				clamped.refund(hashed("k"), now, last, c)
			default:
				ra, rc := raw.admit(hashed("k"), now, cost), clamped.admit(hashed("k"), now, c)
				if ra != rc {
					t.Fatalf("step %d: cost %d at %d decides %+v, its clamp %d %+v", i, cost, now, ra, c, rc)
				}
				if ra.allowed && c > 0 {
					last = now
				}
				if res := ra.result(raw.limit(), now); res.Remaining < 0 || res.Remaining > res.Limit {
					t.Fatalf("step %d: remaining %d of %d", i, res.Remaining, res.Limit)
				}
			}
			if !bytes.Equal(snapshotOf(raw), snapshotOf(clamped)) {
				t.Fatalf("step %d: cost %d left another state than its clamp %d", i, cost, c)
			}
		}
		mustRestore(t, sc, raw)
	})
}

// mustRestore checks that a table's snapshot is one a replica accepts: every
// state stays in the ranges restore checks.
func mustRestore(t *rapid.T, sc scenario, tb table) {
	b := sc.alg.newTable(4)
	d := decoder{b: snapshotOf(tb)}
	b.restore(&d)
	if err := d.finish(); err != nil {
		t.Fatalf("the state does not restore: %v", err)
	}
}

// With a clock that goes backwards and costs from all of int64, every
// decision stays in range, a refused hit changes nothing, and the state stays
// one that restores. Going back in time never makes a key look emptier than
// it was: what it refuses at a later time, it refuses at an earlier one too.
func TestClockGoingBackwards(t *testing.T) {
	forEachAlgorithm(t, func(t *rapid.T, sc scenario) {
		tb := sc.alg.newTable(4)
		now, latest, last := epoch, epoch, epoch
		for i := range rapid.IntRange(1, 60).Draw(t, "steps") {
			now += drawEdgeGap(t, sc.unit)
			latest = max(latest, now)
			cost := drawEdgeCost(t, sc.limit)
			if now < latest {
				// A cost refused at the latest time the key has seen is
				// refused now, before it.
				if later, back := check(tb, "k", latest, cost), check(tb, "k", now, cost); back.Allowed && !later.Allowed {
					t.Fatalf("step %d: cost %d refused at %d (%+v) but allowed %v earlier (%+v)", i, cost, latest, later, time.Duration(latest-now), back)
				}
			}
			before := snapshotOf(tb)
			switch rapid.IntRange(0, 9).Draw(t, "op") {
			case 0:
				tb.charge(hashed("k"), now, cost)
			case 1:
				tb.refund(hashed("k"), now, last, cost)
			default:
				res := tb.admit(hashed("k"), now, cost)
				r := res.result(tb.limit(), now)
				switch {
				case r.Remaining < 0 || r.Remaining > r.Limit || r.Limit != sc.limit:
					t.Fatalf("step %d at %d: remaining %d of %d, limit %d", i, now, r.Remaining, r.Limit, sc.limit)
				case !r.Allowed && !bytes.Equal(before, snapshotOf(tb)):
					t.Fatalf("step %d: a refused hit of cost %d at %d changed the state", i, cost, now)
				case !r.Allowed && r.RetryAt != Never && r.RetryAt != 0 && r.RetryAt <= now:
					t.Fatalf("step %d: refused at %d with RetryAt %d, not after now", i, now, r.RetryAt)
				}
				if r.Allowed && clampCost(cost) > 0 {
					last = now
				}
			}
			mustRestore(t, sc, tb)
		}
	})
}

// A limit of zero, a negative one or one past the largest amount is refused
// by Validate with the field's name, and by NewEngine with the rule's.
func TestLimitsOutOfRangeAreRefused(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		bad := rapid.SampledFrom([]int64{0, -1, math.MinInt64, maxAmount + 1, math.MaxInt64}).Draw(t, "bad")
		ok := rapid.Int64Range(1, 1000).Draw(t, "ok")
		rate := Rate{N: ok, Per: time.Second}
		tc := rapid.SampledFrom([]struct {
			alg   Algorithm
			field string
		}{
			{TokenBucket{Rate: rate, Burst: bad}, "burst"},
			{TokenBucket{Rate: Rate{N: bad, Per: time.Second}, Burst: ok}, "rate.n"},
			{GCRA{Rate: rate, Burst: bad}, "burst"},
			{LeakyQueue{Rate: rate, Capacity: bad}, "capacity"},
			{FixedWindow{Limit: bad, Window: time.Second}, "limit"},
			{SlidingLog{Limit: bad, Window: time.Second}, "limit"},
			{SlidingCounter{Limit: bad, Window: time.Second}, "limit"},
			{Concurrency{Limit: bad}, "limit"},
			{Quota{Limit: bad, Period: Daily}, "limit"},
		}).Draw(t, "alg")
		alg := tc.alg
		if err := alg.Validate(); err == nil || !strings.HasPrefix(err.Error(), tc.field+":") {
			t.Fatalf("%T%+v: %v, want an error naming %s", alg, alg, err, tc.field)
		}
		if _, err := NewEngine([]Rule{{Name: "r", Algorithm: alg}}); err == nil || !strings.Contains(err.Error(), `"r"`) {
			t.Fatalf("NewEngine with %T%+v: %v, want an error naming the rule", alg, alg, err)
		}
	})
}
