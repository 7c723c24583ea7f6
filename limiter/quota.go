package limiter

import (
	"fmt"
	"math"
	"time"
)

// Period is a calendar period of a Quota.
type Period uint8

const (
	Daily   Period = iota + 1 // from local midnight to the next (23, 24 or 25 hours)
	Monthly                   // from local midnight on the 1st to the 1st of the next month
)

func (p Period) String() string {
	switch p {
	case Daily:
		return "daily"
	case Monthly:
		return "monthly"
	}
	return fmt.Sprintf("Period(%d)", p)
}

// Quota admits at most Limit units per calendar day or month in Location, and starts afresh at
// the period's local start, daylight-saving changes included.
//
// Periods come from Location's rules (time.Date), so every replica must load the same time
// zone data (policy.LoadZone reads only the database embedded in the binary).
type Quota struct {
	Limit    int64
	Period   Period
	Location *time.Location // nil means UTC
}

// QuotaState is one key's use in its current period; the zero value is a fresh key.
type QuotaState struct {
	Start, End int64 // the period [Start, End)
	Used       int64
}

// Validate reports the first bad parameter.
func (q Quota) Validate() error {
	if err := validateAmount("limit", q.Limit); err != nil {
		return err
	}
	if q.Period != Daily && q.Period != Monthly {
		return fmt.Errorf("period: %v must be daily or monthly", q.Period)
	}
	return nil
}

// Admit counts the hit if it fits this period's allowance; a rejected hit changes nothing.
func (q Quota) Admit(s *QuotaState, now, cost int64) Result {
	return q.admit(s, now, cost).result(q.Limit, now)
}

// Check decides like Admit without counting.
func (q Quota) Check(s *QuotaState, now, cost int64) Result {
	res, _ := q.eval(*s, now, cost)
	return res.result(q.Limit, now)
}

func (q Quota) location() *time.Location {
	if q.Location == nil {
		return time.UTC
	}
	return q.Location
}

// PeriodAt returns the calendar period [start, end) holding now.
func (q Quota) PeriodAt(now int64) (start, end int64) {
	loc := q.location()
	y, m, d := time.Unix(0, now).In(loc).Date()
	bounds := func(shift int) (int64, int64) {
		if q.Period == Monthly {
			return time.Date(y, m+time.Month(shift), 1, 0, 0, 0, 0, loc).UnixNano(),
				time.Date(y, m+time.Month(shift)+1, 1, 0, 0, 0, 0, loc).UnixNano()
		}
		return time.Date(y, m, d+shift, 0, 0, 0, 0, loc).UnixNano(),
			time.Date(y, m, d+shift+1, 0, 0, 0, 0, loc).UnixNano()
	}
	start, end = bounds(0)
	// Where a zone skips midnight itself, time.Date may pick an instant just past now or
	// before it; the neighbouring period then holds now.
	switch {
	case now < start:
		start, end = bounds(-1)
	case now >= end:
		start, end = bounds(1)
	}
	return start, end
}

// current returns s moved to the period holding now; time going backwards stays in s's period.
func (q Quota) current(s QuotaState, now int64) QuotaState {
	if now >= s.End || (s.Used == 0 && now < s.Start) {
		start, end := q.PeriodAt(now)
		return QuotaState{Start: start, End: end}
	}
	return s
}

func (q Quota) eval(s QuotaState, now, cost int64) (verdict, QuotaState) {
	cost = clampCost(cost)
	s = q.current(s, now)
	res := verdict{resetAt: s.End}
	switch {
	case cost <= q.Limit-s.Used:
		s.Used += cost
		res.allowed, res.at = true, now
	case cost > q.Limit:
		res.at = Never
	default:
		res.at = s.End
	}
	res.remaining = max(0, q.Limit-s.Used)
	return res, s
}

func (q Quota) commit(s *QuotaState, next QuotaState, _, _ int64) { *s = next }

func (q Quota) admit(s *QuotaState, now, cost int64) verdict {
	res, next := q.eval(*s, now, cost)
	if res.allowed && cost > 0 {
		*s = next
	}
	return res
}

func (q Quota) force(s *QuotaState, now, cost int64) verdict {
	next := q.current(*s, now)
	next.Used = capAmount(next.Used + clampCost(cost))
	*s = next
	res, _ := q.eval(next, now, 0)
	res.allowed, res.at = true, now
	return res
}

// refund uncounts cost if the hit charged at time at is in the current period.
func (q Quota) refund(s *QuotaState, now, at, cost int64) {
	cur := q.current(*s, now)
	if cur.Used > 0 && at >= cur.Start && at < cur.End {
		cur.Used -= min(cur.Used, clampCost(cost))
		*s = cur
	}
}

func (q Quota) idleAt(s QuotaState) int64 {
	if s.Used == 0 {
		return math.MinInt64
	}
	return s.End
}

func (q Quota) appendState(b []byte, s QuotaState) []byte {
	return appendInts(b, s.Start, s.End, s.Used)
}

func (q Quota) readState(d *decoder, s *QuotaState) {
	*s = QuotaState{Start: d.int(), End: d.int(), Used: d.int()}
	d.check(s.Start <= s.End && s.Used >= 0 && s.Used <= maxAmount, "quota: state out of range")
}

func (q Quota) appendParams(b []byte) []byte {
	b = appendInts(append(b, tagQuota), q.Limit, int64(q.Period))
	return appendString(b, q.location().String())
}

// Delaying a hit into the next period would need that period's count too; the Delay action
// on a Quota rule rejects, with RetryAt at the period's end.
func (q Quota) newTable(maxKeys int) table {
	return newKeyed[QuotaState](q, maxKeys, false, true)
}

// AppendBinary appends the state's deterministic encoding to b.
func (s QuotaState) AppendBinary(b []byte) ([]byte, error) {
	return appendInts(append(b, tagQuota), s.Start, s.End, s.Used), nil
}

// UnmarshalBinary decodes what AppendBinary wrote.
func (s *QuotaState) UnmarshalBinary(data []byte) error {
	d := decoder{b: data}
	d.tag(tagQuota)
	v := QuotaState{Start: d.int(), End: d.int(), Used: d.int()}
	d.check(v.Start <= v.End && v.Used >= 0, "quota: state out of range")
	if err := d.finish(); err != nil {
		return fmt.Errorf("quota state: %w", err)
	}
	*s = v
	return nil
}

func (q Quota) limit() int64 { return q.Limit }
