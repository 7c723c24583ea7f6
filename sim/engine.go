package sim

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluicehq/sluice/admission"
	"github.com/sluicehq/sluice/fsm"
	"github.com/sluicehq/sluice/limiter"
	"github.com/sluicehq/sluice/policy"
	"github.com/sluicehq/sluice/predict"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/scheduler"
)

// Options adjust one run without editing its workload.
type Options struct {
	// Seed, when set, replaces the workload's.
	Seed *uint64
	// Executors, when above 0, sets the count of the executor group named
	// Group (default: the first group): what `sluice sim plan` varies.
	Executors int
	Group     string
	// Duration, when above 0, replaces the workload's duration (when
	// arrivals stop), e.g. for a quick look at a long scenario.
	Duration time.Duration
	// OnJob, when set, is called for every job as it ends or is turned
	// away (and, at the end, for jobs left unfinished), in virtual-time
	// order: for tests and traces.
	OnJob func(JobOutcome)
	// NoSeries skips the time series (plans do not need it).
	NoSeries bool

	// missSLOs and missTier: stop the run once one of these objectives
	// is certain to be missed (capacity plans; see missRule).
	missSLOs []SLO
	missTier string
	// encodeLog commits each command as its log entry bytes (fsm.Apply), as
	// a server does, instead of the decoded message (fsm.ApplyCommand), and
	// leaves the state machine copying records on edit as a server's does
	// (fsm.SetExclusive): the two must give byte-identical reports
	// (TestEncodedLogGivesTheSameReport).
	encodeLog bool
	// fork makes the run one of ETAFloor's forks; onETA is called with each
	// followed job's ETA and wait as it starts (floor.go).
	fork  *forkRun
	onETA func(etaSeen)
}

// JobOutcome is one job's story, in nanoseconds from the run's start.
type JobOutcome struct {
	ID        uint64 // the state machine's job id (0 if never admitted)
	Tenant    string
	Tier      string
	Model     string // the model it ran (after a degrade)
	Submitted int64
	Started   int64 // first attempt's start; -1 if it never started
	Finished  int64 // -1 if unfinished
	State     string
	Rule      string // the refusing rule, or "busy:<bound>"
	Attempts  int32
	GPUs      int32
	Delayed   bool
	Degraded  bool
	Measured  bool // submitted after the warm-up
}

// simJob is what the simulator knows of an admitted job: its own records
// (times for the statistics) and what its executor needs (model, GPUs).
// The job's state itself lives only in the state machine.
type simJob struct {
	id         uint64
	tenant     int32
	model      int32
	gpus       int32
	attempt    int32
	exec       int32 // running on; -1 when not
	enq        uint32
	running    bool
	cold       bool // the current attempt started cold (its model not loaded)
	measured   bool
	delayed    bool
	degraded   bool
	arrived    int64 // when the client first sent it (offset)
	firstStart int64 // -1 until it starts
	runStart   int64 // absolute, of the current attempt
	runNs      int64 // service of the current attempt
	runTimeout int64
	eta        bool             // its ETA is followed (e.etaNotes)
	input      *structpb.Struct // its spec's input (sizes), or nil
	base       int64            // the run time its size makes, before noise; 0: unsized
}

type tenantState struct {
	name, tier string
	tierIdx    int32
	policy     *sluicev1.Tenant // the policy's
	spec       *TenantSpec
	apiKey, ip string
	arrivals   arrivals
	mix        *rand.Rand
	tally      tally
	// CHALLENGE rules: whether a client answers (drawn per challenge), and
	// the passes it holds (rule → expiry).
	solver *rand.Rand
	passes map[string]int64
	exempt []string // scratch: the rules its valid passes name
}

type modelState struct {
	spec    *ModelSpec
	policy  *sluicev1.Model
	name    string
	gpus    int32
	service *rand.Rand
	fail    *rand.Rand
	timeout int64
	svc     scheduler.ServiceTime // the leader's learned service time (ETAs), as node's
	learner *predict.Learner      // the leader's run times by size, where the policy declares one
	sizer   *sizer                // draws its jobs' sizes, where the workload gives them
}

