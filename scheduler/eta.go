package scheduler

import (
	"container/heap"
	"math"
	"slices"
	"time"
)

// ETA estimates how long a queued job at 1-based position waits before it
// starts, when slots busy slots serve its kind of job and each takes about
// service: slots lanes that each free up a uniform moment into their
// current job, then every service, free a slot every service/slots on
// average, so the job starts at the position-th departure, about
// (position - ½)·service/slots (the first of 16 busy slots frees long
// before half a service: a job first in line waits service/32 there).
// With no slots the wait is unknown and ETA returns -1.
func ETA(position, slots int, service time.Duration) time.Duration {
	if slots <= 0 {
		return -1
	}
	if position <= 0 {
		return 0
	}
	return time.Duration((float64(position) - 0.5) * float64(service) / float64(slots))
}

// WaitBehind estimates the wait of a job at 1-based position among the
// queued jobs of its kind, when slots serve that kind and free of them are
// idle now: the jobs idle slots take at once wait for nothing, the rest
// wait out ETA behind them. -1 when no slot serves the kind.
func WaitBehind(position, slots, free int, service time.Duration) time.Duration {
	switch {
	case slots <= 0:
		return -1
	case position <= free:
		return 0
	}
	return ETA(position-free, slots, service)
}

// ETAErrorFloor is the least wait an ETA's error is taken against: a job
// told "now" that starts 300 ms later is not 100 % wrong.
const ETAErrorFloor = time.Second

// ETAError is how far an ETA of eta was from the wait, relative to the wait
// (at least ETAErrorFloor): how the simulator and the leader's metrics
// judge an ETA (docs/simulator.md, "ETA honesty").
func ETAError(eta, wait time.Duration) float64 {
	return math.Abs(float64(eta-wait)) / float64(max(wait, ETAErrorFloor))
}

// ETAOutcome is where a job's first start fell against the ETA it was told.
type ETAOutcome uint8

const (
	ETAInside     ETAOutcome = iota // inside the p10–p90 band
	ETAEarly                        // before it
	ETALate                         // after it
	ETAAtOnce                       // told at once (a band of 0), and started within ETAErrorFloor
	ETAAtOnceLate                   // told at once, and started later
)

// ETAFared is where a start after wait fell against the band p10–p90 told
// (p90 0: at once), as the simulator's honesty figures and the leader's
// metrics count it.
func ETAFared(p10, p90, wait time.Duration) ETAOutcome {
	switch {
	case p90 <= 0 && wait <= ETAErrorFloor:
		return ETAAtOnce
	case p90 <= 0:
		return ETAAtOnceLate
	case wait < p10:
		return ETAEarly
	case wait > p90:
		return ETALate
	}
	return ETAInside
}

// WarmAfter is an executor's list of loaded models after it runs model:
// model moves to the end and the oldest falls off past capacity. It
// returns a new slice, since offered slots may share the old one.
func WarmAfter(warm []string, model string, capacity int) []string {
	out := make([]string, 0, capacity)
	for _, m := range warm {
		if m != model {
			out = append(out, m)
		}
	}
	out = append(out, model)
	if len(out) > capacity {
		out = out[len(out)-capacity:]
	}
	return out
}

// ServiceTime is what the leader has learned of one model's service time:
// an exponentially weighted mean and variance of its attempts' run times
// (about the last ten count), for ETAs and their band. The server and the
// simulator both keep one per model.
type ServiceTime struct {
	mean, vari float64 // ns, ns²
	n          int
}

// serviceAlpha weighs the newest sample.
const serviceAlpha = 0.2

// Observe learns one attempt's run time.
func (s *ServiceTime) Observe(d time.Duration) {
	x := float64(d)
	if s.n == 0 {
		s.mean, s.vari, s.n = x, 0, 1
		return
	}
	diff := x - s.mean
	incr := serviceAlpha * diff
	s.mean += incr
	s.vari = (1 - serviceAlpha) * (s.vari + diff*incr)
	s.n++
}

// Learned reports whether any run time was observed.
func (s *ServiceTime) Learned() bool { return s.n > 0 }

