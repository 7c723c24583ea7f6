// Package admission is the leader's Submit sequence (Precheck, the log
// entry, Applied) and its book of executors (Fleet, which also chooses an
// assignment's GPU ids), one for the server (node, with its raft log) and
// the simulator (sim, with its virtual one), so that the two cannot disagree.
// See docs/architecture.md.
package admission

import (
	"errors"
	"math"
	"math/rand/v2"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluicehq/sluice/fsm"
	"github.com/sluicehq/sluice/limiter"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/scheduler"
)

// Method is what a Submit is charged as (rules with match.method Submit,
// and concurrency caps, which only Submits hold).
const Method = "Submit"

// Executors is what the sequence asks of the executors the leader knows.
type Executors interface {
	// Slots is how many slots of the executors up serve model, and how
	// many of them are idle.
	Slots(model string) (total, free int)
	// Unplaceable says why no connected executor could ever run a job of
	// model that needs gpus GPUs with memMB MiB each; "" when one could.
	Unplaceable(model string, gpus int32, memMB int64) string
	// Service is the leader's learned service time of model (mean and
	// deviation: scheduler.ServiceTime), def's when none was learned.
	Service(model string, def time.Duration) (mean, sd time.Duration)
	// Share is the share of the slots serving other that also serve
	// model: about the share of other's queued jobs that model's slots
	// will run.
	Share(model, other string) float64
	// Lanes is every slot of the executors up that serve model: free, or
	// what its attempt is expected to take (by the job's size where its
	// model is sized: Sizing) and how long it has run. nil where not
	// known; QueuedETA then counts the slots only.
	Lanes(model string) []scheduler.Lane
}

// Submit is one Submit as the leader sees it: who asks (its tenant, the
// hash of its API key and its IP) and what, with the CHALLENGE rules its
// pass or answer exempts it from and the answered challenge to spend.
type Submit struct {
	Tenant           *sluicev1.Tenant
	APIKey, ClientIP string
	Spec             *sluicev1.JobSpec
	Exempt           []string
	Spend            *raftv1.ChallengeSpend
}

// Command is the log command that admits s.
func (s *Submit) Command() *raftv1.Submit {
	c := &raftv1.Submit{}
	s.Fill(c)
	return c
}

// Fill makes c the log command that admits s (the simulator reuses one).
func (s *Submit) Fill(c *raftv1.Submit) {
	c.Tenant, c.Spec, c.ApiKeySha256, c.ClientIp, c.Method, c.Exempt, c.Spend = s.Tenant.Name, s.Spec, s.APIKey, s.ClientIP, Method, s.Exempt, s.Spend
}

// Outcome is what a step decided.
type Outcome uint8

const (
	// Proceed: Precheck found no reason to refuse; propose Submit.Command.
	Proceed Outcome = iota
	// Admitted: the entry admitted the job (Verdict.JobID; Deduplicated
	// when an idempotency key matched an earlier job).
	Admitted
	// Rejected: a rate limit refused (Rule, RetryAt, Rules, Detail).
	Rejected
	// Challenged: a CHALLENGE rule refused; answering its challenge admits
	// (Rule, RetryAt, Rules).
	Challenged
	// Replayed: the answered challenge was answered before, or expired by
	// the time the entry applied (Expired); Rule names its rules, Detail says.
	Replayed
	// Unplaceable: no connected executor could ever run it (Why).
	Unplaceable
	// Busy: a backpressure bound (Busy; Wait is the wait predicted).
	Busy
	// Failed: another error of the state machine (Err).
	Failed
)

// Verdict is a step's decision, with what its outcome needs.
type Verdict struct {
	Outcome Outcome
	Rule    string
	// RetryAt is when the request would fit (unix ns); limiter.Never when
	// it never will, 0 when unknown.
	RetryAt int64
	// Rules is every matched rule's part of the decision (Precheck's alias
	// the caller's Decision).
	Rules        []limiter.RuleResult
	Detail       string
	Expired      bool
	Why          string
	Busy         *scheduler.BusyError
	Wait         time.Duration
	JobID        uint64
	Deduplicated bool
	Err          error
}

