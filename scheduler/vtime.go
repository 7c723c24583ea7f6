package scheduler

// vtime is a virtual time q + r/d held exactly. Tags advance by cost/weight
// on every dispatch; rounding each step would let the error grow with the
// number of dispatches and void the fairness bound, so the fraction is
// carried instead. Invariant: d >= 1 and 0 <= r < d. Weights are int32, so
// r*d' < 2^62 and cross-multiplied comparisons never overflow.
type vtime struct {
	q    int64
	r, d int64
}

// vzero is virtual time zero.
var vzero = vtime{d: 1}

func (a vtime) norm() vtime {
	if a.d < 1 {
		return vtime{q: a.q, d: 1}
	}
	return a
}

// cmp orders virtual times exactly.
func (a vtime) cmp(b vtime) int {
	if a.q != b.q {
		if a.q < b.q {
			return -1
		}
		return 1
	}
	x, y := a.r*b.norm().d, b.r*a.norm().d
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

func (a vtime) less(b vtime) bool { return a.cmp(b) < 0 }

func vmax(a, b vtime) vtime {
	if a.less(b) {
		return b
	}
	return a
}

// over expresses a with denominator w, rounding up: a tag moved to a new
// denominator is never earlier than it was, so no flow gains by it.
func (a vtime) over(w int64) vtime {
	a = a.norm()
	if a.d == w {
		return a
	}
	if a.r == 0 {
		return vtime{q: a.q, d: w}
	}
	r := (a.r*w + a.d - 1) / a.d
	if r >= w {
		return vtime{q: a.q + 1, d: w}
	}
	return vtime{q: a.q, r: r, d: w}
}

// plus returns a + c/w exactly, over denominator w.
func (a vtime) plus(c, w int64) vtime {
	a = a.over(w)
	t := a.r + c
	return vtime{q: a.q + t/w, r: t % w, d: w}
}

// frac is the fraction r/d in units of 2^-32, for keys that only need order.
func (a vtime) frac() uint32 {
	a = a.norm()
	return uint32((uint64(a.r) << 32) / uint64(a.d))
}

// enter is the tag of a flow (or tier) that becomes backlogged under
// virtual time v: no earlier than its own tag (it keeps what it was
// charged) and no earlier than v (it banks no credit for idle time), in its
// own denominator w. Rounding v up here, by less than 1/w, keeps the SFQ
// invariant v ≤ tag ≤ v + C/w for every job cost C ≥ 1.
func enter(tag, v vtime, w int64) vtime { return vmax(tag, v.over(w)) }

// serve charges one dispatch of cost c to the flow (or tier) with *tag of
// weight w under virtual time *v: the job starts at max(tag, v), the
// virtual time becomes that start, and the tag moves c/w past it.
func serve(tag, v *vtime, c, w int64) {
	st := vmax(*tag, *v)
	if v.less(st) {
		*v = st
	}
	*tag = st.plus(c, w)
}