// Estimate is the mean service time and its standard deviation: the
// learned ones, else def (a model's default_duration; 1 s when 0) with a
// deviation of half of it. One sample gives no deviation: half the mean
// until a second.
func (s *ServiceTime) Estimate(def time.Duration) (mean, sd time.Duration) {
	if s.n == 0 || s.mean <= 0 {
		if def <= 0 {
			def = time.Second
		}
		return def, def / 2
	}
	if s.n == 1 {
		return time.Duration(s.mean), time.Duration(s.mean / 2)
	}
	return time.Duration(s.mean), time.Duration(math.Sqrt(s.vari))
}

// Band is an ETA with the band it probably falls in: P50 is ETA's (or
// WaitBehind's) estimate, P10 and P90 the 10th and 90th percentiles.
type Band struct{ P10, P50, P90 time.Duration }

// z90 is the standard normal's 90th percentile.
const z90 = 1.2816

// WaitBand is WaitBehind with its band, when attempts take mean ± sd: the
// job starts at the n-th departure of slots busy lanes, n its place among
// the jobs idle slots do not take at once (ETA); the band is the normal one
// around that, cut at 0: the slots lanes' departures are a renewal process
// slots times as fast, so the n-th comes after n-1 services and the rest of
// one (uniform: mean²/12), each over slots, varying as ((n-1)·sd² +
// mean²/12)/slots². ok is false when no slot serves it.
func WaitBand(position, slots, free int, mean, sd time.Duration) (b Band, ok bool) {
	switch {
	case slots <= 0:
		return Band{}, false
	case position <= free:
		return Band{}, true
	}
	n := position - free
	p50 := ETA(n, slots, mean)
	spread := time.Duration(z90 * math.Sqrt(float64(n-1)*float64(sd)*float64(sd)+float64(mean)*float64(mean)/12) / float64(slots))
	return Band{P10: max(0, p50-spread), P50: p50, P90: p50 + spread}, true
}

// RunBand is the band of a running attempt's remaining time, started
// elapsed ago: mean - elapsed ± z90·sd, cut at 0.
func RunBand(elapsed, mean, sd time.Duration) Band {
	spread := time.Duration(z90 * float64(sd))
	p50 := mean - elapsed
	return Band{P10: max(0, p50-spread), P50: max(0, p50), P90: max(0, p50+spread)}
}

// NotBefore is the band of a job that cannot start for wait anyway (its
// not_before, a backoff): no part of it earlier.
func (b Band) NotBefore(wait time.Duration) Band {
	return Band{P10: max(b.P10, wait), P50: max(b.P50, wait), P90: max(b.P90, wait)}
}

// WaitBandAhead is WaitBand for executors that serve several models: ahead
// is the jobs in line before this one that its slots will run, of any
// model, and work their summed expected service; mean and sd are its own
// model's. The first free of them start at once; the job then waits for
// the rest of the work, done by slots lanes (as WaitBand, in units of
// its own model's service).
//
// overtaking is the slots other tiers' later arrivals will take meanwhile
// (TierLoad.Overtaking): the work ahead is done by the rest.
func WaitBandAhead(ahead, work float64, slotCount, free int, overtaking float64, mean, sd time.Duration) (b Band, ok bool) {
	slots, rest, waits, ok := aheadWork(ahead, work, slotCount, free, overtaking)
	if !waits {
		return Band{}, ok
	}
	n := rest/float64(mean) + 1 // this job's place, in services of its model
	p50 := time.Duration((n - 0.5) * float64(mean) / slots)
	return aheadBand(p50, n, slots, mean, sd), true
}

// aheadWork is the slots left a job and the work ahead of it that the free
// slots do not take at once; waits is false when it does not wait (ok:
// it starts at once; else no slot serves it).
func aheadWork(ahead, work float64, slotCount, free int, overtaking float64) (slots, rest float64, waits, ok bool) {
	switch {
	case slotCount <= 0:
		return 0, 0, false, false
	case ahead < float64(free):
		return 0, 0, false, true
	}
	slots = max(float64(slotCount)-overtaking, 0.1*float64(slotCount))
	return slots, work * (ahead - float64(free)) / max(ahead, 1), true, true
}