// Plan is what a policy asks of Precheck, read once per policy (the
// simulator runs one; the server reads it when the policy changes).
type Plan struct {
	limits            bool // the policy has rules
	refuseUnplaceable bool
	bounds            bool // some backpressure bound is set
	predictWait       bool // scheduling.max_predicted_wait is set
}

// PlanFor is p's Plan.
func PlanFor(p *sluicev1.Policy) Plan {
	s := p.GetScheduling()
	pl := Plan{limits: len(p.GetRules()) > 0, refuseUnplaceable: s.GetRefuseUnplaceable(), predictWait: s.GetMaxPredictedWait().AsDuration() > 0}
	pl.bounds = pl.predictWait || s.GetMaxQueued() > 0 || s.GetMaxQueuedPerTenant() > 0 || s.GetMaxQueuedPerModel() > 0
	for _, t := range p.GetTenants() {
		pl.bounds = pl.bounds || t.GetMaxQueued() > 0
	}
	return pl
}

// State is what admission reads of the state machine (fsm.Reads): the
// server passes its state under its lock, one call at a time; the
// simulator the state machine's Reads.
type State interface {
	Policy() *sluicev1.Policy
	Model(name string) (*sluicev1.Model, bool)
	CheckLimitsInto(req limiter.Request, now int64, d *limiter.Decision)
	CheckBackpressure(tenant string, spec *sluicev1.JobSpec, predictedWait int64) error
	ReserveCost(spec *sluicev1.JobSpec, m *sluicev1.Model) int64
	QueueLen() int
	QueuedOfModel(model string) int
	AheadOf(id uint64, each func(model string, n int)) bool
	CountAhead(id uint64, limit int, each func(model string, n int)) bool
	Behind(id uint64) (lead, backlog, weight int64, ok bool)
	EachAhead(id uint64, limit int, each func(model string, input *structpb.Struct)) bool
}

// Precheck is the leader's read-only look at s at now, before its log
// entry, deciding into d (the caller's scratch: a Decision is 2 KB). model
// is the spec's model, from the policy; sizes the leader's run times by
// size (nil: none).
func Precheck(f State, x Executors, plan Plan, s *Submit, model *sluicev1.Model, now int64, d *limiter.Decision, sizes *Sizing) Verdict {
	spec := s.Spec
	if plan.limits {
		f.CheckLimitsInto(limiter.Request{Tenant: s.Tenant.Name, APIKey: s.APIKey, Tier: s.Tenant.Tier, ClientIP: s.ClientIP,
			Method: Method, Model: spec.GetModel(), Cost: f.ReserveCost(spec, model), Exempt: s.Exempt}, now, d)
		switch d.Verdict {
		case limiter.Rejected:
			return Verdict{Outcome: Rejected, Rule: d.Rule, RetryAt: d.RetryAt, Rules: d.Rules()}
		case limiter.Challenged:
			return Verdict{Outcome: Challenged, Rule: d.Rule, RetryAt: d.RetryAt, Rules: d.Rules()}
		}
	}
	if plan.refuseUnplaceable {
		if why := x.Unplaceable(spec.GetModel(), fsm.JobGPUs(spec, model), fsm.JobGPUMemory(spec, model)); why != "" {
			return Verdict{Outcome: Unplaceable, Why: why}
		}
	}
	if !plan.bounds {
		return Verdict{Outcome: Proceed}
	}
	// The predicted wait decides max_predicted_wait, and scales a queue
	// bound's retry hint (scheduler.FairQueue.CheckAdmission).
	wait := PredictedWait(f, x, model, sizes)
	var be *scheduler.BusyError
	if errors.As(f.CheckBackpressure(s.Tenant.Name, spec, int64(wait)), &be) {
		return Verdict{Outcome: Busy, Busy: be, Wait: wait}
	}
	return Verdict{Outcome: Proceed}
}

// PredictedWait is the leader's estimate of a new job's wait: behind every
// queued job of its model, on the slots that serve it.
func PredictedWait(f State, x Executors, model *sluicev1.Model, sizes *Sizing) time.Duration {
	if sizes != nil && f.QueueLen() <= MaxSizedAhead {
		// Behind every queued job its slots run (up to MaxSizedAhead), each
		// for its predicted run time.
		if jobs, ok := jobsAhead(f, 0); ok {
			if b, ok := lanesETA(f, x, 0, model.GetName(), sizes, jobs, 0, 0); ok {
				return b.P50
			}
		}
	}
	total, free := x.Slots(model.GetName())
	mean, _ := x.Service(model.GetName(), model.GetDefaultDuration().AsDuration())
	return max(scheduler.WaitBehind(f.QueuedOfModel(model.GetName())+1, total, free, mean), 0)
}

