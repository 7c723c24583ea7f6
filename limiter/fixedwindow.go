package limiter

import (
	"fmt"
	"math"
	"time"
)

// FixedWindow counts hits in consecutive windows aligned to the unix epoch and admits at most
// Limit units per window; two adjacent windows can together admit 2×Limit within a span much
// shorter than Window (see SlidingLog and SlidingCounter for smoother limits).
type FixedWindow struct {
	Limit  int64
	Window time.Duration
}

// FixedWindowState is one key's count in its current window; the zero value is a fresh key.
type FixedWindowState struct {
	Start int64 // the window's start, a multiple of Window
	Count int64
}

// Validate reports the first bad parameter.
func (w FixedWindow) Validate() error {
	if err := validateAmount("limit", w.Limit); err != nil {
		return err
	}
	return validateWindow(w.Window)
}

// Admit counts the hit if it fits the window; a rejected hit changes nothing.
func (w FixedWindow) Admit(s *FixedWindowState, now, cost int64) Result {
	return w.admit(s, now, cost).result(w.Limit, now)
}

// Check decides like Admit without counting.
func (w FixedWindow) Check(s *FixedWindowState, now, cost int64) Result {
	res, _ := w.eval(*s, now, cost)
	return res.result(w.Limit, now)
}

// current returns s rolled to the window holding now; time going backwards stays in s's window.
func (w FixedWindow) current(s FixedWindowState, now int64) FixedWindowState {
	win := int64(w.Window)
	if s.Count == 0 || now-s.Start >= win {
		return FixedWindowState{Start: floorDiv(now, win) * win}
	}
	return s
}

func (w FixedWindow) eval(s FixedWindowState, now, cost int64) (verdict, FixedWindowState) {
	cost = clampCost(cost)
	s = w.current(s, now)
	end := addSat(s.Start, int64(w.Window))
	res := verdict{resetAt: end}
	switch {
	case cost <= w.Limit-s.Count:
		s.Count += cost
		res.allowed, res.at = true, now
	case cost > w.Limit:
		res.at = Never
	default:
		res.at = end
	}
	res.remaining = max(0, w.Limit-s.Count)
	return res, s
}

func (w FixedWindow) commit(s *FixedWindowState, next FixedWindowState, _, _ int64) { *s = next }

func (w FixedWindow) admit(s *FixedWindowState, now, cost int64) verdict {
	res, next := w.eval(*s, now, cost)
	if res.allowed && cost > 0 {
		*s = next
	}
	return res
}

func (w FixedWindow) force(s *FixedWindowState, now, cost int64) verdict {
	next := w.current(*s, now)
	next.Count = capAmount(next.Count + clampCost(cost))
	*s = next
	res, _ := w.eval(next, now, 0)
	res.allowed, res.at = true, now
	return res
}

// refund uncounts cost if the hit charged at time at is in the current window.
func (w FixedWindow) refund(s *FixedWindowState, now, at, cost int64) {
	cur := w.current(*s, now)
	if cur.Count > 0 && at >= cur.Start && at-cur.Start < int64(w.Window) {
		cur.Count -= min(cur.Count, clampCost(cost))
		*s = cur
	}
}

func (w FixedWindow) idleAt(s FixedWindowState) int64 {
	if s.Count == 0 {
		return math.MinInt64
	}
	return addSat(s.Start, int64(w.Window))
}

func (w FixedWindow) appendState(b []byte, s FixedWindowState) []byte {
	return appendInts(b, s.Start, s.Count)
}

func (w FixedWindow) readState(d *decoder, s *FixedWindowState) {
	*s = FixedWindowState{Start: d.int(), Count: d.int()}
	d.check(s.Count >= 0 && s.Count <= maxAmount, "fixed window: count %d out of range", s.Count)
}

func (w FixedWindow) appendParams(b []byte) []byte {
	return appendInts(append(b, tagFixedWindow), w.Limit, int64(w.Window))
}

// Delaying a hit into a later window would need that window's count too; the Delay action on
// a FixedWindow rule rejects, with RetryAt at the next window.
func (w FixedWindow) newTable(maxKeys int) table {
	return newKeyed[FixedWindowState](w, maxKeys, false, true)
}

// AppendBinary appends the state's deterministic encoding to b.
func (s FixedWindowState) AppendBinary(b []byte) ([]byte, error) {
	return appendInts(append(b, tagFixedWindow), s.Start, s.Count), nil
}

// UnmarshalBinary decodes what AppendBinary wrote.
func (s *FixedWindowState) UnmarshalBinary(data []byte) error {
	d := decoder{b: data}
	d.tag(tagFixedWindow)
	v := FixedWindowState{Start: d.int(), Count: d.int()}
	d.check(v.Count >= 0, "fixed window: negative count")
	if err := d.finish(); err != nil {
		return fmt.Errorf("fixed window state: %w", err)
	}
	*s = v
	return nil
}

func (w FixedWindow) limit() int64 { return w.Limit }