// engine is one run.
type engine struct {
	// Its roles (roles.go).
	clients   clients
	placing   dispatcher
	faults    faults
	forecasts forecasts

	w    *Workload
	opt  Options
	seed uint64
	f    *fsm.FSM
	r    fsm.Reads // f's read side
	idx  uint64    // last log index
	base int64     // absolute time of offset 0
	now  int64     // absolute

	stopAt, endAt int64 // absolute: arrivals stop; the run ends at the latest
	warmAt        int64 // absolute
	submitted     int64 // first submissions
	stopped       bool  // arrivals stopped

	ev       eventHeap
	expiries minHeap[expiry, *expiry]

	tenants []tenantState
	tiers   []string
	models  []modelState
	modelIx map[string]int32
	execs   []executor
	fleet   *admission.Fleet // the leader's book of the executors, numbered as execs

	jobs    []simJob
	jobFree []int32
	jobIx   map[uint64]int32
	live    int // admitted jobs not yet ended

	pending  []pendingSubmit
	pendFree []int32
	deferred []event
	held     []int32 // pending submissions held during a pause
	paused   bool

	needDispatch   bool
	reserve        bool       // the policy reserves executors for big jobs: offer full ones too
	needRecord     bool       // admissions can be delayed, degraded or time out
	etaTiers       []etaTally // ETA honesty by tier index (eta.go)
	etaAll         etaTally
	etaNoted       int                // measured jobs given an ETA to follow
	tierLoad       scheduler.TierLoad // work admitted per tier, for ETAs (as the leader's)
	tierShares     map[string]scheduler.TierShare
	etaNotes       map[uint64]etaNote       // the followed ETAs of jobs not started yet, by job id
	cal            scheduler.ETACalibration // the leader's, fed as the server's
	sized          bool                     // some model of the policy declares a size
	sizes          *admission.Sizing        // e.sizing(), made once
	reservations   Reservations             // sized workloads: reserved against settled
	calBase        scheduler.ETACalibration // the baseline's (sized: ETAs by the models' averages)
	etaBaseTiers   []etaTally               // the baseline's honesty
	etaBaseAll     etaTally
	challenges     bool                      // the policy has a CHALLENGE rule
	challengeRules []string                  // their names, in policy order
	rules          map[string]*sluicev1.Rule // the CHALLENGE rules by name
	challengeSeq   uint64                    // ids of answered challenges

	submitMsg   raftv1.Submit
	sub         admission.Submit
	plan        admission.Plan   // the policy's, for admission.Precheck
	dec         limiter.Decision // admission.Precheck's scratch
	completeMsg raftv1.Complete
	assignMsg   raftv1.Assign
	disp        admission.Dispatcher // the leader's dispatch scratch
	buf         []byte

	stats    stats
	events   int64
	commands int64

	miss []*missRule
	cut  string // why the run stopped early, if it did
}

// errInternal wraps a state-machine answer the simulator cannot explain.
var errInternal = errors.New("sim: unexpected state-machine result")

// Run simulates the workload and reports.
func Run(w *Workload, opt Options) (*Report, error) {
	e, err := newEngine(w, opt)
	if err != nil {
		return nil, err
	}
	started := time.Now()
	if err := e.loop(); err != nil {
		return nil, err
	}
	r := e.report()
	r.Perf = Perf{Events: e.events, Commands: e.commands, WallSeconds: time.Since(started).Seconds()}
	return r, nil
}

