package limiter

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"time"
)

// MaxSlidingLogLimit bounds a SlidingLog's Limit, and so the entries one key's log can hold:
// an exact log costs 16 bytes per distinct hit time in the window. Use SlidingCounter above it.
const MaxSlidingLogLimit = 1 << 16

// SlidingLog keeps every admitted hit's time and cost and admits a hit only if the units
// admitted in the last Window (the half-open interval (now−Window, now]) plus its cost are at
// most Limit: in any interval of length Window it admits at most Limit units, exactly.
type SlidingLog struct {
	Limit  int64
	Window time.Duration
}

// SlidingLogState is one key's log: a ring of (time, cost) entries, oldest first, at most
// Limit of them; the zero value is an empty log. Copy it only by encoding: copies share the
// ring.
type SlidingLogState struct {
	// one holds the log while it has never needed more than one entry (ring is nil): a key
	// hit less than once a window, the common case among many keys, keeps its log in place.
	one  logEntry
	ring []logEntry
	head int
	n    int
	// used is the sum of the entries' costs, saturated at maxAmount (each entry is at most
	// maxAmount too). A saturated sum says nothing about what remains when entries expire
	// or are refunded, so it is then summed again from the entries (sum).
	used int64
	// newest is at least the newest entry's time, so that a log whose entries have all
	// expired is known to be empty without reading its ring.
	newest int64
}

type logEntry struct {
	at, cost int64
}

// Validate reports the first bad parameter.
// cloneState copies s's ring, which later hits change in place (Engine.Freeze).
func (l SlidingLog) cloneState(s SlidingLogState) SlidingLogState {
	s.ring = slices.Clone(s.ring)
	return s
}

func (l SlidingLog) Validate() error {
	if l.Limit < 1 || l.Limit > MaxSlidingLogLimit {
		return fmt.Errorf("limit: %d must be between 1 and %d for a sliding log (use a sliding counter above)", l.Limit, MaxSlidingLogLimit)
	}
	return validateWindow(l.Window)
}

// Admit logs the hit if it fits the last Window; a rejected hit changes nothing.
func (l SlidingLog) Admit(s *SlidingLogState, now, cost int64) Result {
	return l.admit(s, now, cost).result(l.Limit, now)
}

// Check decides like Admit without logging.
func (l SlidingLog) Check(s *SlidingLogState, now, cost int64) Result {
	res, _ := l.eval(*s, now, cost)
	return res.result(l.Limit, now)
}

// entry returns the i-th oldest entry (i < size(); head < size(), so one wrap at most).
func (s *SlidingLogState) entry(i int) *logEntry {
	if s.ring == nil {
		return &s.one
	}
	j := s.head + i
	if j >= len(s.ring) {
		j -= len(s.ring)
	}
	return &s.ring[j]
}

// size is how many entries the log has room for.
func (s *SlidingLogState) size() int {
	if s.ring == nil {
		return 1
	}
	return len(s.ring)
}

// live returns how many of the oldest entries have expired at now, and the units of the rest.
func (l SlidingLog) live(s *SlidingLogState, now int64) (expired int, used int64) {
	horizon := now - int64(l.Window)
	if s.newest <= horizon {
		return s.n, 0
	}
	used = s.used
	for expired < s.n {
		e := s.entry(expired)
		if e.at > horizon {
			break
		}
		used -= e.cost
		expired++
	}
	if s.used >= maxAmount {
		used = s.sum(expired)
	}
	return expired, used
}

// sum is the saturated sum of the costs of the entries from the i-th oldest on.
func (s *SlidingLogState) sum(i int) int64 {
	var used int64
	for ; i < s.n; i++ {
		used = capAmount(used + s.entry(i).cost)
	}
	return used
}

// eval decides a hit; commit builds the state after admitting it, in place.
func (l SlidingLog) eval(s SlidingLogState, now, cost int64) (verdict, SlidingLogState) {
	expired, used := l.live(&s, now)
	return l.decide(&s, now, clampCost(cost), expired, used), s
}

// decide decides a hit of cost (clamped) on s, of which the oldest expired entries have
// expired at now and the rest hold used units.
func (l SlidingLog) decide(s *SlidingLogState, now, cost int64, expired int, used int64) verdict {
	win := int64(l.Window)
	res := verdict{remaining: max(0, l.Limit-used), resetAt: now}
	if s.n > expired {
		res.resetAt = addSat(s.entry(s.n-1).at, win)
	}
	switch {
	case cost <= l.Limit-used:
		res.allowed, res.at = true, now
		res.remaining -= cost
		if cost > 0 {
			res.resetAt = addSat(max(now, res.resetAt-win), win)
		}
	case cost > l.Limit:
		res.at = Never
	default:
		// The oldest entries expire first; the hit fits once enough of them have.
		need := used + cost - l.Limit
		for i := expired; i < s.n; i++ {
			e := s.entry(i)
			need -= e.cost
			if need <= 0 {
				res.at = addSat(e.at, win)
				break
			}
		}
	}
	return res
}

func (l SlidingLog) commit(s *SlidingLogState, _ SlidingLogState, now, cost int64) {
	if cost = clampCost(cost); cost > 0 {
		l.append(s, now, cost)
	}
}

func (l SlidingLog) admit(s *SlidingLogState, now, cost int64) verdict {
	cost = clampCost(cost)
	expired, used := l.live(s, now)
	res := l.decide(s, now, cost, expired, used)
	if res.allowed && cost > 0 {
		l.appendLive(s, now, cost, expired, used)
	}
	return res
}

