package limiter

import (
	"math/big"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// admission is a hit that was let through.
type admission struct{ at, cost int64 }

// drawSmallRate draws a rate whose products stay well inside an int64, for tests that check
// bounds in plain integer arithmetic.
func drawSmallRate(t *rapid.T) (Rate, int64) {
	r := Rate{N: rapid.Int64Range(1, 20).Draw(t, "n"), Per: time.Duration(rapid.Int64Range(1, 1e6).Draw(t, "per"))}
	return r, rapid.Int64Range(1, 12).Draw(t, "burst")
}

// checkBurstPlusRate drives admit with random hits and checks that for every interval [a, b]
// the units admitted are at most burst + ⌊(b−a)×N/Per⌋.
func checkBurstPlusRate(t *rapid.T, r Rate, burst int64, admit func(now, cost int64) Result) {
	unit := burst * int64(r.Per) / r.N
	now := epoch
	var got []admission
	for range rapid.IntRange(1, 80).Draw(t, "hits") {
		now += drawGap(t, unit)
		cost := rapid.Int64Range(0, burst+1).Draw(t, "cost")
		if res := admit(now, cost); res.Allowed && cost > 0 {
			got = append(got, admission{now, cost})
		}
	}
	for i := range got {
		sum := int64(0)
		for j := i; j < len(got); j++ {
			sum += got[j].cost
			bound := burst + (got[j].at-got[i].at)*r.N/int64(r.Per)
			if sum > bound {
				t.Fatalf("admitted %d units in [%d, %d], bound %d", sum, got[i].at, got[j].at, bound)
			}
		}
	}
}

func TestTokenBucketNeverAdmitsMoreThanBurstPlusRate(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r, burst := drawSmallRate(t)
		tb := TokenBucket{Rate: r, Burst: burst}
		var s TokenBucketState
		checkBurstPlusRate(t, r, burst, func(now, cost int64) Result { return tb.Admit(&s, now, cost) })
	})
}

// bucketModel is the token bucket in exact rational arithmetic: the specification the int64
// fixed-point implementations must match decision for decision.
type bucketModel struct {
	rate   *big.Rat // tokens per nanosecond
	burst  *big.Rat
	tokens *big.Rat
	last   int64
}

func newBucketModel(r Rate, burst int64, now int64) *bucketModel {
	return &bucketModel{rate: big.NewRat(r.N, int64(r.Per)), burst: new(big.Rat).SetInt64(burst),
		tokens: new(big.Rat).SetInt64(burst), last: now}
}

func (m *bucketModel) refill(now int64) {
	if now > m.last {
		m.tokens.Add(m.tokens, new(big.Rat).Mul(m.rate, new(big.Rat).SetInt64(now-m.last)))
		if m.tokens.Cmp(m.burst) > 0 {
			m.tokens.Set(m.burst)
		}
		m.last = now
	}
}

func ratFloor(x *big.Rat) int64 {
	q := new(big.Int).Div(x.Num(), x.Denom()) // Euclidean: floor for a positive denominator
	return q.Int64()
}

// fits reports whether cost fits now, and the remaining tokens (floor) if it were taken.
func (m *bucketModel) fits(cost int64) bool {
	return new(big.Rat).SetInt64(cost).Cmp(m.tokens) <= 0
}

func (m *bucketModel) take(cost int64) { m.tokens.Sub(m.tokens, new(big.Rat).SetInt64(cost)) }

func (m *bucketModel) give(cost int64) {
	m.tokens.Add(m.tokens, new(big.Rat).SetInt64(cost))
	if m.tokens.Cmp(m.burst) > 0 {
		m.tokens.Set(m.burst)
	}
}

// bucketOps is the exact-model test shared by TokenBucket and GCRA: random admits, checks,
// forced charges and refunds, each compared with the model.
func bucketOps(t *rapid.T, r Rate, burst int64, admit, force func(now, cost int64) Result, refund func(now, cost int64)) {
	now := epoch
	m := newBucketModel(r, burst, now)
	unit := min(mulAddCeilDiv(burst, int64(r.Per), 0, r.N), 1e16)
	for i := range rapid.IntRange(1, 60).Draw(t, "ops") {
		now += drawGap(t, unit)
		cost := drawCost(t, burst)
		m.refill(now)
		switch rapid.IntRange(0, 9).Draw(t, "op") {
		case 0:
			force(now, cost)
			m.take(cost)
			if debtBeyond2262(m) {
				return // the int64 representations saturate; so would real time
			}
			continue
		case 1:
			refund(now, cost)
			m.give(cost)
			continue
		}
		res := admit(now, cost)
		want := m.fits(cost)
		if want {
			m.take(cost)
		}
		if res.Allowed != want {
			t.Fatalf("op %d: cost %d with %v tokens: allowed %v, want %v", i, cost, m.tokens.FloatString(3), res.Allowed, want)
		}
		if rem := max(0, ratFloor(m.tokens)); res.Remaining != rem {
			t.Fatalf("op %d: remaining %d, want %d", i, res.Remaining, rem)
		}
	}
}

// debtBeyond2262 reports whether the bucket is so deep in debt that it would refill only
// after an int64 of nanoseconds ends.
func debtBeyond2262(m *bucketModel) bool {
	deficit := new(big.Rat).Sub(m.burst, m.tokens)
	refill := new(big.Rat).Quo(deficit, m.rate)
	return refill.Cmp(new(big.Rat).SetInt64(1<<62-epoch)) > 0
}

func TestTokenBucketNeverRefusesAHitThatFits(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r, burst := drawBucket(t)
		tb := TokenBucket{Rate: r, Burst: burst}
		var s TokenBucketState
		bucketOps(t, r, burst,
			func(now, cost int64) Result { return tb.Admit(&s, now, cost) },
			func(now, cost int64) Result { return tb.force(&s, now, cost).result(tb.Burst, now) },
			func(now, cost int64) { tb.refund(&s, now, now, cost) })
	})
}

// A bucket whose products overflow 64 bits: 10M tokens per hour.
func TestTokenBucketIsExactBeyondSixtyFourBits(t *testing.T) {
	tb := TokenBucket{Rate: Rate{N: 10_000_000, Per: time.Hour}, Burst: 10_000_000}
	var s TokenBucketState
	if r := tb.Admit(&s, epoch, 10_000_000); !r.Allowed || r.Remaining != 0 || r.ResetAt != epoch+int64(time.Hour) {
		t.Fatalf("draining a full bucket: %+v", r)
	}
	// 2778 tokens drip in per second: 1s later 2777.77… are there.
	r := tb.Check(&s, epoch+int64(time.Second), 2778)
	if r.Allowed || r.Remaining != 2777 {
		t.Fatalf("after 1s: %+v, want 2777 remaining and 2778 refused", r)
	}
	// 2778 tokens take 1.00008 s: 1_000_080 µs exactly.
	if want := epoch + 1_000_080_000; r.RetryAt != want {
		t.Fatalf("RetryAt %d, want %d", r.RetryAt, want)
	}
}

func TestTokenBucketRejectedHitsNeverDelayRefill(t *testing.T) {
	tb := TokenBucket{Rate: Rate{N: 1, Per: time.Second}, Burst: 1}
	var s TokenBucketState
	tb.Admit(&s, epoch, 1)
	for i := range int64(10) {
		if tb.Admit(&s, epoch+i*int64(time.Millisecond*99), 1).Allowed {
			t.Fatal("admitted before the token dripped in")
		}
	}
	if !tb.Admit(&s, epoch+int64(time.Second), 1).Allowed {
		t.Fatal("refused once the token is back")
	}
}