// QueuedETA is a queued job's ETA and band as the leader answers it (the
// server's GetJob and the simulator's honesty measure alike): the work of
// the jobs ahead of it that its model's slots will run, of any model, on
// those slots (scheduler.WaitBandAhead): the model's band, which the
// caller calibrates (ETA). Where at most MaxSizedAhead are ahead, they are
// the jobs that the fair queue's tiers would dispatch before it
// (State.EachAhead), else those ahead in queue order (State.AheadOf);
// where sizes predicts their run times from their inputs, it is list
// scheduling of those jobs instead (lanesETA). Where fewer jobs are ahead
// than slots serve it, it starts when one of the attempts running now
// ends, and its wait is drawn from how long each has run
// (scheduler.SampledWait over Executors.Lanes). A job past its tier's
// virtual time waits at least until the tier's fair sharing reaches it
// (scheduler.FairShareWait, on the slots the other tiers leave) while
// other tenants of its tier wait too: the band moves to that. ok is false
// when it is not queued or no slot serves it.
func QueuedETA(f State, x Executors, id uint64, model *sluicev1.Model, overtaking func(slots int) float64, sizes *Sizing) (scheduler.Band, bool) {
	b, _, ok := QueuedPlace(f, x, id, model, overtaking, sizes)
	return b, ok
}

// QueuedPlace is QueuedETA with the job's place in line: 1 + how many of
// its model's jobs the fair queue's tiers would dispatch before it (the
// order its ETA counts; State.Position's queue order can put a tier's
// tenants back from idle ahead of jobs that go first), 0 where that was
// not projected (more than MaxSizedAhead ahead, or not ready).
func QueuedPlace(f State, x Executors, id uint64, model *sluicev1.Model, overtaking func(slots int) float64, sizes *Sizing) (scheduler.Band, int, bool) {
	var counts []modelCount
	ahead := 0
	if !f.AheadOf(id, func(m string, n int) {
		if n > 0 {
			counts = append(counts, modelCount{m, n})
			ahead += n
		}
	}) {
		return scheduler.Band{}, 0, false
	}
	total, free := x.Slots(model.GetName())
	over := 0.0
	if overtaking != nil && total > 0 {
		over = overtaking(total)
	}
	b, place, ok := modelETA(f, x, id, model, counts, ahead, total, free, over, sizes)
	if !ok || b.P90 <= 0 {
		return b, place, ok
	}
	// Only while other tenants of its tier wait: alone, its own jobs ahead
	// are all that holds it, and the model counts them by their run times.
	if lead, backlog, weight, ok := f.Behind(id); ok && lead > 0 && backlog > weight {
		slots := max(float64(total)-over, 0.1*float64(total))
		if w := scheduler.FairShareWait(lead, backlog, slots); w > b.P50 {
			// The band moves with its point (scaling it would blow a band
			// around a first slot due in a millisecond up a thousandfold).
			d := w - b.P50
			b = scheduler.Band{P10: b.P10 + d, P50: w, P90: satAdd(b.P90, d)}
		}
	}
	return b, place, true
}

// etaDraws is what job id's drawn wait draws from: seeded by its id, so
// that the same state tells it the same band, on the server and in the
// simulator alike.
func etaDraws(id uint64) *rand.Rand { return rand.New(rand.NewPCG(id, 0x5a1ce)) }

