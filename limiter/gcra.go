package limiter

import (
	"fmt"
	"math"
)

// GCRA (the generic cell rate algorithm: a leaky bucket used as a meter, whose theoretical
// arrival time advances by cost/Rate per admitted hit) admits at most Burst + Rate×Δt units in
// any interval of length Δt and every hit that fits, deciding exactly as a TokenBucket with the
// same Rate and Burst does.
type GCRA struct {
	Rate  Rate
	Burst int64
}

// GCRAState is one key's theoretical arrival time; the zero value is a fresh key.
type GCRAState struct {
	// TAT is the theoretical arrival time: from TAT on the key is back to a full burst.
	TAT int64
	// Frac is TAT's fraction of a nanosecond, in 1/Rate.N (0 ≤ Frac < N).
	Frac int64
}

// Validate reports the first bad parameter.
func (g GCRA) Validate() error {
	return validateRefill("burst", g.Rate, g.Burst)
}

// Admit charges cost if it fits; a rejected hit changes nothing.
func (g GCRA) Admit(s *GCRAState, now, cost int64) Result {
	return g.admit(s, now, cost).result(g.Burst, now)
}

// Check decides like Admit without charging.
func (g GCRA) Check(s *GCRAState, now, cost int64) Result {
	res, _ := g.eval(*s, now, cost)
	return res.result(g.Burst, now)
}

func (g GCRA) meter() meter { return meter{n: g.Rate.N, per: int64(g.Rate.Per), capacity: g.Burst} }

func (g GCRA) eval(s GCRAState, now, cost int64) (verdict, GCRAState) {
	res, next := g.meter().eval(meterState{s.TAT, s.Frac}, now, cost, false)
	return res, GCRAState{next.tat, next.frac}
}

func (g GCRA) commit(s *GCRAState, next GCRAState, _, _ int64) { *s = next }

func (g GCRA) admit(s *GCRAState, now, cost int64) verdict {
	res, next := g.eval(*s, now, cost)
	if res.allowed && cost > 0 {
		*s = next
	}
	return res
}

// force advances the arrival time even past the burst: the hit is charged as of the time it
// conforms.
func (g GCRA) force(s *GCRAState, now, cost int64) verdict {
	m := g.meter()
	s.TAT, s.Frac = m.charge(s.TAT, s.Frac, now, cost)
	res, _ := m.eval(meterState{s.TAT, s.Frac}, now, 0, false)
	res.allowed, res.at = true, now
	return res
}

func (g GCRA) refund(s *GCRAState, now, _, cost int64) {
	s.TAT, s.Frac = g.meter().refund(s.TAT, s.Frac, now, cost)
}

func (g GCRA) idleAt(s GCRAState) int64 { return ceilTime(s.TAT, s.Frac) }

func (g GCRA) appendState(b []byte, s GCRAState) []byte { return appendInts(b, s.TAT, s.Frac) }

func (g GCRA) readState(d *decoder, s *GCRAState) {
	*s = GCRAState{TAT: d.int(), Frac: d.int()}
	d.check(s.Frac >= 0 && s.Frac < g.Rate.N, "gcra: frac %d out of range", s.Frac)
}

func (g GCRA) appendParams(b []byte) []byte {
	return appendInts(append(b, tagGCRA), g.Rate.N, int64(g.Rate.Per), g.Burst)
}

func (g GCRA) newTable(maxKeys int) table { return newKeyed[GCRAState](g, maxKeys, true, true) }

// AppendBinary appends the state's deterministic encoding to b.
func (s GCRAState) AppendBinary(b []byte) ([]byte, error) {
	return appendInts(append(b, tagGCRA), s.TAT, s.Frac), nil
}

// UnmarshalBinary decodes what AppendBinary wrote.
func (s *GCRAState) UnmarshalBinary(data []byte) error {
	d := decoder{b: data}
	d.tag(tagGCRA)
	v := GCRAState{TAT: d.int(), Frac: d.int()}
	d.check(v.Frac >= 0, "gcra: negative frac")
	if err := d.finish(); err != nil {
		return fmt.Errorf("gcra state: %w", err)
	}
	*s = v
	return nil
}

// meter is the arithmetic GCRA and LeakyQueue share: a time (tat + frac/n nanoseconds) that
// each unit of cost pushes per/n nanoseconds later, against a capacity in units.
type meter struct {
	n, per, capacity int64
}

// base returns max(tat, now) and the units still held at now, rounded up.
func (m meter) base(tat, frac, now int64) (bt, bf, used int64) {
	if tat < now || (tat == now && frac == 0) {
		return now, 0, 0
	}
	return tat, frac, mulAddCeilDiv(tat-now, m.n, frac, m.per)
}

// advance returns (tat, frac) pushed later by cost×per/n.
func (m meter) advance(tat, frac, cost int64) (int64, int64) {
	q, r, ok := mulAddDivMod(cost, m.per, frac, m.n)
	if !ok {
		return math.MaxInt64, 0
	}
	return addSat(tat, q), r
}

// meterState is the state GCRAState and LeakyQueueState share.
type meterState struct{ tat, frac int64 }

// eval decides a hit and returns the state after admitting it. An allowed hit is served
// now by a meter, or by a queue once everything already held has drained.
func (m meter) eval(s meterState, now, cost int64, queue bool) (verdict, meterState) {
	cost = clampCost(cost)
	bt, bf, used := m.base(s.tat, s.frac, now)
	next := meterState{bt, bf}
	allowed := false
	var retry, serve int64
	switch {
	case cost <= m.capacity-used:
		next.tat, next.frac = m.advance(bt, bf, cost)
		used += cost
		allowed, retry, serve = true, now, now
		if queue {
			serve = ceilTime(bt, bf)
		}
	case cost > m.capacity:
		retry = Never
	default:
		retry = m.fitAt(bt, bf, cost)
	}
	at := retry
	if allowed {
		at = serve
	}
	return verdict{allowed: allowed, remaining: max(0, m.capacity-used),
		resetAt: ceilTime(next.tat, next.frac), at: at}, next
}

// fitAt is the earliest time t at which cost fits: the units held at t, rounded up, are at
// most capacity−cost, i.e. (tat−t)×n + frac ≤ (capacity−cost)×per.
func (m meter) fitAt(tat, frac, cost int64) int64 {
	room := m.capacity - cost
	if !mulGE(room, m.per, frac) {
		return addSat(tat, 1)
	}
	k, _, ok := mulSubDivMod(room, m.per, frac, m.n)
	if !ok || k > tat {
		return 0
	}
	return tat - k
}

func (m meter) charge(tat, frac, now, cost int64) (int64, int64) {
	bt, bf, _ := m.base(tat, frac, now)
	return m.advance(bt, bf, clampCost(cost))
}

// refund pulls the arrival time back by cost×per/n, but never before now.
func (m meter) refund(tat, frac, now, cost int64) (int64, int64) {
	if tat < now || (tat == now && frac == 0) {
		return tat, frac
	}
	q, r, ok := mulAddDivMod(clampCost(cost), m.per, 0, m.n)
	if !ok || q > tat {
		return 0, 0
	}
	tat, frac = tat-q, frac-r
	if frac < 0 {
		frac += m.n
		tat--
	}
	if tat < now || (tat == now && frac == 0) {
		return 0, 0
	}
	return tat, frac
}

// ceilTime rounds tat + frac/n up to a whole nanosecond.
func ceilTime(tat, frac int64) int64 {
	if frac > 0 {
		return addSat(tat, 1)
	}
	return tat
}

func (g GCRA) limit() int64 { return g.Burst }
