package sim

import (
	"fmt"
	"sort"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluicehq/sluice/admission"
	"github.com/sluicehq/sluice/fsm"
	"github.com/sluicehq/sluice/limiter"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/scheduler"
)

// pendingSubmit is a submission waiting to be sent: a client retrying, or
// one held while no leader is up.
type pendingSubmit struct {
	tenant  int32
	model   int32
	input   *structpb.Struct // its size, where its model's jobs have one
	base    int64            // the run time that size makes (sizer.draw)
	arrived int64            // offset
	attempt int
	rule    string // why the last attempt was refused
	answer  string // the CHALLENGE rule whose challenge this attempt answers
	expires int64  // when that challenge expires
}

// scheduleArrival schedules tenant ti's next arrival, if any comes before
// arrivals stop.
func (e clients) scheduleArrival(ti int32) {
	t := &e.tenants[ti]
	at, model, ok := t.arrivals.draw()
	if !ok || e.base+at >= e.stopAt {
		return
	}
	e.ev.push(event{at: e.base + at, kind: evArrive, a: ti, b: model})
}

func (e clients) arrive(ev event) error {
	if e.stopped {
		return nil
	}
	ti := ev.a
	t := &e.tenants[ti]
	model := ev.b
	if model < 0 {
		model = t.spec.mixIdx[0]
		if len(t.spec.mixIdx) > 1 {
			u := t.mix.Float64()
			k := sort.SearchFloat64s(t.spec.mixCum, u)
			model = t.spec.mixIdx[min(k, len(t.spec.mixIdx)-1)]
		}
	}
	e.scheduleArrival(ti)
	e.submitted++
	if e.w.Jobs > 0 && e.submitted >= e.w.Jobs {
		e.stopArrivals()
	}
	ps := pendingSubmit{tenant: ti, model: model, arrived: e.now - e.base, attempt: 1}
	if z := e.models[model].sizer; z != nil {
		ps.input, ps.base = z.draw()
	}
	p := e.newPending(ps)
	if e.now >= e.warmAt {
		t.tally.submitted++
	}
	if e.paused {
		e.held = append(e.held, p)
		return nil
	}
	return e.submit(p)
}

func (e clients) newPending(p pendingSubmit) int32 {
	if n := len(e.pendFree); n > 0 {
		pi := e.pendFree[n-1]
		e.pendFree = e.pendFree[:n-1]
		e.pending[pi] = p
		return pi
	}
	e.pending = append(e.pending, p)
	return int32(len(e.pending) - 1)
}

// submit sends one submission the way the leader handles Submit: the
// read-only limit and backpressure pre-checks, then the Submit entry.
func (e clients) submit(pi int32) error {
	p := e.pending[pi]
	e.releasePending(pi)
	t := &e.tenants[p.tenant]
	m := &e.models[p.model]
	// A fresh spec, which the state machine keeps as the job's (apply); the
	// Submit around it is not kept. The leader's sequence is the server's
	// own (package admission).
	spec := &sluicev1.JobSpec{Model: m.name, Priority: t.spec.Priority, Input: p.input}
	s := &e.sub
	*s = admission.Submit{Tenant: t.policy, APIKey: t.apiKey, ClientIP: t.ip, Spec: spec}
	if e.challenges {
		s.Exempt, s.Spend = e.exemptions(t, p)
	}
	v := admission.Precheck(&e.r, simExecutors{e: e.engine}, e.plan, s, m.policy, e.now, &e.dec, e.sizes)
	var res fsm.Result
	if v.Outcome == admission.Proceed {
		s.Fill(&e.submitMsg)
		res = e.apply(fsm.CmdSubmit, &e.submitMsg)
		if res.Err == nil {
			v.Outcome = admission.Admitted // what Applied says, without building its Verdict (2 % on M/M/4)
		} else {
			v = admission.Applied(res)
		}
	}
	switch v.Outcome {
	case admission.Rejected, admission.Replayed:
		return e.refused(p, v.Rule, v.RetryAt)
	case admission.Challenged:
		return e.challenged(p, v.Rule, v.RetryAt)
	case admission.Busy:
		return e.refused(p, "busy:"+v.Busy.Bound, e.now+max(v.Busy.RetryAfter, int64(time.Second)))
	case admission.Unplaceable:
		return e.refused(p, "unplaceable", limiter.Never)
	case admission.Failed:
		return fmt.Errorf("%w: submit for tenant %q: %v", errInternal, t.name, v.Err)
	}
	si := e.newJob()
	j := &e.jobs[si]
	*j = simJob{id: res.JobID, tenant: p.tenant, model: p.model, gpus: m.gpus, exec: -1, firstStart: -1,
		arrived: p.arrived, measured: e.base+p.arrived >= e.warmAt, enq: 1, input: p.input, base: p.base}
	e.jobIx[res.JobID] = si
	e.live++
	if j.measured {
		t.tally.admitted++
	}
	if e.challenges {
		e.answered(t, p, res.Limits, j.measured)
	}
	if e.needRecord {
		if err := e.readRecord(si, true); err != nil {
			return err
		}
	}
	if j.delayed && j.measured {
		t.tally.delayed++
	}
	mean, _ := m.svc.Estimate(m.policy.GetDefaultDuration().AsDuration())
	e.tierLoad.Add(t.tier, mean, e.now)
	e.forecasts.noteETA(j)
	if e.opt.fork != nil && j.id == e.opt.fork.job {
		e.forked(e.etaNotes[j.id].p50)
	}
	if j.degraded && j.measured {
		t.tally.degraded++
	}
	e.stats.admitted(e.engine, j)
	e.needDispatch = true
	return nil
}

