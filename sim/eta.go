package sim

import (
	"time"

	"github.com/sluicehq/sluice/admission"
	"github.com/sluicehq/sluice/scheduler"
)

// ETA honesty (issue 22): each measured job's Submit answer carries an ETA
// with a p10–p90 band, computed as the server computes it (node's eta:
// scheduler.WaitBand over the job's place in line, the slots that serve its
// model and the learned service time); when the job first starts, the
// simulator sees how it fared.

// etaErrFloor is the least wait a relative error is taken against.
const etaErrFloor = int64(scheduler.ETAErrorFloor)

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
	base              [3]int64 // the baseline's p10, p50, p90 (sized workloads)
	model             int64    // the model's p50, before the calibration (ETAFloor)
}

// etaTally is the ETAs of one tier's (or every) followed job.
type etaTally struct {
	n                int64
	errs             [etaBins]int64 // histogram of |eta - wait| / max(wait, etaErrFloor)
	told, inBand     int64          // jobs told to wait (a band), and those that started inside it
	early, late      int64          // and those that started before it, after it
	toldErrs         [etaBins]int64 // errs of those
	atOnce, atOnceOK int64          // jobs told they start at once, and those that did (within etaErrFloor)
}

// noteETA gives a just-admitted job the ETA its Submit's answer would
// carry, and follows it as the leader does: for the calibration (the jobs
// ETACalibration.Follows picks), and for the honesty figures (a measured
// job: all of the first etaEvery, then one in etaSample).
func (e forecasts) noteETA(j *simJob) {
	tier := e.tenants[j.tenant].tier
	follow := e.cal.Follows(j.id, tier) || (e.sized && e.calBase.Follows(j.id, tier))
	honest := j.measured && (e.etaNoted < etaEvery || j.id%etaSample == 0)
	if !follow && !honest {
		return
	}
	var readyIn time.Duration
	if j.delayed {
		if rec, ok := e.r.Job(j.id); ok {
			readyIn = time.Duration(rec.ReadyNs - e.now)
		}
	}
	overtaking := func(slots int) float64 { return e.tierLoad.Overtaking(tier, e.tierShares, slots, e.now) }
	raw, ok := admission.QueuedETA(&e.r, simExecutors{e: e.engine}, j.id, e.models[j.model].policy, overtaking, e.sizing())
	if !ok {
		return
	}
	e.cal.Told(j.id, tier, raw, readyIn, e.now)
	var base scheduler.Band // the baseline's: the models' average run times
	if e.sized {
		if base, ok = admission.QueuedETA(&e.r, simExecutors{e: e.engine, averages: true}, j.id, e.models[j.model].policy, overtaking, nil); ok {
			e.calBase.Told(j.id, tier, base, readyIn, e.now)
		}
	}
	if !honest {
		return
	}
	weight := int32(1)
	if e.etaNoted >= etaEvery {
		weight = etaSample
	}
	e.etaNoted++
	b := admission.ETA(&e.cal, tier, raw, readyIn)
	if e.etaNotes == nil {
		e.etaNotes = map[uint64]etaNote{}
	}
	note := etaNote{at: e.now, p10: int64(b.P10), p50: int64(b.P50), p90: int64(b.P90), weight: weight, model: int64(raw.P50)}
	if e.sized {
		bb := admission.ETA(&e.calBase, tier, base, readyIn)
		note.base = [3]int64{int64(bb.P10), int64(bb.P50), int64(bb.P90)}
	}
	e.etaNotes[j.id] = note
	j.eta = true
}

// etaFared counts a job's first start against the ETA it was given.
func (e forecasts) etaFared(j *simJob) {
	note := e.etaNotes[j.id]
	delete(e.etaNotes, j.id)
	j.eta = false
	wait := e.now - note.at
	if e.opt.onETA != nil {
		e.opt.onETA(etaSeen{id: j.id, tier: e.tenants[j.tenant].tier, at: note.at, p10: note.p10, p50: note.p50, p90: note.p90, wait: wait, model: note.model})
	}
	if fr := e.opt.fork; fr != nil && j.id == fr.job {
		e.forkEnded(wait)
	}
	ti := e.tenants[j.tenant].tierIdx
	tallyETA(note.p10, note.p50, note.p90, wait, int64(note.weight), &e.etaTiers[ti], &e.etaAll)
	if e.sized {
		tallyETA(note.base[0], note.base[1], note.base[2], wait, int64(note.weight), &e.etaBaseTiers[ti], &e.etaBaseAll)
	}
}

