package limiter

import (
	"math"
	"math/bits"
)

// Exact rate arithmetic. Products such as cost × Per (tokens × nanoseconds) overflow an int64
// for ordinary limits (ten million tokens per hour is 3.6e19), so they are formed in 128 bits
// and divided back. All operands are non-negative; quotients saturate at MaxInt64.

// mulAddDivMod returns floor((a*b+c)/d) and the remainder; ok is false when the quotient
// does not fit an int64.
func mulAddDivMod(a, b, c, d int64) (q, r int64, ok bool) {
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	var carry uint64
	lo, carry = bits.Add64(lo, uint64(c), 0)
	hi += carry
	if hi >= uint64(d) {
		return 0, 0, false
	}
	uq, ur := bits.Div64(hi, lo, uint64(d))
	if uq > math.MaxInt64 {
		return 0, 0, false
	}
	return int64(uq), int64(ur), true
}

// mulAddCeilDiv returns ceil((a*b+c)/d), saturating at MaxInt64.
func mulAddCeilDiv(a, b, c, d int64) int64 {
	q, r, ok := mulAddDivMod(a, b, c, d)
	if !ok || (r != 0 && q == math.MaxInt64) {
		return math.MaxInt64
	}
	if r != 0 {
		q++
	}
	return q
}

// mulSubDivMod returns floor((a*b-c)/d) and the remainder, for a*b ≥ c; ok is false when the
// quotient does not fit an int64.
func mulSubDivMod(a, b, c, d int64) (q, r int64, ok bool) {
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	var borrow uint64
	lo, borrow = bits.Sub64(lo, uint64(c), 0)
	hi -= borrow
	if hi >= uint64(d) {
		return 0, 0, false
	}
	uq, ur := bits.Div64(hi, lo, uint64(d))
	if uq > math.MaxInt64 {
		return 0, 0, false
	}
	return int64(uq), int64(ur), true
}

// mulSubCeilDiv returns ceil((a*b-c)/d) for a*b ≥ c, saturating at MaxInt64.
func mulSubCeilDiv(a, b, c, d int64) int64 {
	q, r, ok := mulSubDivMod(a, b, c, d)
	if !ok || (r != 0 && q == math.MaxInt64) {
		return math.MaxInt64
	}
	if r != 0 {
		q++
	}
	return q
}

// addSat returns a+b for b ≥ 0, saturating at MaxInt64.
func addSat(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// floorDiv returns floor(a/b) for b > 0, also for negative a.
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// clampCost treats a negative cost as 0 and caps a huge one at maxAmount (which no limit
// admits), so that sums of costs and counts never overflow.
func clampCost(c int64) int64 {
	return min(max(c, 0), maxAmount)
}

// mulGE reports whether a*b ≥ c, for non-negative operands.
func mulGE(a, b, c int64) bool {
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	return hi > 0 || lo >= uint64(c)
}

// mulAddGEMul reports whether a*b+c ≥ x*y, for non-negative operands: what
// mulAddDivMod(a, b, c, y) ≥ x says, without a division.
func mulAddGEMul(a, b, c, x, y int64) bool {
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	var carry uint64
	lo, carry = bits.Add64(lo, uint64(c), 0)
	hi += carry
	xhi, xlo := bits.Mul64(uint64(x), uint64(y))
	return hi > xhi || hi == xhi && lo >= xlo
}

// capAmount keeps debts and counts below maxAmount so later sums cannot overflow.
func capAmount(v int64) int64 {
	return min(v, maxAmount)
}

// mulDivFloor returns floor(a*b/d), saturating at MaxInt64.
func mulDivFloor(a, b, d int64) int64 {
	q, _, ok := mulAddDivMod(a, b, 0, d)
	if !ok {
		return math.MaxInt64
	}
	return q
}