func newEngine(w *Workload, opt Options) (*engine, error) {
	if w.effective == nil {
		if err := w.Check(); err != nil {
			return nil, err
		}
	}
	e := wire(&engine{w: w, opt: opt, seed: w.Seed, f: fsm.New(), modelIx: map[string]int32{},
		fleet: admission.NewFleet(), jobIx: map[uint64]int32{}})
	// The engine reads records only on its own goroutine, between commands:
	// the state machine need not copy them for other readers.
	e.f.SetExclusive(!opt.encodeLog)
	e.r = e.f.Reads()
	if opt.Seed != nil {
		e.seed = *opt.Seed
	}
	e.base = w.start()
	e.now = e.base
	e.warmAt = e.base + int64(w.Warmup)
	e.stopAt = never
	if w.Duration > 0 {
		e.stopAt = e.base + int64(w.Duration)
	}
	if opt.Duration > 0 {
		e.stopAt = e.base + int64(opt.Duration)
	}
	pol := w.EffectivePolicy()
	if r := e.apply(fsm.CmdSetPolicy, &raftv1.SetPolicy{Policy: pol}); r.Err != nil {
		return nil, fmt.Errorf("sim: the state machine refused the policy: %w", r.Err)
	}
	pol = e.r.Policy()
	e.reserve = pol.GetScheduling().GetReserveAfter().AsDuration() > 0
	e.plan = admission.PlanFor(pol)
	for _, r := range pol.GetRules() {
		if _, ok := policy.ChallengeOf(r); ok {
			if e.rules == nil {
				e.rules = map[string]*sluicev1.Rule{}
			}
			e.challenges, e.rules[r.Name] = true, r
			e.challengeRules = append(e.challengeRules, r.Name)
		}
	}
	e.needRecord = pol.GetDefaults().GetQueueTimeout().AsDuration() > 0
	for _, r := range pol.GetRules() {
		if r.Action == sluicev1.OverLimitAction_OVER_LIMIT_ACTION_DELAY ||
			r.Action == sluicev1.OverLimitAction_OVER_LIMIT_ACTION_DEGRADE || r.GetLeakyQueue() != nil {
			e.needRecord = true
		}
	}
	pmodels := map[string]*sluicev1.Model{}
	for _, m := range pol.GetModels() {
		pmodels[m.Name] = m
	}
	for i := range w.Models {
		e.addModel(&w.Models[i], pmodels[w.Models[i].Name])
	}
	// Models the workload does not describe can still be reached by a
	// degrade: they run for their policy duration, constant.
	for _, pm := range pol.GetModels() {
		if _, ok := e.modelIx[pm.Name]; !ok {
			e.addModel(&ModelSpec{Name: pm.Name, Service: Service{Dist: "constant",
				Mean: Duration(max(pm.GetDefaultDuration().AsDuration(), time.Millisecond))}}, pm)
		}
	}
	e.resetExpected()
	tierIx := map[string]int32{}
	for _, t := range pol.GetTiers() {
		tierIx[t.Name] = int32(len(e.tiers))
		e.tiers = append(e.tiers, t.Name)
	}
	e.etaTiers = make([]etaTally, len(e.tiers))
	if e.sized = sizedModels(e.models); e.sized {
		e.etaBaseTiers = make([]etaTally, len(e.tiers))
		e.forecasts.sizing()
	}
	e.tierShares = admission.TierShares(pol)
	ptenants := map[string]*sluicev1.Tenant{}
	for _, t := range pol.GetTenants() {
		ptenants[t.Name] = t
	}
	for i := range w.Tenants {
		ts := &w.Tenants[i]
		for _, name := range ts.expanded {
			pt := ptenants[name]
			key := policy.HashKey("sim:" + name)
			if len(pt.GetApiKeySha256()) > 0 {
				key = pt.ApiKeySha256[0]
			}
			n := len(e.tenants)
			if pt == nil {
				pt = &sluicev1.Tenant{Name: name}
			}
			st := tenantState{name: name, tier: pt.GetTier(), tierIdx: tierIx[pt.GetTier()], spec: ts, apiKey: key, policy: pt,
				ip:       fmt.Sprintf("10.%d.%d.%d", (n>>16)&255, (n>>8)&255, n&255),
				arrivals: arrivals{spec: &ts.Arrivals, r: stream(e.seed, "arrivals/"+name), trace: ts.trace},
				mix:      stream(e.seed, "mix/"+name)}
			if ts.Challenge != nil {
				st.solver = stream(e.seed, "challenge/"+name)
			}
			st.tally.init()
			e.tenants = append(e.tenants, st)
		}
	}
	if err := e.placing.buildExecutors(); err != nil {
		return nil, err
	}
	e.stats.init(e)
	// The first arrival of each tenant, the failures, the samples.
	for i := range e.tenants {
		e.clients.scheduleArrival(int32(i))
	}
	e.faults.scheduleFailures()
	if len(opt.missSLOs) > 0 {
		e.miss = e.newMissRules(opt.missSLOs, opt.missTier)
	}
	if !opt.NoSeries {
		e.ev.push(event{at: e.base, kind: evSample})
	}
	return e, nil
}

func (e *engine) addModel(ms *ModelSpec, pm *sluicev1.Model) {
	g := pm.GetGpus()
	if g <= 0 {
		g = policy.DefaultGPUs
	}
	e.modelIx[ms.Name] = int32(len(e.models))
	st := modelState{spec: ms, policy: pm, name: ms.Name, gpus: g,
		service: stream(e.seed, "service/"+ms.Name), fail: stream(e.seed, "fail/"+ms.Name),
		timeout: int64(fsm.ModelRunTimeout(pm))}
	if s := pm.GetSize(); s != nil {
		st.learner = predict.NewLearner(len(s.Terms), int(s.MinObservations))
	}
	if ms.Sizes != nil {
		st.sizer = newSizer(e.seed, ms.Name, ms.Sizes)
	}
	e.models = append(e.models, st)
}