// tallyETA counts an ETA of p10–p50–p90 that waited wait, standing for w
// jobs, in a tier's tally t and the cluster's all.
func tallyETA(p10, p50, p90, wait, w int64, t, all *etaTally) {
	bin := min(int(etaErr(p50, wait)/etaBinWidth+0.5), etaBins-1)
	fared := scheduler.ETAFared(time.Duration(p10), time.Duration(p90), time.Duration(wait))
	for _, et := range []*etaTally{t, all} {
		et.n += w
		et.errs[bin] += w
		switch fared {
		case scheduler.ETAAtOnce, scheduler.ETAAtOnceLate: // no band to be inside
			et.atOnce += w
			if fared == scheduler.ETAAtOnce {
				et.atOnceOK += w
			}
			continue
		case scheduler.ETAEarly:
			et.early += w
		case scheduler.ETALate:
			et.late += w
		default:
			et.inBand += w
		}
		et.told += w
		et.toldErrs[bin] += w
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
// 16 times; Jobs is the jobs they stand for): the absolute relative
// error's p50 and p90 (against the real wait, waits under 1 s taken as
// 1 s; to 0.5 %); of the jobs told to wait (Waited: a p10–p90 band), the
// share that started inside their band (80 % if the band were exact) and
// their error, and the shares that started before it (Early) and after it
// (Late); of the others, told they start at once, the share that did
// (within a second).
type ETAHonesty struct {
	Jobs          int64   `json:"jobs"`
	ErrP50        float64 `json:"error_p50"`
	ErrP90        float64 `json:"error_p90"`
	Waited        int64   `json:"waited"`
	InBand        float64 `json:"in_band"`
	Early         float64 `json:"early"`
	Late          float64 `json:"late"`
	WaitedErrP50  float64 `json:"waited_error_p50"`
	WaitedErrP90  float64 `json:"waited_error_p90"`
	AtOnce        int64   `json:"at_once"`
	AtOnceStarted float64 `json:"at_once_started"`
	// Baseline is the same jobs' ETAs by the models' average run times,
	// where some model predicts its jobs' by their size (issue 28).
	Baseline *ETAHonesty `json:"baseline,omitempty"`
}

func (t *etaTally) honesty() *ETAHonesty {
	if t.n == 0 {
		return nil
	}
	q := func(h *[etaBins]int64, n int64, p float64) float64 {
		rank, seen := int64(p*float64(n-1)), int64(0)
		for i, c := range h {
			if seen += c; seen > rank {
				return round6(float64(i) * etaBinWidth)
			}
		}
		return round6(float64(etaBins-1) * etaBinWidth)
	}
	h := &ETAHonesty{Jobs: t.n, ErrP50: q(&t.errs, t.n, 0.5), ErrP90: q(&t.errs, t.n, 0.9), Waited: t.told, AtOnce: t.atOnce}
	if t.told > 0 {
		h.InBand = round6(float64(t.inBand) / float64(t.told))
		h.Early, h.Late = round6(float64(t.early)/float64(t.told)), round6(float64(t.late)/float64(t.told))
		h.WaitedErrP50, h.WaitedErrP90 = q(&t.toldErrs, t.told, 0.5), q(&t.toldErrs, t.told, 0.9)
	}
	if t.atOnce > 0 {
		h.AtOnceStarted = round6(float64(t.atOnceOK) / float64(t.atOnce))
	}
	return h
}

// Share is the share of other's slots (executors up) that also serve
// model, as node's registry counts it.
func (x simExecutors) Share(model, other string) float64 { return x.e.fleet.Share(model, other) }
