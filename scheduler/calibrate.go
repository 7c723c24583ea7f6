package scheduler

import (
	"math"
	"time"
)

// ETACalibration learns how the leader's ETAs fare and widens, narrows or
// shifts their band to match (split conformal prediction). The model's
// band (WaitBandAhead) counts the work ahead and the service times' spread,
// but not what it cannot see: later arrivals of the job's own tier that
// the fair queue puts ahead of it, changes in load, and who frees a slot
// first. So the leader follows some queued jobs (one in CalibrationEvery,
// by id; more while it has learned little: Follows) from the ETA the model
// gave them to their first start, and keeps,
// per tier and per order of magnitude of that ETA, the ratio of the real
// wait to the ETA's scale (its p50, at least 10 ms) over the last
// calWindow of them. A band is then the scale times those ratios' 10th,
// 50th and 90th percentiles; a class with fewer than calMin ratios keeps
// the model's ETA and borrows the spread of the tier's ratios, of any
// magnitude, around their median, and until that has calMin the model's
// band stands. The server and the simulator each keep one, fed alike.
// Its zero value is ready; not safe for concurrent use.
type ETACalibration struct {
	tiers    []string
	classes  []calClass // tier i's at i*calClasses: one per magnitude, then all of them
	followed map[uint64]followedETA
	told     int // Told calls, for the sweep of stale entries
}

// CalibrationEvery: the leader follows the jobs whose id it divides; while
// a tier's calibration is new (fewer than calWarm ratios), those that
// calWarmEvery divides (Follows).
const CalibrationEvery = 16

const (
	calWarm      = 128
	calWarmEvery = 4 // divides CalibrationEvery: MayFollow holds for every followed id
)

const (
	calWindow     = 256 // ratios a class keeps
	calMin        = 24  // ratios before a class is trusted
	calMagnitudes = 4   // ETAs under 1 s, 10 s, 100 s, and longer
	calClasses    = calMagnitudes + 1
	calFollowMax  = 4096 // jobs followed at once
	calStale      = int64(time.Hour)
	calSweepEvery = 256 // Told calls between sweeps of entries calStale old
	// Ratios are kept as bins of log2(ratio): 1/16 of a doubling each,
	// from 1/256 to 256.
	calBinsPerDoubling = 16
	calBinSpan         = 8
	calBins            = 2 * calBinSpan * calBinsPerDoubling
)

type followedETA struct {
	tier  int32
	class int32
	scale int64 // ns
	at    int64
}

type calClass struct {
	ring   [calWindow]uint16 // the bins of the last ratios, oldest at next
	wring  [calWindow]float32
	next   int
	n      int
	counts [calBins]uint16
	// weights: each ratio weighted as its error counts (etaWeight)
	weights [calBins]float64
	weight  float64
	// The quantiles as ratios, refreshed when read after ratios came
	// (stale); eta is the weighted median.
	q10, q50, eta, q90 float64
	stale              bool
}

// etaWeight is how much a ratio r counts for the ETA's point: the error of
// an ETA is taken relative to the real wait, at least a second, so the
// point that makes the least error is the median of the ratios weighted
// by scale/max(wait, 1 s).
func etaWeight(ratio float64, scale int64) float64 {
	return 1 / max(ratio, float64(time.Second)/float64(scale))
}

// calScale is a band's scale: its p50, at least 10 ms.
func calScale(b Band) time.Duration { return max(b.P50, 10*time.Millisecond) }

// calMagnitude is the class of a scale: under 1 s, 10 s, 100 s, or longer.
func calMagnitude(scale time.Duration) int32 {
	m := int32(0)
	for s := scale; s >= time.Second && m < calMagnitudes-1; s /= 10 {
		m++
	}
	return m
}

// tier is the index of tier name, added if new.
func (c *ETACalibration) tier(name string) int32 {
	if i := c.tierIndex(name); i >= 0 {
		return int32(i)
	}
	c.tiers = append(c.tiers, name)
	c.classes = append(c.classes, make([]calClass, calClasses)...)
	return int32(len(c.tiers) - 1)
}

// tierIndex is the index of tier name, -1 if it has none yet.
func (c *ETACalibration) tierIndex(name string) int {
	for i, t := range c.tiers {
		if t == name {
			return i
		}
	}
	return -1
}

// Follows reports whether the leader follows the ETA of job id, of tier:
// one job in CalibrationEvery, by id, and while the tier's calibration
// holds fewer than calWarm ratios, one in calWarmEvery. A new calibration
// (a new tier's, a fresh leader's) learns its first ratios four times as
// fast, so its bands hold the starts far sooner; the follows that costs
// end with its warm-up.
func (c *ETACalibration) Follows(id uint64, tier string) bool {
	switch {
	case id%CalibrationEvery == 0:
		return true
	case !MayFollow(id):
		return false
	}
	i := c.tierIndex(tier)
	return i < 0 || c.classes[i*calClasses+calMagnitudes].n < calWarm
}

// MayFollow reports whether job id could be followed, whatever the state:
// those it is false for need not be looked up when they start.
func MayFollow(id uint64) bool { return id%calWarmEvery == 0 }