// resetExpected forgets the learned service times and relearns them from
// the log's finished jobs, as a new leader does (node's lead); with none,
// the policy's default_duration again.
func (e *engine) resetExpected() {
	for i := range e.models {
		m := &e.models[i]
		m.svc = scheduler.ServiceTime{}
		if s := m.policy.GetSize(); s != nil {
			m.learner = predict.NewLearner(len(s.Terms), int(s.MinObservations))
		}
	}
	// As node's lead: relearned from the log's finished jobs, oldest first.
	for _, r := range e.r.Succeeded(relearnPerModel) {
		if mi, ok := e.modelIx[r.Model]; ok {
			m := &e.models[mi]
			m.svc.Observe(r.Ran)
			e.forecasts.learnSize(m, r.Input, int64(r.Ran))
		}
	}
}

// apply commits one command, as the leader would: stamped with its time,
// at the next log index. The log lives in memory, so the state machine gets
// the message itself (fsm.ApplyCommand), not its encoding to decode again:
// it may keep msg (a Submit's spec becomes the job's), so msg must not be
// changed afterwards. Options.encodeLog takes the servers' path instead.
func (e *engine) apply(t fsm.CommandType, msg proto.Message) fsm.Result {
	e.idx++
	e.commands++
	if e.opt.encodeLog {
		e.buf = appendCommand(e.buf[:0], t, e.now, msg)
		return e.f.Apply(e.idx, e.buf)
	}
	return e.f.ApplyCommand(e.idx, t, e.now, msg)
}

// appendCommand appends the log entry fsm.Encode builds (type byte, time,
// deterministic protobuf) to dst, so that one buffer serves every command:
// Apply decodes into fresh messages and keeps nothing of its input.
// TestAppendCommandEncodesAsFSM holds it to fsm.Encode, byte for byte.
func appendCommand(dst []byte, t fsm.CommandType, now int64, msg proto.Message) []byte {
	dst = append(dst, byte(t))
	dst = binary.BigEndian.AppendUint64(dst, uint64(now))
	dst, err := marshalDeterministic.MarshalAppend(dst, msg)
	if err != nil {
		panic(fmt.Sprintf("sim: encode %v: %v", t, err))
	}
	return dst
}

var marshalDeterministic = proto.MarshalOptions{Deterministic: true}

var tickMsg = &raftv1.Tick{}

func (e *engine) loop() error {
	for e.cut == "" {
		next := never
		if e.ev.len() > 0 {
			next = e.ev.top().at
		}
		tick := false
		if !e.paused {
			// The leader ticks when a state-machine timer is due
			// (fsm.JobReads.NextDeadline). Of those timers only queue deadlines
			// change a job without an event of ours (a run deadline is one:
			// runDeadline ticks), and the simulator knows each (readRecord).
			// Retention timers, which only drop finished jobs from memory,
			// fire with the next entry instead of costing a Tick each.
			if x := e.nextExpiry(); x < next && x > e.now {
				next, tick = x, true
			}
		}
		if !e.stopped && next >= e.stopAt {
			e.now = max(e.now, e.stopAt)
			e.stopArrivals()
		}
		if e.stopped {
			if e.finished() {
				return nil
			}
			if next > e.endAt {
				e.now = max(e.now, e.endAt)
				return nil
			}
		}
		if next == never {
			return nil
		}
		e.now = next
		e.events++
		if tick {
			e.apply(fsm.CmdTick, tickMsg)
			if err := e.settle(); err != nil {
				return err
			}
			continue
		}
		if err := e.handle(e.ev.pop()); err != nil {
			return err
		}
		if e.ev.len() == 0 || e.ev.top().at > e.now {
			if err := e.settle(); err != nil {
				return err
			}
		}
	}
	return nil
}

// missCheck stops the run if an objective it watches is now certain to
// be missed.
func (e *engine) missCheck() {
	for _, m := range e.miss {
		if m.missed() {
			e.cut = fmt.Sprintf("%v at %s", m, fmtSecs(secs(e.now-e.base)))
			return
		}
	}
}

// finished reports whether, arrivals over, the run can stop: every job has
// ended, or nothing left can move a queued one along (it can never run).
func (e *engine) finished() bool {
	if e.paused || len(e.held) > 0 || len(e.deferred) > 0 || e.ev.work > 0 {
		return false
	}
	return e.live == 0 || len(e.expiries.h) == 0
}