func aheadBand(p50 time.Duration, n, slots float64, mean, sd time.Duration) Band {
	spread := time.Duration(z90 * math.Sqrt((n-1)*float64(sd)*float64(sd)+float64(mean)*float64(mean)/12) / slots)
	return Band{P10: max(0, p50-spread), P50: p50, P90: p50 + spread}
}

// tierLoadTau is the time constant of TierLoad's average.
const tierLoadTau = float64(time.Minute)

// TierLoad is the recent rate of work admitted to each tier: expected
// service time per unit of time, so the number of slots that tier's
// arrivals keep busy, as an exponentially decaying average over about a
// minute. Its zero value is ready; not safe for concurrent use. (Tiers are
// few: a slice searched in order, cheaper than a map on every admission.)
type TierLoad struct {
	names []string
	rate  []float64
	at    int64
}

func (l *TierLoad) decay(now int64) {
	if now-l.at >= int64(time.Second) { // within a second the average moves under 2 %
		f := math.Exp(-float64(now-l.at) / tierLoadTau)
		for i := range l.rate {
			l.rate[i] *= f
		}
		l.at = now
	}
}

// Add counts work admitted to tier at now.
func (l *TierLoad) Add(tier string, work time.Duration, now int64) {
	l.decay(now)
	i := slices.Index(l.names, tier)
	if i < 0 {
		i = len(l.names)
		l.names, l.rate = append(l.names, tier), append(l.rate, 0)
	}
	l.rate[i] += float64(work) / tierLoadTau
}

// TierShare is a tier's weight and whether it is strict, for Overtaking.
type TierShare struct {
	Weight int32
	Strict bool
}

// Overtaking is how many of slots the other tiers' arrivals will take
// while a job of tier waits, by weighted fair sharing: a strict tier all it
// brings, another tier what it brings up to its weight's share of the
// slots (tier itself, backlogged, counts in the shares), at most 90 % of
// them. (Leaving out the tiers that are backlogged themselves, whose new
// jobs queue behind their own, did worse on the shipped scenarios.)
func (l *TierLoad) Overtaking(tier string, tiers map[string]TierShare, slots int, now int64) float64 {
	l.decay(now)
	sum := float64(max(tiers[tier].Weight, 1))
	for i, t := range l.names {
		if t != tier && l.rate[i] > 0.01 && !tiers[t].Strict {
			sum += float64(max(tiers[t].Weight, 1))
		}
	}
	over := 0.0
	for i, t := range l.names { // in first-admitted order: the same sums on every run
		r := l.rate[i]
		switch {
		case t == tier:
		case tiers[t].Strict:
			over += r
		default:
			over += min(r, float64(slots)*float64(max(tiers[t].Weight, 1))/sum)
		}
	}
	return min(over, 0.9*float64(slots))
}

// LanesBand is the band of a job that starts when its turn comes on lanes
// (each the time until that slot is free) after the jobs ahead of it, of
// the run times given, each taken by the lane free first; over of the
// lanes go to other tiers' later arrivals meanwhile. The band is the
// spread of the services before it on its lane, sd each.
func LanesBand(lanes []time.Duration, ahead []time.Duration, over float64, sd time.Duration) Band {
	free := slices.Clone(lanes)
	slices.Sort(free)
	first := free[0]   // the first slot free with nothing ahead
	h := durHeap(free) // sorted: a heap already
	for _, d := range ahead {
		h[0] += d
		heap.Fix(&h, 0)
	}
	// The other tiers stretch the queued work; the attempts running now
	// end when they end.
	slots := float64(len(lanes))
	p50 := first + time.Duration(float64(h[0]-first)*slots/max(slots-over, 0.1*slots))
	k := float64(len(ahead))/slots + 1
	spread := time.Duration(z90 * math.Sqrt(k) * float64(sd))
	if p50 == 0 {
		return Band{}
	}
	return Band{P10: max(0, p50-spread), P50: p50, P90: p50 + spread}
}

// durHeap is a min-heap of durations (container/heap).
type durHeap []time.Duration

func (h durHeap) Len() int           { return len(h) }
func (h durHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h durHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *durHeap) Push(x any)        { *h = append(*h, x.(time.Duration)) }
func (h *durHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
