package limiter

import (
	"fmt"
	"math"
)

// TokenBucket admits a hit when its cost fits the tokens in a bucket of Burst tokens that
// refills at Rate: in any interval of length Δt it admits at most Burst + Rate×Δt units, and it
// admits every hit whose cost is at most the tokens available.
type TokenBucket struct {
	Rate  Rate
	Burst int64
}

// TokenBucketState is one key's bucket; the zero value is a full bucket.
type TokenBucketState struct {
	// Taken is the whole tokens taken and not yet refilled; above Burst it is debt.
	Taken int64
	// Credit is the refill toward the next token, in 1/Per of a token (0 ≤ Credit < Per,
	// 0 when Taken is 0).
	Credit int64
	// Last is when the bucket was last refilled.
	Last int64
}

// Validate reports the first bad parameter.
func (tb TokenBucket) Validate() error {
	return validateRefill("burst", tb.Rate, tb.Burst)
}

// Admit takes cost tokens if they are there; a rejected hit takes nothing.
func (tb TokenBucket) Admit(s *TokenBucketState, now, cost int64) Result {
	return tb.admit(s, now, cost).result(tb.Burst, now)
}

// Check decides like Admit without taking anything.
func (tb TokenBucket) Check(s *TokenBucketState, now, cost int64) Result {
	res, _ := tb.eval(*s, now, cost)
	return res.result(tb.Burst, now)
}

// refill returns s with the tokens dripped in up to now; time going backwards refills nothing.
func (tb TokenBucket) refill(s TokenBucketState, now int64) TokenBucketState {
	if s.Taken <= 0 {
		return TokenBucketState{Last: max(s.Last, now)}
	}
	if now <= s.Last {
		return s
	}
	// A bucket with the time to refill completely (a key hit less often than its rate, as
	// most keys of a large table are) is refilled without a division.
	if mulAddGEMul(now-s.Last, tb.Rate.N, s.Credit, s.Taken, int64(tb.Rate.Per)) {
		return TokenBucketState{Last: now}
	}
	q, r, ok := mulAddDivMod(now-s.Last, tb.Rate.N, s.Credit, int64(tb.Rate.Per))
	if !ok || q >= s.Taken {
		return TokenBucketState{Last: now}
	}
	return TokenBucketState{Taken: s.Taken - q, Credit: r, Last: now}
}

// dripTime is how long after s.Last until n more whole tokens have dripped in.
func (tb TokenBucket) dripTime(s TokenBucketState, n int64) int64 {
	if n <= 0 {
		return 0
	}
	return mulSubCeilDiv(n, int64(tb.Rate.Per), s.Credit, tb.Rate.N)
}

// eval decides a hit on s (refilled to now) and returns the state after admitting it.
func (tb TokenBucket) eval(s TokenBucketState, now, cost int64) (verdict, TokenBucketState) {
	cost = clampCost(cost)
	s = tb.refill(s, now)
	var res verdict
	switch {
	case cost <= tb.Burst-s.Taken:
		s.Taken += cost
		res.allowed, res.at = true, now
	case cost > tb.Burst:
		res.at = Never
	default:
		res.at = addSat(now, tb.dripTime(s, s.Taken+cost-tb.Burst))
	}
	res.remaining = max(0, tb.Burst-s.Taken)
	res.resetAt = addSat(now, tb.dripTime(s, s.Taken))
	return res, s
}

func (tb TokenBucket) commit(s *TokenBucketState, next TokenBucketState, _, _ int64) { *s = next }

func (tb TokenBucket) admit(s *TokenBucketState, now, cost int64) verdict {
	res, next := tb.eval(*s, now, cost)
	if res.allowed && cost > 0 {
		*s = next
	}
	return res
}

// force takes cost tokens even into debt: the hit is charged as of the time the tokens will
// be there, like x/time/rate's Reserve.
func (tb TokenBucket) force(s *TokenBucketState, now, cost int64) verdict {
	next := tb.refill(*s, now)
	next.Taken = capAmount(next.Taken + clampCost(cost))
	*s = next
	res, _ := tb.eval(next, now, 0)
	res.allowed, res.at = true, now
	return res
}

// refund puts cost tokens back, up to a full bucket.
func (tb TokenBucket) refund(s *TokenBucketState, now, _, cost int64) {
	next := tb.refill(*s, now)
	cost = clampCost(cost)
	if next.Taken-cost <= 0 {
		next = TokenBucketState{Last: next.Last}
	} else {
		next.Taken -= cost
	}
	*s = next
}

func (tb TokenBucket) idleAt(s TokenBucketState) int64 {
	if s.Taken <= 0 {
		return math.MinInt64
	}
	return addSat(s.Last, tb.dripTime(s, s.Taken))
}

func (tb TokenBucket) appendState(b []byte, s TokenBucketState) []byte {
	return appendInts(b, s.Taken, s.Credit, s.Last)
}

func (tb TokenBucket) readState(d *decoder, s *TokenBucketState) {
	*s = TokenBucketState{Taken: d.int(), Credit: d.int(), Last: d.int()}
	d.check(s.Taken >= 0 && s.Taken <= maxAmount, "token bucket: taken %d out of range", s.Taken)
	d.check(s.Credit >= 0 && s.Credit < int64(tb.Rate.Per) && (s.Taken > 0 || s.Credit == 0),
		"token bucket: credit %d out of range", s.Credit)
}

func (tb TokenBucket) appendParams(b []byte) []byte {
	return appendInts(append(b, tagTokenBucket), tb.Rate.N, int64(tb.Rate.Per), tb.Burst)
}

func (tb TokenBucket) newTable(maxKeys int) table {
	return newKeyed[TokenBucketState](tb, maxKeys, true, true)
}

// AppendBinary appends the state's deterministic encoding to b.
func (s TokenBucketState) AppendBinary(b []byte) ([]byte, error) {
	return appendInts(append(b, tagTokenBucket), s.Taken, s.Credit, s.Last), nil
}

// UnmarshalBinary decodes what AppendBinary wrote.
func (s *TokenBucketState) UnmarshalBinary(data []byte) error {
	d := decoder{b: data}
	d.tag(tagTokenBucket)
	v := TokenBucketState{Taken: d.int(), Credit: d.int(), Last: d.int()}
	d.check(v.Taken >= 0 && v.Credit >= 0, "token bucket: negative field")
	if err := d.finish(); err != nil {
		return fmt.Errorf("token bucket state: %w", err)
	}
	*s = v
	return nil
}

func (tb TokenBucket) limit() int64 { return tb.Burst }
