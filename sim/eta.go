package sim

import (
	"time"

	"github.com/sluicehq/sluice/admission"
)

// ETA honesty (issue 22): each measured job's Submit answer carries an ETA
// with a p10–p90 band, computed as the server computes it (node's eta:
// scheduler.WaitBand over the job's place in line, the slots that serve its
// model and the learned service time); when the job first starts, the
// simulator sees how it fared.

// etaErrFloor is the least wait a relative error is taken against: a job
// promised "now" that starts 300 ms later is not 100 % wrong.
const etaErrFloor = int64(time.Second)

// The ETAs of the first etaEvery measured jobs are all followed, then one
// job in etaSample (by id, so that a run stays a function of its seed),
// which counts for etaSample jobs: enough for the figures, and the
// simulator's speed keeps what an ETA per job would cost it (the job's
// place in line, ~10 % on M/M/4).
const (
	etaEvery  = 20_000
	etaSample = 16
)

// etaBins is the resolution of the error histogram: 0.5 % per bin up to
// 1000 %, the last bin holding everything over.
const (
	etaBinWidth = 0.005
	etaBins     = 2001
)

// etaNote is a followed job's ETA: when it was given (absolute), its band,
// and how many jobs it stands for.
type etaNote struct {
	at, p10, p50, p90 int64
	weight            int32
}

// etaTally is the ETAs of one tier's (or every) followed job.
type etaTally struct {
	n, inBand int64
	errs      [etaBins]int64 // histogram of |eta - wait| / max(wait, etaErrFloor)
}

// noteETA gives a just-admitted job the ETA its Submit's answer would carry.
func (e *engine) noteETA(j *simJob) {
	if e.etaNoted >= etaEvery && j.id%etaSample != 0 {
		return
	}
	weight := int32(1)
	if e.etaNoted >= etaEvery {
		weight = etaSample
	}
	e.etaNoted++
	var readyIn time.Duration
	if j.delayed {
		if rec, ok := e.f.Job(j.id); ok {
			readyIn = time.Duration(rec.ReadyNs - e.now)
		}
	}
	tier := e.tenants[j.tenant].tier
	b, ok := admission.QueuedETA(e.f, simExecutors{e}, j.id, e.models[j.model].policy, readyIn, func(slots int) float64 {
		return e.tierLoad.Overtaking(tier, e.tierShares, slots, e.now)
	})
	if !ok {
		return
	}
	if e.etaNotes == nil {
		e.etaNotes = map[uint64]etaNote{}
	}
	e.etaNotes[j.id] = etaNote{at: e.now, p10: int64(b.P10), p50: int64(b.P50), p90: int64(b.P90), weight: weight}
	j.eta = true
}

// etaFared counts a job's first start against the ETA it was given.
func (e *engine) etaFared(j *simJob) {
	note := e.etaNotes[j.id]
	delete(e.etaNotes, j.id)
	j.eta = false
	wait := e.now - note.at
	t := &e.etaTiers[e.tenants[j.tenant].tierIdx]
	in := note.p10 <= wait && wait <= note.p90
	bin := min(int(float64(abs(note.p50-wait))/float64(max(wait, etaErrFloor))/etaBinWidth+0.5), etaBins-1)
	w := int64(note.weight)
	for _, et := range []*etaTally{t, &e.etaAll} {
		et.n += w
		if in {
			et.inBand += w
		}
		et.errs[bin] += w
	}
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// ETAHonesty is how the ETAs given at submission fared, over the jobs that
// started (every one of the first 20,000 measured, then one in 16 counted
// 16 times; Jobs is the jobs they stand for): the
// share that started inside their p10–p90 band (80 % if the band were
// exact), and the absolute relative error's p50 and p90 (against the real
// wait, waits under 1 s taken as 1 s; to 0.5 %).
type ETAHonesty struct {
	Jobs   int64   `json:"jobs"`
	InBand float64 `json:"in_band"`
	ErrP50 float64 `json:"error_p50"`
	ErrP90 float64 `json:"error_p90"`
}

func (t *etaTally) honesty() *ETAHonesty {
	if t.n == 0 {
		return nil
	}
	q := func(p float64) float64 {
		rank, seen := int64(p*float64(t.n-1)), int64(0)
		for i, c := range t.errs {
			if seen += c; seen > rank {
				return round6(float64(i) * etaBinWidth)
			}
		}
		return round6(float64(etaBins-1) * etaBinWidth)
	}
	return &ETAHonesty{Jobs: t.n, InBand: round6(float64(t.inBand) / float64(t.n)), ErrP50: q(0.5), ErrP90: q(0.9)}
}

// Share is the share of other's slots (executors up) that also serve
// model, as node's registry counts it.
func (x simExecutors) Share(model, other string) float64 { return x.e.fleet.Share(model, other) }
