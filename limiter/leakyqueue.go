package limiter

import "fmt"

// LeakyQueue (a leaky bucket used as a queue) smooths instead of bursting: each admitted hit
// starts at its ServeAt, no sooner than cost/Rate after the hit before it started, and a hit is
// rejected only when the work queued ahead of it plus its cost would exceed Capacity units.
type LeakyQueue struct {
	Rate     Rate
	Capacity int64
}

// LeakyQueueState is when one key's queue drains; the zero value is an empty queue.
type LeakyQueueState struct {
	// Drain is when the queued work has all been served.
	Drain int64
	// Frac is Drain's fraction of a nanosecond, in 1/Rate.N (0 ≤ Frac < N).
	Frac int64
}

// Validate reports the first bad parameter.
func (q LeakyQueue) Validate() error {
	return validateRefill("capacity", q.Rate, q.Capacity)
}

// Admit queues the hit if there is room and reports in ServeAt when it starts; a rejected hit
// changes nothing.
func (q LeakyQueue) Admit(s *LeakyQueueState, now, cost int64) Result {
	return q.admit(s, now, cost).result(q.Capacity, now)
}

// Check decides like Admit without queueing.
func (q LeakyQueue) Check(s *LeakyQueueState, now, cost int64) Result {
	res, _ := q.eval(*s, now, cost)
	return res.result(q.Capacity, now)
}

func (q LeakyQueue) meter() meter {
	return meter{n: q.Rate.N, per: int64(q.Rate.Per), capacity: q.Capacity}
}

func (q LeakyQueue) eval(s LeakyQueueState, now, cost int64) (verdict, LeakyQueueState) {
	res, next := q.meter().eval(meterState{s.Drain, s.Frac}, now, cost, true)
	return res, LeakyQueueState{next.tat, next.frac}
}

func (q LeakyQueue) commit(s *LeakyQueueState, next LeakyQueueState, _, _ int64) { *s = next }

func (q LeakyQueue) admit(s *LeakyQueueState, now, cost int64) verdict {
	res, next := q.eval(*s, now, cost)
	if res.allowed && cost > 0 {
		*s = next
	}
	return res
}

// force queues the hit even beyond Capacity.
func (q LeakyQueue) force(s *LeakyQueueState, now, cost int64) verdict {
	m := q.meter()
	start, _ := q.eval(*s, now, 0)
	s.Drain, s.Frac = m.charge(s.Drain, s.Frac, now, cost)
	res, _ := q.eval(*s, now, 0)
	res.allowed, res.at = true, 0 // no ServeAt when the queue was already over capacity
	if start.allowed {
		res.at = start.at
	}
	return res
}

// refund takes cost units of work off the queue (a cancelled hit), but the queue never drains
// before now.
func (q LeakyQueue) refund(s *LeakyQueueState, now, _, cost int64) {
	s.Drain, s.Frac = q.meter().refund(s.Drain, s.Frac, now, cost)
}

func (q LeakyQueue) idleAt(s LeakyQueueState) int64 { return ceilTime(s.Drain, s.Frac) }

func (q LeakyQueue) appendState(b []byte, s LeakyQueueState) []byte {
	return appendInts(b, s.Drain, s.Frac)
}

func (q LeakyQueue) readState(d *decoder, s *LeakyQueueState) {
	*s = LeakyQueueState{Drain: d.int(), Frac: d.int()}
	d.check(s.Frac >= 0 && s.Frac < q.Rate.N, "leaky queue: frac %d out of range", s.Frac)
}

func (q LeakyQueue) appendParams(b []byte) []byte {
	return appendInts(append(b, tagLeakyQueue), q.Rate.N, int64(q.Rate.Per), q.Capacity)
}

// A LeakyQueue already delays every hit it admits; a full queue rejects, whatever the rule's
// action, because Capacity is the bound on waiting.
func (q LeakyQueue) newTable(maxKeys int) table {
	return newKeyed[LeakyQueueState](q, maxKeys, false, true)
}

// AppendBinary appends the state's deterministic encoding to b.
func (s LeakyQueueState) AppendBinary(b []byte) ([]byte, error) {
	return appendInts(append(b, tagLeakyQueue), s.Drain, s.Frac), nil
}

// UnmarshalBinary decodes what AppendBinary wrote.
func (s *LeakyQueueState) UnmarshalBinary(data []byte) error {
	d := decoder{b: data}
	d.tag(tagLeakyQueue)
	v := LeakyQueueState{Drain: d.int(), Frac: d.int()}
	d.check(v.Frac >= 0, "leaky queue: negative frac")
	if err := d.finish(); err != nil {
		return fmt.Errorf("leaky queue state: %w", err)
	}
	*s = v
	return nil
}

func (q LeakyQueue) limit() int64 { return q.Capacity }
