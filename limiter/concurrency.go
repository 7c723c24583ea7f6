package limiter

import (
	"fmt"
	"math"
)

// Concurrency caps the units held at once: it admits a hit only while the units acquired and
// not yet released plus its cost are at most Limit, so at most Limit are ever running.
type Concurrency struct {
	Limit int64
}

// ConcurrencyState is one key's running units; the zero value is idle.
type ConcurrencyState struct {
	Running int64
}

// Validate reports the first bad parameter.
func (c Concurrency) Validate() error { return validateAmount("limit", c.Limit) }

// Admit acquires cost units if they fit; a rejected hit acquires nothing. Release them when
// the work ends.
func (c Concurrency) Admit(s *ConcurrencyState, now, cost int64) Result {
	return c.admit(s, now, cost).result(c.Limit, now)
}

// Check decides like Admit without acquiring.
func (c Concurrency) Check(s *ConcurrencyState, now, cost int64) Result {
	res, _ := c.eval(*s, now, cost)
	return res.result(c.Limit, now)
}

// Release gives back cost units acquired by Admit; releasing more than is running releases all.
func (c Concurrency) Release(s *ConcurrencyState, cost int64) {
	s.Running -= min(s.Running, clampCost(cost))
}

// eval decides a hit. Nothing here depends on time: when a full cap frees up depends on
// releases, so RetryAt and ResetAt are 0 (unknown) unless they are now or never.
func (c Concurrency) eval(s ConcurrencyState, now, cost int64) (verdict, ConcurrencyState) {
	cost = clampCost(cost)
	var res verdict
	switch {
	case cost <= c.Limit-s.Running:
		s.Running += cost
		res.allowed, res.at = true, now
	case cost > c.Limit:
		res.at = Never
	}
	res.remaining = max(0, c.Limit-s.Running)
	if s.Running == 0 {
		res.resetAt = now
	}
	return res, s
}

func (c Concurrency) commit(s *ConcurrencyState, next ConcurrencyState, _, _ int64) { *s = next }

func (c Concurrency) admit(s *ConcurrencyState, now, cost int64) verdict {
	res, next := c.eval(*s, now, cost)
	if res.allowed && cost > 0 {
		*s = next
	}
	return res
}

func (c Concurrency) force(s *ConcurrencyState, now, cost int64) verdict {
	s.Running = capAmount(s.Running + clampCost(cost))
	res, _ := c.eval(*s, now, 0)
	res.allowed, res.at = true, now
	return res
}

func (c Concurrency) refund(s *ConcurrencyState, _, _, cost int64) { c.Release(s, cost) }

func (c Concurrency) idleAt(s ConcurrencyState) int64 {
	if s.Running == 0 {
		return math.MinInt64
	}
	return math.MaxInt64
}

func (c Concurrency) appendState(b []byte, s ConcurrencyState) []byte {
	return appendInts(b, s.Running)
}

func (c Concurrency) readState(d *decoder, s *ConcurrencyState) {
	*s = ConcurrencyState{Running: d.int()}
	d.check(s.Running >= 0 && s.Running <= maxAmount, "concurrency: running %d out of range", s.Running)
}

func (c Concurrency) appendParams(b []byte) []byte {
	return appendInts(append(b, tagConcurrency), c.Limit)
}

// A concurrency cap has no overflow state: a release must find the acquisition it undoes, and
// a key moved between the overflow and its own slot would leak units. With the table full of
// running keys, a new key is rejected. Delay does not apply (nothing frees at a known time).
func (c Concurrency) newTable(maxKeys int) table {
	return newKeyed[ConcurrencyState](c, maxKeys, false, false)
}

// AppendBinary appends the state's deterministic encoding to b.
func (s ConcurrencyState) AppendBinary(b []byte) ([]byte, error) {
	return appendInts(append(b, tagConcurrency), s.Running), nil
}

// UnmarshalBinary decodes what AppendBinary wrote.
func (s *ConcurrencyState) UnmarshalBinary(data []byte) error {
	d := decoder{b: data}
	d.tag(tagConcurrency)
	v := ConcurrencyState{Running: d.int()}
	d.check(v.Running >= 0, "concurrency: negative running")
	if err := d.finish(); err != nil {
		return fmt.Errorf("concurrency state: %w", err)
	}
	*s = v
	return nil
}

func (c Concurrency) limit() int64 { return c.Limit }
