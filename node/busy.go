package node

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluicehq/sluice/admission"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/scheduler"
)

// nodeExecutors is the node's executors as the admission sequence asks
// them (admission.Executors); lanes, where not nil, keeps what Lanes read
// of each model's slots, for a list's many ETAs (one read per list).
type nodeExecutors struct {
	n     *Node
	lanes map[string][]scheduler.Lane
}

func (x nodeExecutors) Slots(model string) (total, free int) { return x.n.execs.slotsFor(model) }

func (x nodeExecutors) Unplaceable(model string, gpus int32, memMB int64) string {
	return x.n.execs.unplaceable(model, gpus, memMB)
}

func (x nodeExecutors) Service(model string, def time.Duration) (mean, sd time.Duration) {
	return x.n.service.estimate(model, def)
}

func (x nodeExecutors) Share(model, other string) float64 { return x.n.execs.share(model, other) }

// Lanes is every slot of a leased executor that serves model: free, or what
// its attempt is expected to take (by size where predicted, on its GPU
// kind) and how long it has run: since the leader assigned it, 0 while it
// is only placed (a retried job's record still has its last attempt's
// start).
func (x nodeExecutors) Lanes(model string) (lanes []scheduler.Lane) {
	if l, ok := x.lanes[model]; ok {
		return l
	}
	if x.lanes != nil {
		defer func() { x.lanes[model] = lanes }()
	}
	n := x.n
	now := time.Now().UnixNano()
	var fallback scheduler.RunTime // the model's, for a job that is gone
	if m, ok := n.fsm.Model(model); ok {
		fallback.Mean, fallback.SD = n.service.estimate(model, m.GetDefaultDuration().AsDuration())
	}
	for _, ex := range n.execs.lanesOf(model) {
		for _, id := range ex.jobs {
			l := scheduler.Lane{Busy: true, Run: fallback}
			if j, ok := n.fsm.Job(id); ok {
				if m, ok := n.fsm.Model(j.Spec.GetModel()); ok {
					l.Run.Mean, l.Run.SD, _ = n.service.runTime(m, n.execs.gpuKind(j.Executor), j.Spec.GetInput())
				}
				if j.State == sluicev1.JobState_JOB_STATE_RUNNING && j.StartedNs > 0 {
					l.Elapsed = time.Duration(max(now-j.StartedNs, 0))
				}
			}
			lanes = append(lanes, l)
		}
		for range max(ex.slots-len(ex.jobs), 0) {
			lanes = append(lanes, scheduler.Lane{})
		}
	}
	return lanes
}

// sizes is the leader's run-time predictors by model, for QueuedETA: nil for
// a model that declares no size or has not learned enough yet.
func (n jobDesk) sizes(model string) func(*structpb.Struct) (scheduler.RunTime, bool) {
	m, ok := n.fsm.Model(model)
	if !ok || m.GetSize() == nil || !n.service.trusted(m) {
		return nil
	}
	return func(input *structpb.Struct) (scheduler.RunTime, bool) {
		d, sd, ok := n.service.predictSized(m, "", input)
		return scheduler.RunTime{Mean: d, SD: sd}, ok
	}
}

// sizing is what QueuedETA needs of the leader's run-time predictions, nil
// when no model of the policy declares a size.
func (n jobDesk) sizing() *admission.Sizing { return n.admissionPlan().sizing }

// admissionPlan is the current policy's admission.Plan and tier shares,
// made once per policy (the state machine replaces the policy, never
// changes it).
func (n jobDesk) admissionPlan() *policyPlan {
	p := n.fsm.Policy()
	if c := n.plan.Load(); c != nil && c.policy == p {
		return c
	}
	c := &policyPlan{policy: p, plan: admission.PlanFor(p), shares: admission.TierShares(p)}
	for _, m := range p.GetModels() {
		if m.GetSize() != nil {
			c.sizing = &admission.Sizing{Predictor: n.sizes}
		}
	}
	n.plan.Store(c)
	return c
}

type policyPlan struct {
	policy *sluicev1.Policy
	plan   admission.Plan
	shares map[string]scheduler.TierShare
	sizing *admission.Sizing // nil unless some model declares what sizes its jobs
}

// tierLoads is the work admitted per tier lately, for ETAs: the leader's
// soft state, as the simulator keeps it.
type tierLoads struct {
	mu   sync.Mutex
	load scheduler.TierLoad
}

