package limiter

import (
	"fmt"
	"math"
	"time"
)

// SlidingCounter estimates the units admitted in the last Window as the current aligned
// window's count plus the previous window's count P weighted by the share of it still inside
// (rounded up), and admits at most Limit units per aligned window and at most
// Limit + ⌊P×e/Window⌋ < 2×Limit in any interval of length Window ending e into a window; the
// estimate is exact when the previous window's hits were evenly spread.
type SlidingCounter struct {
	Limit  int64
	Window time.Duration
}

// SlidingCounterState is one key's counts in the current and previous aligned windows; the
// zero value is a fresh key.
type SlidingCounterState struct {
	Start int64 // the current window's start, a multiple of Window
	Curr  int64
	Prev  int64
}

// Validate reports the first bad parameter.
func (c SlidingCounter) Validate() error {
	if err := validateAmount("limit", c.Limit); err != nil {
		return err
	}
	return validateWindow(c.Window)
}

// Admit counts the hit if it fits the estimate; a rejected hit changes nothing.
func (c SlidingCounter) Admit(s *SlidingCounterState, now, cost int64) Result {
	return c.admit(s, now, cost).result(c.Limit, now)
}

// Check decides like Admit without counting.
func (c SlidingCounter) Check(s *SlidingCounterState, now, cost int64) Result {
	res, _ := c.eval(*s, now, cost)
	return res.result(c.Limit, now)
}

// current returns s rolled to the window holding now; time going backwards stays in s's window.
func (c SlidingCounter) current(s SlidingCounterState, now int64) SlidingCounterState {
	win := int64(c.Window)
	switch {
	case s.Curr == 0 && s.Prev == 0:
		return SlidingCounterState{Start: floorDiv(now, win) * win}
	case now-s.Start < win:
		return s
	case now-s.Start < 2*win:
		return SlidingCounterState{Start: s.Start + win, Prev: s.Curr}
	}
	return SlidingCounterState{Start: floorDiv(now, win) * win}
}

// weighted is the previous window's count times the share of it still inside the sliding
// window ending at now, rounded up so that the estimate never under-counts a whole unit.
func (c SlidingCounter) weighted(s SlidingCounterState, now int64) int64 {
	if s.Prev == 0 {
		return 0
	}
	win := int64(c.Window)
	e := min(max(now-s.Start, 0), win)
	return mulAddCeilDiv(s.Prev, win-e, 0, win)
}

func (c SlidingCounter) eval(s SlidingCounterState, now, cost int64) (verdict, SlidingCounterState) {
	cost = clampCost(cost)
	s = c.current(s, now)
	win := int64(c.Window)
	used := s.Curr + c.weighted(s, now)
	var res verdict
	switch {
	case cost <= c.Limit-used:
		s.Curr += cost
		used += cost
		res.allowed, res.at = true, now
	case cost > c.Limit:
		res.at = Never
	case cost <= c.Limit-s.Curr:
		// It fits in this window once the previous window's weight has decayed enough:
		// ⌈Prev×(Window−e)/Window⌉ ≤ room  ⇔  e ≥ Window − ⌊room×Window/Prev⌋.
		room := c.Limit - s.Curr - cost
		res.at = s.Start + win - min(win, mulDivFloor(room, win, s.Prev))
	default:
		// Next window: this window's count becomes the decaying previous one.
		room := c.Limit - cost
		res.at = addSat(s.Start, 2*win-min(win, mulDivFloor(room, win, s.Curr)))
	}
	res.remaining = max(0, c.Limit-used)
	switch {
	case s.Curr > 0:
		res.resetAt = addSat(s.Start, 2*win)
	case s.Prev > 0:
		res.resetAt = addSat(s.Start, win)
	default:
		res.resetAt = now
	}
	return res, s
}

func (c SlidingCounter) commit(s *SlidingCounterState, next SlidingCounterState, _, _ int64) {
	*s = next
}

func (c SlidingCounter) admit(s *SlidingCounterState, now, cost int64) verdict {
	res, next := c.eval(*s, now, cost)
	if res.allowed && cost > 0 {
		*s = next
	}
	return res
}

func (c SlidingCounter) force(s *SlidingCounterState, now, cost int64) verdict {
	next := c.current(*s, now)
	next.Curr = capAmount(next.Curr + clampCost(cost))
	*s = next
	res, _ := c.eval(next, now, 0)
	res.allowed, res.at = true, now
	return res
}

// refund uncounts cost from whichever of the two windows holds time at.
func (c SlidingCounter) refund(s *SlidingCounterState, now, at, cost int64) {
	cur := c.current(*s, now)
	win := int64(c.Window)
	cost = clampCost(cost)
	switch {
	case at >= cur.Start && at-cur.Start < win:
		cur.Curr -= min(cur.Curr, cost)
	case at < cur.Start && cur.Start-at <= win:
		cur.Prev -= min(cur.Prev, cost)
	default:
		return
	}
	*s = cur
}

func (c SlidingCounter) idleAt(s SlidingCounterState) int64 {
	switch {
	case s.Curr > 0:
		return addSat(s.Start, 2*int64(c.Window))
	case s.Prev > 0:
		return addSat(s.Start, int64(c.Window))
	}
	return math.MinInt64
}

func (c SlidingCounter) appendState(b []byte, s SlidingCounterState) []byte {
	return appendInts(b, s.Start, s.Curr, s.Prev)
}

func (c SlidingCounter) readState(d *decoder, s *SlidingCounterState) {
	*s = SlidingCounterState{Start: d.int(), Curr: d.int(), Prev: d.int()}
	d.check(s.Curr >= 0 && s.Curr <= maxAmount && s.Prev >= 0 && s.Prev <= maxAmount,
		"sliding counter: counts %d, %d out of range", s.Curr, s.Prev)
}

func (c SlidingCounter) appendParams(b []byte) []byte {
	return appendInts(append(b, tagSlidingCounter), c.Limit, int64(c.Window))
}

// Like FixedWindow, the Delay action on a SlidingCounter rule rejects, with RetryAt.
func (c SlidingCounter) newTable(maxKeys int) table {
	return newKeyed[SlidingCounterState](c, maxKeys, false, true)
}

// AppendBinary appends the state's deterministic encoding to b.
func (s SlidingCounterState) AppendBinary(b []byte) ([]byte, error) {
	return appendInts(append(b, tagSlidingCounter), s.Start, s.Curr, s.Prev), nil
}

// UnmarshalBinary decodes what AppendBinary wrote.
func (s *SlidingCounterState) UnmarshalBinary(data []byte) error {
	d := decoder{b: data}
	d.tag(tagSlidingCounter)
	v := SlidingCounterState{Start: d.int(), Curr: d.int(), Prev: d.int()}
	d.check(v.Curr >= 0 && v.Prev >= 0, "sliding counter: negative count")
	if err := d.finish(); err != nil {
		return fmt.Errorf("sliding counter state: %w", err)
	}
	*s = v
	return nil
}

func (c SlidingCounter) limit() int64 { return c.Limit }
