package scheduler

import (
	"math"
	"slices"
	"time"
)

// RunTime is what the leader expects of one attempt's run time: its mean
// and standard deviation (ServiceTime's, or a prediction from the job's
// size), taken as a lognormal of those.
type RunTime struct{ Mean, SD time.Duration }

// Lane is one slot that serves a job: free, or running an attempt that is
// expected to take Run and has run for Elapsed.
type Lane struct {
	Busy    bool
	Run     RunTime
	Elapsed time.Duration
}

// Left is the lane's expected time until it is free: what its attempt's
// mean has left, 0 when it is free or past its mean.
func (l Lane) Left() time.Duration {
	if !l.Busy {
		return 0
	}
	return max(l.Run.Mean-l.Elapsed, 0)
}

// Draws is the randomness SampledWait draws from, an argument as time is
// (the standard library's Rand has these methods): given the same draws,
// it tells the same band.
type Draws interface {
	Float64() float64
	NormFloat64() float64
	Shuffle(n int, swap func(i, j int))
}

// SampledDraws is how many futures SampledWait draws.
const SampledDraws = 16

// SampledWait is the band of the wait of a job that starts when its turn
// comes on lanes, after the jobs ahead of it (each taken by the lane free
// first), as the 10th, 50th and 90th percentiles of SampledDraws drawn
// futures: in each, every busy lane's attempt runs to a length drawn given
// how long it has run already, and every job ahead for a drawn run time.
// over of the lanes go to other tiers' later arrivals meanwhile, which
// stretches the queued work (as LanesBand); the attempts running now end
// when they end. rng is drawn from (the leader seeds it with the job's id,
// so that the same state tells the same band).
//
// Where the job starts when one of the attempts running now ends (fewer
// jobs ahead than lanes), how long those have run says much of when: two
// lanes 5 s into 6 s attempts free up soon, two 1 s into them do not, and
// the first of sixteen frees long before the first of two. WaitBand's
// average over the attempts' phases cannot tell those apart.
func SampledWait(lanes []Lane, ahead []RunTime, over float64, rng Draws) Band {
	if len(lanes) == 0 {
		return Band{}
	}
	type laneDist struct {
		busy bool
		run  runSoFar
	}
	dists := make([]laneDist, len(lanes))
	for i, l := range lanes {
		if l.Busy {
			dists[i] = laneDist{busy: true, run: logNormalOf(l.Run).after(float64(max(l.Elapsed, 0)))}
		}
	}
	jobs := make([]logNormal, len(ahead))
	for i, r := range ahead {
		if i > 0 && r == ahead[i-1] {
			jobs[i] = jobs[i-1]
			continue
		}
		jobs[i] = logNormalOf(r)
	}
	n := float64(len(lanes))
	stretch := n / max(n-over, 0.1*n)
	// Latin hypercube: each lane's draws take one stratum of its
	// distribution each, in an order of its own.
	var waits [SampledDraws]float64
	strata := make([]float64, len(lanes)*SampledDraws) // lane i's at i*SampledDraws
	for i, l := range dists {
		if !l.busy {
			continue
		}
		st := strata[i*SampledDraws : (i+1)*SampledDraws]
		for k := range st {
			st[k] = l.run.rest((float64(k) + rng.Float64()) / SampledDraws)
		}
		rng.Shuffle(len(st), func(a, b int) { st[a], st[b] = st[b], st[a] })
	}
	free := make([]float64, len(lanes))
	for k := range waits {
		for i := range free {
			free[i] = strata[i*SampledDraws+k]
		}
		for i := len(free)/2 - 1; i >= 0; i-- { // a min-heap
			siftDown(free, i)
		}
		first := free[0]
		for _, j := range jobs {
			free[0] += j.draw(rng)
			siftDown(free, 0)
		}
		waits[k] = first + (free[0]-first)*stretch
	}
	slices.Sort(waits[:])
	// The p-quantile of the draws, interpolated: with one draw in each
	// 16th of every attempt's distribution, the i-th smallest (from 0)
	// stands near the (i+½)/16 quantile, so p's is at p·16 − ½; the band
	// then holds 78.5 % of the next wait on its model's terms, where the
	// usual ranks (p·15) hold 75 % and those unbiased for independent
	// draws (p·17 − 1) 84.5 % (TestSampledWaitsBandHoldsEightyPercent).
	q := func(p float64) time.Duration {
		x := min(max(p*SampledDraws-0.5, 0), SampledDraws-1)
		i := int(x)
		return duration(waits[i] + (x-float64(i))*(waits[min(i+1, SampledDraws-1)]-waits[i]))
	}
	b := Band{P10: q(0.1), P50: q(0.5), P90: q(0.9)}
	if b.P90 == 0 {
		return Band{}
	}
	return b
}