func (t *tierLoads) add(tier string, work time.Duration, now int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.load.Add(tier, work, now)
}

// overtaking is TierLoad.Overtaking for a job of tier, under shares.
func (t *tierLoads) overtaking(tier string, shares map[string]scheduler.TierShare, now int64) func(slots int) float64 {
	return func(slots int) float64 {
		t.mu.Lock()
		defer t.mu.Unlock()
		return t.load.Overtaking(tier, shares, slots, now)
	}
}

// etaCalibration is how the leader's ETAs have fared
// (scheduler.ETACalibration): its soft state, as the simulator keeps it.
// It also keeps the ETAs told to one admitted job in
// scheduler.CalibrationEvery (by id), for the metrics of their honesty.
type etaCalibration struct {
	mu     sync.Mutex
	cal    scheduler.ETACalibration
	honest map[uint64]toldETA
	noted  int // follow calls, for the sweep of stale entries
}

// toldETA is the ETA a job was told at Submit (calibrated, as its answer
// carried it), when, and its tier.
type toldETA struct {
	tier string
	band scheduler.Band
	at   int64
}

const (
	honestMax   = 4096 // ETAs followed for the metrics at once
	honestStale = int64(time.Hour)
)

// told is the band a queued job of tier is told, the model's band calibrated.
func (c *etaCalibration) told(tier string, model scheduler.Band, readyIn time.Duration) scheduler.Band {
	c.mu.Lock()
	defer c.mu.Unlock()
	return admission.ETA(&c.cal, tier, model, readyIn)
}

// follow notes the model's band, and the band it was told, given to a
// just-admitted job.
func (c *etaCalibration) follow(id uint64, tier string, model, told scheduler.Band, readyIn time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now().UnixNano()
	c.cal.Told(id, tier, model, readyIn, now)
	if id%scheduler.CalibrationEvery != 0 {
		return
	}
	if c.honest == nil {
		c.honest = make(map[uint64]toldETA)
	}
	if c.noted++; c.noted%256 == 0 || len(c.honest) >= honestMax {
		// Jobs that ended without starting (canceled, expired), or
		// started before this note: an hour on, or four times the top of
		// their band if that is later.
		for k, t := range c.honest {
			if now-t.at > max(honestStale, 4*int64(t.band.P90)) {
				delete(c.honest, k)
			}
		}
	}
	if len(c.honest) < honestMax {
		c.honest[id] = toldETA{tier: tier, band: told, at: now}
	}
}

// reset stops following jobs (a term ended).
func (c *etaCalibration) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cal.Reset()
	clear(c.honest)
}

// started learns from a job's first start, and returns the ETA it was told
// and its wait, if it is one of those kept for the metrics.
func (c *etaCalibration) started(id uint64) (told toldETA, wait time.Duration, ok bool) {
	if !scheduler.MayFollow(id) {
		return toldETA{}, 0, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now().UnixNano()
	c.cal.Started(id, now)
	if told, ok = c.honest[id]; ok {
		delete(c.honest, id)
		wait = time.Duration(max(now-told.at, 0))
	}
	return told, wait, ok
}

// busyError turns a backpressure refusal into resource_exhausted "system
// busy" naming the bound, with RetryInfo, QuotaFailure and Retry-After.
func busyError(be *scheduler.BusyError, retry time.Duration) *connect.Error {
	if be.RetryAfter > 0 {
		retry = time.Duration(be.RetryAfter)
	}
	retry = max(retry, time.Second)
	msg := be.Error()
	if be.RetryAfter <= 0 {
		msg += fmt.Sprintf("; retry in %s", roundWait(retry))
	}
	err := connect.NewError(connect.CodeResourceExhausted, errors.New(msg))
	subject := "cluster"
	switch be.Bound {
	case scheduler.BoundQueuedPerTenant:
		subject = "tenant:" + be.Key
	case scheduler.BoundQueuedPerModel:
		subject = "model:" + be.Key
	}
	if d, derr := connect.NewErrorDetail(&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{
		{Subject: subject, Description: "scheduling." + be.Bound},
	}}); derr == nil {
		err.AddDetail(d)
	}
	if d, derr := connect.NewErrorDetail(&errdetails.RetryInfo{RetryDelay: durationpb.New(retry)}); derr == nil {
		err.AddDetail(d)
	}
	err.Meta().Set("Retry-After", strconv.FormatInt(int64((retry+time.Second-1)/time.Second), 10))
	return err
}