func (e clients) releasePending(pi int32) { e.pendFree = append(e.pendFree, pi) }

// refused records a turned-away submission; a client with a retry
// policy comes back when the server said it would fit.
func (e clients) refused(p pendingSubmit, rule string, retryAt int64) error {
	t := &e.tenants[p.tenant]
	e.stats.refusal(e.engine, t.tierIdx)
	if r := t.spec.Retry; r != nil && p.attempt < r.Attempts && retryAt != limiter.Never && !e.stopped {
		at := e.now + max(int64(r.After), int64(time.Second))
		if retryAt > at {
			at = retryAt
		}
		p.attempt++
		p.rule = rule
		if e.base+p.arrived >= e.warmAt {
			t.tally.retried++
		}
		e.ev.push(event{at: at, kind: evResubmit, a: e.newPending(p)})
		return nil
	}
	e.rejected(p, rule)
	return nil
}

// rejected records a submission the client gave up on, or whose retry
// falls after the end of the run.
func (e clients) rejected(p pendingSubmit, rule string) {
	t := &e.tenants[p.tenant]
	if e.base+p.arrived >= e.warmAt {
		t.tally.reject(rule)
		for _, m := range e.miss {
			m.ended(t.tierIdx, "REJECTED")
		}
		if e.miss != nil {
			e.missCheck()
		}
	}
	if e.opt.OnJob != nil {
		e.opt.OnJob(JobOutcome{Tenant: t.name, Tier: t.tier, Model: e.models[p.model].name, Submitted: p.arrived,
			Started: -1, Finished: e.now - e.base, State: "REJECTED", Rule: rule, Measured: e.base+p.arrived >= e.warmAt})
	}
}

// readRecord reads what the state machine decided for a job just queued:
// the model it will run (a degrade changes it), when it is ready (a delay
// or a retry backoff) and its queue deadline.
func (e clients) readRecord(si int32, admission bool) error {
	j := &e.jobs[si]
	rec, ok := e.r.Job(j.id)
	if !ok {
		return fmt.Errorf("%w: job %d vanished", errInternal, j.id)
	}
	if admission {
		if a := rec.GetAdmission(); a != nil {
			j.delayed = a.DelayedBy != ""
			j.degraded = a.DegradedBy != ""
		}
		if mi, ok := e.modelIx[rec.Spec.GetModel()]; ok && mi != j.model {
			j.model = mi
			j.gpus = e.models[mi].gpus
		}
	}
	if g := rec.Spec.GetGpus(); g > 0 {
		j.gpus = g
	}
	if rec.ReadyNs > e.now {
		e.ev.push(event{at: rec.ReadyNs, kind: evWake})
	}
	if rec.QueueDeadlineNs > 0 {
		e.expiries.push(expiry{at: rec.QueueDeadlineNs, id: j.id, enq: j.enq})
	}
	return nil
}

