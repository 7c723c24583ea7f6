package limiter

import (
	"math/big"
	"testing"
	"time"

	"pgregory.net/rapid"
)

func TestLeakyQueueServesNoFasterThanRate(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r, capacity := drawSmallRate(t)
		q := LeakyQueue{Rate: r, Capacity: capacity}
		var s LeakyQueueState
		type served struct{ now, at, cost int64 }
		var got []served
		now := epoch
		unit := capacity * int64(r.Per) / r.N
		for range rapid.IntRange(1, 80).Draw(t, "hits") {
			now += drawGap(t, unit)
			cost := rapid.Int64Range(0, capacity+1).Draw(t, "cost")
			if res := q.Admit(&s, now, cost); res.Allowed {
				if res.ServeAt < now {
					t.Fatalf("served at %d, before it arrived at %d", res.ServeAt, now)
				}
				got = append(got, served{now, res.ServeAt, cost})
			}
		}
		// Hits start in order, each at least cost×Per/N after the one before (up to the
		// nanosecond that ServeAt rounds up): the output never bursts.
		for i := range got {
			work := int64(0)
			for j := i + 1; j < len(got); j++ {
				work += got[j-1].cost * int64(r.Per)
				if (got[j].at-got[i].at+1)*r.N <= work {
					t.Fatalf("hits %d..%d start %dns apart but carry %d/%d ns of work", i, j, got[j].at-got[i].at, work, r.N)
				}
			}
		}
	})
}

// The queue in exact arithmetic: a hit is admitted iff the work ahead of it (rounded up to
// whole units) plus its cost fits Capacity, and starts when that work has drained.
func TestLeakyQueueHoldsAtMostCapacityAndNeverRefusesRoom(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r, capacity := drawBucket(t)
		q := LeakyQueue{Rate: r, Capacity: capacity}
		var s LeakyQueueState
		perUnit := big.NewRat(int64(r.Per), r.N) // nanoseconds per unit
		drain := new(big.Rat).SetInt64(epoch)
		now := epoch
		unit := min(mulAddCeilDiv(capacity, int64(r.Per), 0, r.N), 1e16)
		for i := range rapid.IntRange(1, 60).Draw(t, "hits") {
			now += drawGap(t, unit)
			cost := drawCost(t, capacity)
			nowR := new(big.Rat).SetInt64(now)
			if drain.Cmp(nowR) < 0 {
				drain.Set(nowR)
			}
			queued := new(big.Rat).Quo(new(big.Rat).Sub(drain, nowR), perUnit)
			held := ratCeil(queued)
			want := cost <= capacity-held
			res := q.Admit(&s, now, cost)
			if res.Allowed != want {
				t.Fatalf("hit %d: cost %d with %s units queued (capacity %d): allowed %v, want %v",
					i, cost, queued.FloatString(3), capacity, res.Allowed, want)
			}
			if want {
				if start := ratCeil(drain); res.ServeAt != start {
					t.Fatalf("hit %d: ServeAt %d, want %d", i, res.ServeAt, start)
				}
				drain.Add(drain, new(big.Rat).Mul(perUnit, new(big.Rat).SetInt64(cost)))
			}
		}
	})
}

func ratCeil(x *big.Rat) int64 {
	q, m := new(big.Int).DivMod(x.Num(), x.Denom(), new(big.Int))
	if m.Sign() != 0 {
		q.Add(q, big.NewInt(1))
	}
	return q.Int64()
}

func TestLeakyQueueSpacesABurstEvenly(t *testing.T) {
	q := LeakyQueue{Rate: Rate{N: 2, Per: time.Second}, Capacity: 3}
	var s LeakyQueueState
	want := []int64{0, 500, 1000} // ms after arrival
	for i, w := range want {
		r := q.Admit(&s, epoch, 1)
		if !r.Allowed || r.ServeAt != epoch+w*int64(time.Millisecond) {
			t.Fatalf("hit %d: %+v, want served at +%dms", i, r, w)
		}
	}
	if r := q.Admit(&s, epoch, 1); r.Allowed || r.RetryAt != epoch+int64(500*time.Millisecond) {
		t.Fatalf("4th hit into a full queue: %+v, want rejected until +500ms", r)
	}
}
