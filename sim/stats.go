package sim

import (
	"math"
	"slices"
	"time"
)

// tally is one tenant's counts, for jobs submitted after the warm-up.
type tally struct {
	submitted, admitted, delayed, degraded, rejected, retried int64
	challenged, solved, shadowChallenged                      int64
	rejectedBy                                                map[string]int64
	succeeded, deadLettered, failed, expired, other           int64
	waits, turnarounds                                        []int64
	gpuNs                                                     float64 // GPU-ns received inside the window
	demandNs                                                  float64 // GPU-ns its admitted jobs need, at mean service
}

func (t *tally) init() { t.rejectedBy = map[string]int64{} }

func (t *tally) reject(rule string) {
	t.rejected++
	t.rejectedBy[rule]++
}

func (t *tally) waited(ns int64) { t.waits = append(t.waits, ns) }

func (t *tally) ended(state string, j *simJob, at int64) {
	switch state {
	case "SUCCEEDED":
		t.succeeded++
		t.turnarounds = append(t.turnarounds, at-j.arrived)
	case "DEAD_LETTERED":
		t.deadLettered++
	case "FAILED":
		t.failed++
	case "EXPIRED":
		t.expired++
	default:
		t.other++
	}
}

// stats is the run's running accounts: areas under the busy-GPU, up-GPU
// and queue-length curves (for utilisation and Little's law), and the time
// series.
type stats struct {
	every    int64 // sample interval
	last     int64 // absolute time the areas were last brought up to date
	busyGPUs int64
	upGPUs   int64
	running  int64
	queued   []int64 // by tier

	busyArea, upArea float64   // GPU-ns from the warm-up to the end of arrivals
	queuedArea       []float64 // job-ns from the warm-up to the end, by tier

	// since the last sample
	sBusy, sUp float64
	sRefused   []int64
	sAdmitted  []int64
	series     Series
	crashes    int
	failovers  int
}

func (s *stats) init(e *engine) {
	n := len(e.tiers)
	s.queued = make([]int64, n)
	s.queuedArea = make([]float64, n)
	s.sRefused = make([]int64, n)
	s.sAdmitted = make([]int64, n)
	s.last = e.base
	for i := range e.execs {
		s.upGPUs += int64(e.execs[i].gpus)
	}
	s.every = int64(e.w.Sample)
	if s.every == 0 {
		span := int64(time.Hour)
		if e.stopAt != never {
			span = e.stopAt - e.base
		}
		s.every = max(int64(time.Second), span/200)
	}
	s.series.Tiers = e.tiers
	s.series.Queued = make([][]int64, n)
	s.series.Rejected = make([][]int64, n)
	s.series.Admitted = make([][]int64, n)
}

// advance brings the areas up to now.
func (s *stats) advance(e *engine) {
	now := e.now
	if now <= s.last {
		return
	}
	dt := float64(now - s.last)
	s.sBusy += float64(s.busyGPUs) * dt
	s.sUp += float64(s.upGPUs) * dt
	if now > e.warmAt {
		from := max(s.last, e.warmAt)
		w := float64(now - from)
		for i, q := range s.queued {
			s.queuedArea[i] += float64(q) * w
		}
		// Utilisation is over the load window only: from the warm-up to
		// the end of arrivals, not the drain after it.
		if to := min(now, e.stopAt); to > from {
			s.busyArea += float64(s.busyGPUs) * float64(to-from)
			s.upArea += float64(s.upGPUs) * float64(to-from)
		}
	}
	s.last = now
}

func (s *stats) admitted(e *engine, j *simJob) {
	s.advance(e)
	t := &e.tenants[j.tenant]
	s.queued[t.tierIdx]++
	s.sAdmitted[t.tierIdx]++
	if j.measured {
		m := &e.models[j.model]
		t.tally.demandNs += float64(j.gpus) * float64(m.spec.Service.Mean)
	}
}

func (s *stats) dequeued(e *engine, j *simJob) {
	s.advance(e)
	s.queued[e.tenants[j.tenant].tierIdx]--
}

func (s *stats) requeued(e *engine, j *simJob) {
	s.advance(e)
	s.queued[e.tenants[j.tenant].tierIdx]++
}

func (s *stats) refusal(e *engine, tier int32) { s.sRefused[tier]++ }

func (s *stats) busy(e *engine, gpus int32) {
	s.advance(e)
	s.busyGPUs += int64(gpus)
	if gpus > 0 {
		s.running++
	} else {
		s.running--
	}
}

func (s *stats) up(e *engine, gpus int32) {
	s.advance(e)
	s.upGPUs += int64(gpus)
}

// ran credits a job's tenant with the GPU time of [from, to] inside the
// window.
func (s *stats) ran(e *engine, j *simJob, from, to int64) {
	from = max(from, e.warmAt)
	if to <= from {
		return
	}
	e.tenants[j.tenant].tally.gpuNs += float64(j.gpus) * float64(to-from)
}

func (s *stats) sample(e *engine) {
	s.advance(e)
	x := &s.series
	x.T = append(x.T, secs(e.now-e.base))
	util := 0.0
	if s.sUp > 0 {
		util = s.sBusy / s.sUp
	}
	if len(x.T) == 1 {
		util = 0
	}
	x.Utilisation = append(x.Utilisation, round6(util))
	x.Running = append(x.Running, s.running)
	x.UpGPUs = append(x.UpGPUs, s.upGPUs)
	for i := range s.queued {
		x.Queued[i] = append(x.Queued[i], s.queued[i])
		x.Rejected[i] = append(x.Rejected[i], s.sRefused[i])
		x.Admitted[i] = append(x.Admitted[i], s.sAdmitted[i])
		s.sRefused[i], s.sAdmitted[i] = 0, 0
	}
	s.sBusy, s.sUp = 0, 0
}

// sortNs sorts durations in nanoseconds, as slices.Sort would: a radix sort
// of 16-bit digits for long slices (a report sorts a million waits more than
// once; pdqsort cost the simulator 4 % of a run), slices.Sort for short ones.
func sortNs(a []int64) {
	if len(a) < 1<<12 {
		slices.Sort(a)
		return
	}
	if slices.IsSorted(a) { // a tier of one tenant: its waits, sorted already
		return
	}
	key := func(x int64) uint64 { return uint64(x) ^ 1<<63 } // negative before positive
	var lo, hi uint64 = math.MaxUint64, 0
	for _, x := range a {
		lo, hi = min(lo, key(x)), max(hi, key(x))
	}
	buf := make([]int64, len(a))
	src, dst := a, buf
	for shift := uint(0); shift < 64; shift += 16 {
		if (lo^hi)>>shift == 0 {
			break // every key has the same digits from here up
		}
		var count [1 << 16]int
		for _, x := range src {
			count[key(x)>>shift&0xFFFF]++
		}
		sum := 0
		for d, c := range count {
			count[d] = sum
			sum += c
		}
		for _, x := range src {
			d := key(x) >> shift & 0xFFFF
			dst[count[d]] = x
			count[d]++
		}
		src, dst = dst, src
	}
	if &src[0] != &a[0] {
		copy(a, src)
	}
}
