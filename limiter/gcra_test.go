package limiter

import (
	"testing"

	"pgregory.net/rapid"
)

func TestGCRANeverAdmitsMoreThanBurstPlusRate(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r, burst := drawSmallRate(t)
		g := GCRA{Rate: r, Burst: burst}
		var s GCRAState
		checkBurstPlusRate(t, r, burst, func(now, cost int64) Result { return g.Admit(&s, now, cost) })
	})
}

func TestGCRANeverRefusesAHitThatFits(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r, burst := drawBucket(t)
		g := GCRA{Rate: r, Burst: burst}
		var s GCRAState
		bucketOps(t, r, burst,
			func(now, cost int64) Result { return g.Admit(&s, now, cost) },
			func(now, cost int64) Result { return g.force(&s, now, cost).result(g.Burst, now) },
			func(now, cost int64) { g.refund(&s, now, now, cost) })
	})
}

// GCRA and the token bucket are the same limit in two representations: every field of every
// decision agrees, through forced charges (debt) and refunds.
func TestGCRADecidesExactlyLikeTokenBucket(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r, burst := drawBucket(t)
		tb, g := TokenBucket{Rate: r, Burst: burst}, GCRA{Rate: r, Burst: burst}
		var ts TokenBucketState
		var gs GCRAState
		unit := min(mulAddCeilDiv(burst, int64(r.Per), 0, r.N), 1e16)
		now := epoch
		for i := range rapid.IntRange(1, 60).Draw(t, "ops") {
			now += drawGap(t, unit)
			cost := drawCost(t, burst)
			var a, b Result
			switch rapid.IntRange(0, 9).Draw(t, "op") {
			case 0:
				a, b = tb.force(&ts, now, cost).result(burst, now), g.force(&gs, now, cost).result(burst, now)
				if tb.idleAt(ts) > 1<<62 {
					return // the debt outlasts int64 time: both saturate, differently
				}
			case 1:
				tb.refund(&ts, now, now, cost)
				g.refund(&gs, now, now, cost)
			case 2:
				a, b = tb.Check(&ts, now, cost), g.Check(&gs, now, cost)
			default:
				a, b = tb.Admit(&ts, now, cost), g.Admit(&gs, now, cost)
			}
			if a != b {
				t.Fatalf("op %d cost %d at +%d: token bucket %+v, gcra %+v", i, cost, now-epoch, a, b)
			}
			if ia, ib := tb.idleAt(ts), g.idleAt(gs); max(ia, now) != max(ib, now) {
				t.Fatalf("op %d: idle at %d and %d", i, ia, ib)
			}
		}
	})
}