// append drops expired entries and logs cost at now (or at the newest entry's time, if time
// went backwards). A forced charge into a full ring merges the two oldest entries at the
// later one's time: that over-counts, never under-counts.
func (l SlidingLog) append(s *SlidingLogState, now, cost int64) {
	expired, used := l.live(s, now)
	l.appendLive(s, now, cost, expired, used)
}

// appendLive is append given live's answer for s at now.
func (l SlidingLog) appendLive(s *SlidingLogState, now, cost int64, expired int, used int64) {
	if expired > 0 {
		s.head = (s.head + expired) % s.size() // expired ≤ n ≤ size()
		s.n -= expired
		s.used = used
	}
	if s.n > 0 {
		if last := s.entry(s.n - 1); last.at >= now {
			last.cost = capAmount(last.cost + cost)
			if s.used = capAmount(s.used + cost); s.used >= maxAmount {
				s.used = s.sum(0)
			}
			return
		}
	}
	merged := int64(0)
	if s.n == s.size() {
		if s.n < int(l.Limit) {
			s.grow(min(max(4, 2*s.n), int(l.Limit)))
		} else {
			oldest := *s.entry(0)
			s.head = (s.head + 1) % s.size()
			s.n--
			if s.n > 0 {
				e := s.entry(0)
				e.cost = capAmount(e.cost + oldest.cost)
			} else {
				merged = oldest.cost
			}
		}
	}
	*s.entry(s.n) = logEntry{at: now, cost: capAmount(cost + merged)}
	s.n++
	s.used = capAmount(s.used + cost)
	s.newest = max(s.newest, now)
	if s.used >= maxAmount {
		s.used = s.sum(0) // an entry may have saturated
	}
}

func (s *SlidingLogState) grow(size int) {
	ring := make([]logEntry, size)
	for i := 0; i < s.n; i++ {
		ring[i] = *s.entry(i)
	}
	s.ring, s.head = ring, 0
}

func (l SlidingLog) force(s *SlidingLogState, now, cost int64) verdict {
	if cost = clampCost(cost); cost > 0 {
		l.append(s, now, cost)
	}
	res, _ := l.eval(*s, now, 0)
	res.allowed, res.at = true, now
	return res
}

// refund removes up to cost units from the entry logged at time at, if it is still there.
func (l SlidingLog) refund(s *SlidingLogState, now, at, cost int64) {
	for i := s.n - 1; i >= 0; i-- {
		e := s.entry(i)
		if e.at < at {
			return
		}
		if e.at > at {
			continue
		}
		take := min(e.cost, clampCost(cost))
		e.cost -= take
		saturated := s.used >= maxAmount
		s.used -= take
		if e.cost == 0 {
			for j := i; j < s.n-1; j++ {
				*s.entry(j) = *s.entry(j + 1)
			}
			s.n--
		}
		if saturated {
			s.used = s.sum(0)
		}
		return
	}
}

func (l SlidingLog) idleAt(s SlidingLogState) int64 {
	if s.n == 0 {
		return math.MinInt64
	}
	return addSat(s.entry(s.n-1).at, int64(l.Window))
}

func (s *SlidingLogState) appendEntries(b []byte) []byte {
	b = binary.AppendUvarint(b, uint64(s.n))
	for i := 0; i < s.n; i++ {
		e := s.entry(i)
		b = appendInts(b, e.at, e.cost)
	}
	return b
}

func (s *SlidingLogState) readEntries(d *decoder, limit int) {
	*s = SlidingLogState{}
	n := d.count(limit, 2)
	if n > 1 {
		s.ring = make([]logEntry, n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		e := logEntry{at: d.int(), cost: d.int()}
		d.check(e.cost >= 1 && e.cost <= maxAmount, "sliding log: entry cost %d out of range", e.cost)
		d.check(i == 0 || e.at > s.newest, "sliding log: entry times out of order")
		s.n = i + 1
		*s.entry(i) = e
		s.used = capAmount(s.used + e.cost)
		s.newest = e.at
	}
	s.n = n
}

func (l SlidingLog) appendState(b []byte, s SlidingLogState) []byte { return s.appendEntries(b) }

func (l SlidingLog) readState(d *decoder, s *SlidingLogState) { s.readEntries(d, int(l.Limit)) }

func (l SlidingLog) appendParams(b []byte) []byte {
	return appendInts(append(b, tagSlidingLog), l.Limit, int64(l.Window))
}

// Delaying a hit would log it in the future, where it would block hits in between; the Delay
// action on a SlidingLog rule rejects, with RetryAt when enough entries expire.
func (l SlidingLog) newTable(maxKeys int) table {
	return newKeyed[SlidingLogState](l, maxKeys, false, true)
}

// AppendBinary appends the state's deterministic encoding to b: its entries, oldest first.
func (s SlidingLogState) AppendBinary(b []byte) ([]byte, error) {
	return s.appendEntries(append(b, tagSlidingLog)), nil
}

// UnmarshalBinary decodes what AppendBinary wrote.
func (s *SlidingLogState) UnmarshalBinary(data []byte) error {
	d := decoder{b: data}
	d.tag(tagSlidingLog)
	var v SlidingLogState
	v.readEntries(&d, MaxSlidingLogLimit)
	if err := d.finish(); err != nil {
		return fmt.Errorf("sliding log state: %w", err)
	}
	*s = v
	return nil
}

func (l SlidingLog) limit() int64 { return l.Limit }