// siftDown restores the min-heap h below i after h[i] grew.
func siftDown(h []float64, i int) {
	for {
		c := 2*i + 1
		if c >= len(h) {
			return
		}
		if c+1 < len(h) && h[c+1] < h[c] {
			c++
		}
		if h[i] <= h[c] {
			return
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
}

// logNormal is a lognormal run time: exp(mu + sigma·Z), in ns; sigma 0 is
// a constant one.
type logNormal struct{ mu, sigma, mean float64 }

// maxCV bounds a run time's coefficient of variation: a prediction cut at 0
// with some spread left would otherwise make a lognormal of wild tails.
const maxCV = 10

func logNormalOf(r RunTime) logNormal {
	m := max(float64(r.Mean), 1)
	cv := min(max(float64(r.SD), 0)/m, maxCV)
	s2 := math.Log1p(cv * cv)
	return logNormal{mu: math.Log(m) - s2/2, sigma: math.Sqrt(s2), mean: m}
}

func (d logNormal) draw(rng Draws) float64 {
	if d.sigma == 0 {
		return d.mean
	}
	return math.Exp(d.mu + d.sigma*rng.NormFloat64())
}

// runSoFar is a lognormal run that has run at ns: where it stands in its
// distribution, z0 (its log-time in standard deviations from the mean of
// logs) and q0 = P(run > at).
type runSoFar struct {
	d          logNormal
	at, z0, q0 float64
}

func (d logNormal) after(at float64) runSoFar {
	r := runSoFar{d: d, at: at, z0: math.Inf(-1), q0: 1}
	if d.sigma > 0 && at > 0 {
		r.z0 = (math.Log(at) - d.mu) / d.sigma
		r.q0 = 0.5 * math.Erfc(r.z0/math.Sqrt2)
	}
	return r
}

// tailExact is the least upper-tail share whose normal quantile is taken
// from math.Erfcinv (it computes Erfinv(1 − x), which loses x's digits:
// off by 1e-4 at 1e-12); under it, upperTailQuantile.
const tailExact = 1e-8

// rest is the run's time left at u in [0, 1) of the runs that long (u
// small: soon), by the inverse of the survival function: the upper tail,
// so that an attempt far past its mean still has some left.
func (r runSoFar) rest(u float64) float64 {
	d := r.d
	u = min(max(u, 0), 1-0x1p-53) // (k + a draw in [0, 1))/16 can round to 1
	switch {
	case d.sigma == 0: // no spread: past its mean, nothing left
		return max(d.mean-r.at, 0)
	case r.q0*(1-u) >= tailExact:
		z := math.Sqrt2 * math.Erfcinv(2*r.q0*(1-u))
		return max(math.Exp(d.mu+d.sigma*z)-r.at, 0)
	}
	// Far in the tail, in logs: the z whose upper tail is q0·(1−u).
	z := upperTailQuantile(logUpperTail(r.z0) + math.Log1p(-u))
	if r.at <= 0 { // z0 is −∞: the run's own quantile
		return math.Exp(d.mu + d.sigma*z)
	}
	return r.at * math.Expm1(d.sigma*max(z-r.z0, 0))
}

// duration is x ns as a Duration, at most the largest one (a far-tail draw
// of a long run).
func duration(x float64) time.Duration {
	if !(x < math.MaxInt64) { // NaN too
		return math.MaxInt64
	}
	return time.Duration(max(x, 0))
}

// logUpperTail is ln P(Z > z) for a standard normal Z, also where the
// share underflows (past z ≈ 37: Mills' ratio, φ(z)/z).
func logUpperTail(z float64) float64 {
	if z < 37 {
		return math.Log(0.5 * math.Erfc(z/math.Sqrt2))
	}
	return -z*z/2 - math.Log(z*math.Sqrt(2*math.Pi))
}

// upperTailQuantile is the z with ln P(Z > z) = lq: math.Erfcinv's above
// tailExact, else (z ≥ 5.6) Mills' ratio solved by iteration, then a
// Newton step on the exact tail where erfc still tells it.
func upperTailQuantile(lq float64) float64 {
	if lq > math.Log(tailExact) {
		return math.Sqrt2 * math.Erfcinv(2*math.Exp(lq))
	}
	z := math.Sqrt(-2 * lq)
	for range 4 {
		z = math.Sqrt(-2 * (lq + math.Log(z*math.Sqrt(2*math.Pi))))
	}
	if z < 37 { // d ln Q / dz = −φ(z)/Q(z)
		q := 0.5 * math.Erfc(z/math.Sqrt2)
		z += (math.Log(q) - lq) * q / (math.Exp(-z*z/2) / math.Sqrt(2*math.Pi))
	}
	return z
}

// RestBand is the band of a running attempt's time left, expected to take r
// and running for elapsed so far: the 10th, 50th and 90th percentiles of
// what a lognormal run of r has left once it has run that long, as
// SampledWait draws it. An attempt past its mean is told what runs that
// long still take, not 0 (unless its run time has no spread).
func RestBand(r RunTime, elapsed time.Duration) Band {
	run := logNormalOf(r).after(float64(max(elapsed, 0)))
	q := func(p float64) time.Duration { return duration(run.rest(p)) }
	return Band{P10: q(0.1), P50: q(0.5), P90: q(0.9)}
}