// satAdd is a + b for durations ≥ 0, at most the largest Duration.
func satAdd(a, b time.Duration) time.Duration {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// modelETA is QueuedPlace's band before the fair sharing's, and the
// place: counts are the jobs ahead in queue order, ahead their sum.
func modelETA(f State, x Executors, id uint64, model *sluicev1.Model, counts []modelCount, ahead, total, free int, over float64, sizes *Sizing) (b scheduler.Band, place int, ok bool) {
	name := model.GetName()
	mean, sd := x.Service(name, model.GetDefaultDuration().AsDuration())
	if ahead <= MaxSizedAhead {
		reached := true // a projection past MaxSizedAhead is not walked twice
		if sizes != nil {
			var jobs []aheadJob
			if jobs, reached = jobsAhead(f, id); reached {
				place = 1
				for _, j := range jobs {
					if j.model == name {
						place++
					}
				}
				if b, ok := lanesETA(f, x, id, name, sizes, jobs, over, sd); ok {
					return b, place, true
				}
			}
		}
		var projected []modelCount
		if reached && f.CountAhead(id, MaxSizedAhead, func(m string, n int) { projected = append(projected, modelCount{m, n}) }) {
			counts, place = projected, 1
			for _, c := range projected {
				if c.model == name {
					place += c.n
				}
			}
		}
	}
	// Each model's jobs ahead, by the share of its slots that serve this
	// one, for their model's run time (this one's, for a model the policy
	// no longer has).
	type part struct {
		n   float64 // jobs, by share
		run scheduler.RunTime
	}
	parts := make([]part, len(counts))
	var n, work float64
	for i, c := range counts {
		share, r := 1.0, scheduler.RunTime{Mean: mean, SD: sd}
		if c.model != name {
			share = x.Share(name, c.model)
			if om, ok := f.Model(c.model); ok {
				r.Mean, r.SD = x.Service(c.model, om.GetDefaultDuration().AsDuration())
			}
		}
		parts[i] = part{float64(c.n) * share, r}
		n += parts[i].n
		work += parts[i].n * float64(r.Mean)
	}
	b, ok = scheduler.WaitBandAhead(n, work, total, free, over, mean, sd)
	if !ok || b.P90 <= 0 || n >= float64(total) {
		return b, place, ok
	}
	// It starts when one of the attempts running now ends: drawn, from how
	// long each has run. The jobs ahead are n, rounded as a whole (each
	// model's share rounded alone could come to none while n says it
	// waits), model by model.
	lanes := x.Lanes(name)
	if len(lanes) == 0 {
		return b, place, ok
	}
	var jobs []scheduler.RunTime
	sum := 0.0
	for _, p := range parts {
		sum += p.n
		for len(jobs) < int(math.Round(sum)) {
			jobs = append(jobs, p.run)
		}
	}
	return scheduler.SampledWait(lanes, jobs, over, etaDraws(id)), place, true
}

// Sizing is the leader's run times predicted from jobs' inputs (package
// predict), for QueuedETA.
type Sizing struct {
	// Predictor is the predictor of model's jobs, nil when they are not
	// predicted by their size. A predictor says false for an input it
	// cannot size (a field missing). QueuedETA calls both outside the
	// state's reads (the jobs ahead are collected first).
	Predictor func(model string) func(input *structpb.Struct) (scheduler.RunTime, bool)
}

// modelCount is how many jobs of a model are ahead of one.
type modelCount struct {
	model string
	n     int
}

// aheadJob is a job ahead of one, as State.EachAhead gives it.
type aheadJob struct {
	model string
	input *structpb.Struct
	told  *toldRun // where a list's rows share it: its run time, once told
}

// toldRun is a job's run time as lanesETA took it, once it has.
type toldRun struct {
	run   scheduler.RunTime
	known bool
}

// jobsAhead is the jobs before id (0: every queued job) in dispatch order,
// false past MaxSizedAhead (State.EachAhead).
func jobsAhead(f State, id uint64) ([]aheadJob, bool) {
	if l, ok := f.(*listState); ok {
		if jobs, reached, ok := l.ahead(id, MaxSizedAhead); ok {
			return jobs, reached // shared by the list's rows, read only
		}
	}
	var jobs []aheadJob
	ok := f.EachAhead(id, MaxSizedAhead, func(m string, input *structpb.Struct) {
		jobs = append(jobs, aheadJob{model: m, input: input})
	})
	return jobs, ok
}

// MaxSizedAhead is the most jobs ahead (or queued, for PredictedWait)
// whose dispatch order is projected and inputs read: past it, queue order
// and the models' averages stand.
const MaxSizedAhead = 2000

// lanesETA is a queued job's ETA where each job's run time is predicted: the
// jobs ahead of it, in dispatch order, each go to the slot that is free
// first (list scheduling), and it starts when the next one is; the slots
// the other tiers' arrivals take meanwhile (over) stretch that. Where it
// starts when one of the attempts running now ends, and id is a queued
// job's (not 0: PredictedWait's new one), its wait is drawn
// (scheduler.SampledWait). false when no slot serves it.
func lanesETA(f State, x Executors, id uint64, name string, sizes *Sizing, jobs []aheadJob, over float64, sd time.Duration) (scheduler.Band, bool) {
	lanes := x.Lanes(name)
	if len(lanes) == 0 {
		return scheduler.Band{}, false
	}
	// How each model's jobs ahead count: those mostly run elsewhere not at
	// all, the others for their predicted run time (else their model's).
	type how struct {
		predict func(*structpb.Struct) (scheduler.RunTime, bool)
		run     scheduler.RunTime
	}
	hows := map[string]how{}
	for _, m := range f.Policy().GetModels() {
		if m.Name != name && x.Share(name, m.Name) < 0.5 {
			continue
		}
		h := how{}
		h.run.Mean, h.run.SD = x.Service(m.Name, m.GetDefaultDuration().AsDuration())
		if sizes.Predictor != nil {
			h.predict = sizes.Predictor(m.Name)
		}
		hows[m.Name] = h
	}
	ahead := make([]scheduler.RunTime, 0, len(jobs))
	for i := range jobs {
		j := &jobs[i]
		h, ok := hows[j.model]
		if !ok {
			continue
		}
		if j.told != nil && j.told.known {
			ahead = append(ahead, j.told.run)
			continue
		}
		r := h.run
		if h.predict != nil {
			if p, ok := h.predict(j.input); ok {
				r = p
			}
		}
		if j.told != nil {
			*j.told = toldRun{r, true}
		}
		ahead = append(ahead, r)
	}
	if id != 0 && len(ahead) < len(lanes) {
		// It starts when one of the attempts running now ends (as modelETA).
		return scheduler.SampledWait(lanes, ahead, over, etaDraws(id)), true
	}
	left := make([]time.Duration, len(lanes))
	for i, l := range lanes {
		left[i] = l.Left()
	}
	means := make([]time.Duration, len(ahead))
	for i, r := range ahead {
		means[i] = r.Mean
	}
	return scheduler.LanesBand(left, means, over, sd), true
}

// ETA is the band a queued job of tier is told: the model's band (QueuedETA)
// calibrated by how the leader's ETAs have fared (cal), and no earlier than
// readyIn (its not_before, a backoff).
func ETA(cal *scheduler.ETACalibration, tier string, model scheduler.Band, readyIn time.Duration) scheduler.Band {
	return cal.Band(tier, model).NotBefore(readyIn)
}

// TierShares is the policy's tiers as TierLoad.Overtaking takes them.
func TierShares(p *sluicev1.Policy) map[string]scheduler.TierShare {
	out := make(map[string]scheduler.TierShare, len(p.GetTiers()))
	for _, t := range p.GetTiers() {
		out[t.Name] = scheduler.TierShare{Weight: t.Weight, Strict: t.Strict}
	}
	return out
}

// Applied is what a Submit's applied entry decided.
func Applied(res fsm.Result) Verdict {
	var le *fsm.LimitError
	var be *scheduler.BusyError
	switch {
	case res.Err == nil:
		return Verdict{Outcome: Admitted, JobID: res.JobID, Deduplicated: res.Deduplicated, Rules: res.Limits}
	case errors.As(res.Err, &le):
		v := Verdict{Outcome: Rejected, Rule: le.Rule, RetryAt: le.RetryAt, Rules: res.Limits, Detail: le.Detail}
		switch le.Verdict {
		case fsm.VerdictChallenged:
			v.Outcome = Challenged
		case fsm.VerdictReplayed, fsm.VerdictExpired:
			v.Outcome, v.Expired = Replayed, le.Verdict == fsm.VerdictExpired
		}
		return v
	case errors.As(res.Err, &be):
		return Verdict{Outcome: Busy, Busy: be}
	}
	return Verdict{Outcome: Failed, Err: res.Err}
}