func (e clients) newJob() int32 {
	if n := len(e.jobFree); n > 0 {
		si := e.jobFree[n-1]
		e.jobFree = e.jobFree[:n-1]
		return si
	}
	e.jobs = append(e.jobs, simJob{})
	return int32(len(e.jobs) - 1)
}

// endJob records a job's end and forgets it.
func (e clients) endJob(si int32, at int64, state string) {
	j := &e.jobs[si]
	t := &e.tenants[j.tenant]
	if e.sized && j.measured && state == "SUCCEEDED" {
		e.forecasts.reserved(j.id)
	}
	if j.measured {
		t.tally.ended(state, j, at-e.base)
		for _, m := range e.miss {
			m.ended(t.tierIdx, state)
			if state == "SUCCEEDED" {
				m.turnedAround(t.tierIdx, float64(at-e.base-j.arrived)/1e9)
			}
		}
		if e.miss != nil {
			e.missCheck()
		}
	}
	if e.opt.OnJob != nil {
		e.opt.OnJob(e.outcome(j, at, state))
	}
	if j.firstStart < 0 { // ended without starting (expired, canceled): its ETA fared nowhere
		e.cal.Forget(j.id)
		e.calBase.Forget(j.id)
		if j.eta {
			delete(e.etaNotes, j.id)
		}
		if fr := e.opt.fork; fr != nil && j.id == fr.job {
			e.forkEnded(-1)
		}
	}
	delete(e.jobIx, j.id)
	e.jobFree = append(e.jobFree, si)
	e.live--
}

func (e clients) outcome(j *simJob, at int64, state string) JobOutcome {
	t := &e.tenants[j.tenant]
	o := JobOutcome{ID: j.id, Tenant: t.name, Tier: t.tier, Model: e.models[j.model].name, Submitted: j.arrived,
		Started: j.firstStart, Finished: -1, State: state, Attempts: j.attempt, GPUs: j.gpus,
		Delayed: j.delayed, Degraded: j.degraded, Measured: j.measured}
	if at >= 0 {
		o.Finished = at - e.base
	}
	return o
}

// simExecutors is the simulated executors as the admission sequence asks
// them (admission.Executors), as node's registry answers; averages: as if
// no model were sized (the ETAs' baseline, issue 28), each running
// attempt expected to take its model's learned average.
type simExecutors struct {
	e        *engine
	averages bool
}

func (x simExecutors) Slots(model string) (total, free int) { return x.e.fleet.Slots(model) }

func (x simExecutors) Unplaceable(model string, gpus int32, memMB int64) string {
	return x.e.fleet.Unplaceable(model, gpus, memMB)
}

func (x simExecutors) Service(model string, def time.Duration) (mean, sd time.Duration) {
	return x.e.models[x.e.modelIx[model]].svc.Estimate(def)
}

// Lanes is every slot of the executors up that serve model: free, or what
// its attempt is expected to take (by size where predicted, as node's
// registry) and how long it has run.
func (x simExecutors) Lanes(model string) []scheduler.Lane {
	e := x.e
	var lanes []scheduler.Lane
	for xi := range int32(e.fleet.Len()) {
		if !e.fleet.IsUp(xi) || !e.fleet.Serves(xi, model) {
			continue
		}
		runs := e.fleet.Runs(xi)
		for _, r := range runs {
			j := &e.jobs[r.Ref]
			m := &e.models[j.model]
			var run scheduler.RunTime
			if x.averages {
				run.Mean, run.SD = m.svc.Estimate(m.policy.GetDefaultDuration().AsDuration())
			} else {
				run, _ = e.forecasts.runTime(m, j.input)
			}
			lanes = append(lanes, scheduler.Lane{Busy: true, Run: run, Elapsed: time.Duration(e.now - j.runStart)})
		}
		for range max(int(e.fleet.SlotsOf(xi))-len(runs), 0) {
			lanes = append(lanes, scheduler.Lane{})
		}
	}
	return lanes
}