func (e *engine) stopArrivals() {
	e.stats.advance(e) // the load window ends now
	e.stopped = true
	e.stopAt = min(e.stopAt, e.now)
	limit := int64(e.w.DrainLimit)
	if limit == 0 {
		limit = max(int64(time.Hour), e.stopAt-e.base)
	}
	e.endAt = e.stopAt + limit
	if !e.w.drain() {
		e.endAt = e.stopAt
	}
	// Clients submit nothing after arrivals stop: a refusal still waiting
	// for its retry counts as rejected now.
	kept := e.ev.h[:0]
	var gave []event
	for _, ev := range e.ev.h {
		if ev.kind == evResubmit {
			gave = append(gave, ev)
			e.ev.work--
			continue
		}
		kept = append(kept, ev)
	}
	e.ev.h = kept
	e.ev.heapify()
	slices.SortFunc(gave, func(a, b event) int { return cmp.Compare(a.seq, b.seq) })
	for _, ev := range gave {
		p := e.pending[ev.a]
		e.clients.releasePending(ev.a)
		e.clients.rejected(p, p.rule)
	}
}

// nextExpiry is the earliest queue deadline of a job still queued,
// dropping those of jobs that started since.
func (e *engine) nextExpiry() int64 {
	for len(e.expiries.h) > 0 {
		x := e.expiries.h[0]
		if si, ok := e.jobIx[x.id]; ok && !e.jobs[si].running && e.jobs[si].enq == x.enq {
			return x.at
		}
		e.expiries.pop()
	}
	return never
}

// settle runs after the events of one instant: it notices queued jobs that
// timed out and dispatches if anything may have freed up.
func (e *engine) settle() error {
	for len(e.expiries.h) > 0 && e.expiries.h[0].at <= e.now {
		x := e.expiries.pop()
		si, ok := e.jobIx[x.id]
		if !ok {
			continue
		}
		j := &e.jobs[si]
		if j.running || j.enq != x.enq {
			continue
		}
		if _, queued := e.r.QueuedAttempt(x.id); queued {
			continue
		}
		// It left the queue without being assigned: the queue timeout.
		e.stats.dequeued(e, j)
		e.clients.endJob(si, x.at, "EXPIRED")
	}
	if e.needDispatch && !e.paused {
		e.needDispatch = false
		return e.placing.dispatch()
	}
	return nil
}

func (e *engine) handle(ev event) error {
	if e.paused && ev.kind.commits() {
		// No leader: the executor's report or the requeue waits for one.
		e.deferred = append(e.deferred, ev)
		return nil
	}
	switch ev.kind {
	case evArrive:
		return e.clients.arrive(ev)
	case evResubmit:
		if e.paused {
			e.held = append(e.held, ev.a)
			return nil
		}
		return e.clients.submit(ev.a)
	case evFinish:
		return e.placing.finish(ev)
	case evRunDeadline:
		return e.placing.runDeadline(ev)
	case evWake:
		e.needDispatch = true
	case evCrash:
		e.faults.crash(ev)
	case evRepair:
		e.faults.repair(ev)
	case evDetect:
		return e.faults.detect(ev)
	case evOutage:
		e.faults.outage(ev)
	case evFailover:
		fo := e.w.Failures.Failovers[ev.a]
		e.paused = true
		e.stats.failovers++
		e.ev.push(event{at: e.now + int64(fo.Pause), kind: evFailoverEnd, a: ev.a})
	case evFailoverEnd:
		return e.resume()
	case evSample:
		e.stats.sample(e)
		if !e.stopped || e.ev.work > 0 || e.live > 0 {
			e.ev.push(event{at: e.now + e.stats.every, kind: evSample})
		}
	}
	return nil
}

// resume is the new leader taking over after an election: the soft state
// it learns (service times) starts afresh, executors report what finished
// meanwhile, held clients send again, and dispatch resumes.
func (e *engine) resume() error {
	e.paused = false
	e.resetExpected()
	deferred := e.deferred
	e.deferred = nil
	for _, ev := range deferred {
		if err := e.handle(ev); err != nil {
			return err
		}
	}
	held := e.held
	e.held = nil
	for _, p := range held {
		if err := e.clients.submit(p); err != nil {
			return err
		}
	}
	e.needDispatch = true
	return nil
}