// Told notes the model's band b (before calibration) given to queued job
// id of tier at now, to learn from when it starts. Jobs told they start at
// once, jobs that are not followed (Follows) and jobs delayed past their
// ETA (readyIn) teach nothing.
func (c *ETACalibration) Told(id uint64, tier string, b Band, readyIn time.Duration, now int64) {
	if b.P90 <= 0 || readyIn > b.P50 || !c.Follows(id, tier) {
		return
	}
	if c.followed == nil {
		c.followed = make(map[uint64]followedETA)
	}
	if c.told++; c.told%calSweepEvery == 0 || len(c.followed) >= calFollowMax {
		// Jobs that ended without starting (canceled, expired), or whose
		// start was seen before their ETA was noted.
		for k, f := range c.followed {
			if now-f.at > calStale {
				delete(c.followed, k)
			}
		}
	}
	if len(c.followed) >= calFollowMax {
		return
	}
	scale := calScale(b)
	c.followed[id] = followedETA{tier: c.tier(tier), class: calMagnitude(scale), scale: int64(scale), at: now}
}

// Started learns from job id's first start at now, if it was followed.
func (c *ETACalibration) Started(id uint64, now int64) {
	if !MayFollow(id) {
		return
	}
	f, ok := c.followed[id]
	if !ok {
		return
	}
	delete(c.followed, id)
	ratio := float64(now-f.at) / float64(f.scale)
	bin := 0 // started at once (or the clock stepped back)
	if ratio > 0 {
		bin = int(math.Floor(math.Log2(ratio)*calBinsPerDoubling)) + calBins/2
	}
	bin = min(max(bin, 0), calBins-1)
	w := etaWeight(ratio, f.scale)
	c.classes[int(f.tier)*calClasses+int(f.class)].add(bin, w)
	c.classes[int(f.tier)*calClasses+calMagnitudes].add(bin, w)
}

// Learned is how many ratios the calibration holds, over every class.
func (c *ETACalibration) Learned() int {
	n := 0
	for i := calMagnitudes; i < len(c.classes); i += calClasses {
		n += c.classes[i].n
	}
	return n
}

// Reset stops following every job (a term ends: its starts are another
// leader's to see); what was learned stays.
func (c *ETACalibration) Reset() { clear(c.followed) }

// Forget stops following job id (it ended without starting).
func (c *ETACalibration) Forget(id uint64) {
	if MayFollow(id) {
		delete(c.followed, id)
	}
}

func (k *calClass) add(bin int, w float64) {
	if k.n == calWindow {
		old := k.ring[k.next]
		if k.counts[old]--; k.counts[old] == 0 {
			k.weights[old] = 0 // no float residue in an empty bin
		} else {
			k.weights[old] = max(k.weights[old]-float64(k.wring[k.next]), 0)
		}
		k.weight = max(k.weight-float64(k.wring[k.next]), 0)
	} else {
		k.n++
	}
	k.ring[k.next], k.wring[k.next] = uint16(bin), float32(w)
	k.next = (k.next + 1) % calWindow
	k.counts[bin]++
	k.weights[bin] += float64(float32(w))
	k.weight += float64(float32(w))
	k.stale = true
}

func binRatio(b int) float64 { return math.Exp2((float64(b)+0.5)/calBinsPerDoubling - calBinSpan) }

// weightedMedian is the ratio at half the weight.
func (k *calClass) weightedMedian() float64 {
	seen := 0.0
	for b, w := range k.weights {
		if seen += w; seen >= k.weight/2 && w > 0 {
			return binRatio(b)
		}
	}
	return k.quantile(0.5, false)
}

// quantile is the ratio at quantile q of the window (a bin's middle), as
// split conformal prediction takes it for a band's upper end (the
// ceil(q·(n+1))-th smallest) or lower end (the floor(q·(n+1))-th), so that
// a next ratio falls inside with the band's share at least.
func (k *calClass) quantile(q float64, upper bool) float64 {
	r := q * float64(k.n+1)
	if upper {
		r = math.Ceil(r)
	} else {
		r = math.Floor(r)
	}
	rank, seen := min(max(int(r), 1), k.n), 0
	for b, n := range k.counts {
		if seen += int(n); seen >= rank {
			return binRatio(b)
		}
	}
	return math.Exp2(calBinSpan)
}

// Band is the model's band b for a job of tier, calibrated: unchanged when
// it says the job starts at once or its class has too few ratios yet.
func (c *ETACalibration) Band(tier string, b Band) Band {
	if b.P90 <= 0 {
		return b
	}
	ti := c.tierIndex(tier)
	if ti < 0 {
		return b
	}
	scale := calScale(b)
	k := &c.classes[ti*calClasses+int(calMagnitude(scale))]
	lent := k.n < calMin
	if lent {
		k = &c.classes[ti*calClasses+calMagnitudes] // the tier's, any magnitude
		if k.n < calMin {
			return b
		}
	}
	if k.stale {
		k.q10, k.q50, k.eta, k.q90 = k.quantile(0.1, false), k.quantile(0.5, false), k.weightedMedian(), k.quantile(0.9, true)
		k.stale = false
	}
	s := float64(scale)
	if lent {
		// Ratios learned at other magnitudes say how far waits spread around
		// an ETA, not where this one's lie (a rush's first minutes-long ETAs
		// against the calm's ratios): the model's point, the tier's spread.
		return Band{P10: time.Duration(s * min(k.q10/k.q50, 1)), P50: b.P50, P90: time.Duration(s * max(k.q90/k.q50, 1))}
	}
	return Band{P10: time.Duration(s * k.q10), P50: time.Duration(s * min(max(k.eta, k.q10), k.q90)), P90: time.Duration(s * k.q90)}
}
