package sim

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/sluicehq/sluice/admission"
	"github.com/sluicehq/sluice/fsm"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// executor is what the simulation keeps of an executor beside the
// leader's book of it (e.fleet, admission.Fleet, with the same number):
// its group, and its crashes.
type executor struct {
	name       string
	group      int32
	gpus       int32
	epoch      uint32 // bumps when it goes down: older events are stale
	crashToken uint32
	lost       []admission.Run // attempts lost in a crash, until the leader notices (Ref: the job slot)
	crashRNG   *rand.Rand
}

func (e dispatcher) buildExecutors() error {
	w := e.w
	type proto struct {
		name  string
		group int32
	}
	var all []proto
	for gi, g := range w.Executors {
		n := g.Count
		if e.opt.Executors > 0 && ((e.opt.Group == "" && gi == 0) || e.opt.Group == g.Name) {
			n = e.opt.Executors
		}
		for k := 1; k <= n; k++ {
			all = append(all, proto{fmt.Sprintf("%s-%04d", g.Name, k), int32(gi)})
		}
	}
	if e.opt.Group != "" {
		found := false
		for _, g := range w.Executors {
			found = found || g.Name == e.opt.Group
		}
		if !found {
			return fmt.Errorf("sim: executor group %q is not in the workload", e.opt.Group)
		}
	}
	// The fleet numbers executors in name order; adding them in that order
	// keeps its numbers and e.execs' alike.
	sort.Slice(all, func(a, b int) bool { return all[a].name < all[b].name })
	descs := make([]admission.Desc, len(w.Executors)) // one per group, its slices shared
	for gi := range w.Executors {
		g := &w.Executors[gi]
		gpus := max(g.GPUs, 1)
		d := admission.Desc{Slots: g.Slots, Models: g.Models, WarmCap: g.WarmCapacity,
			GPUs: admission.GPUIDs(make([]string, gpus))}
		if d.Slots <= 0 {
			d.Slots = gpus
		}
		if g.GPUMemoryMB > 0 {
			d.GPUMemoryMB = make([]int64, gpus)
			for k := range d.GPUMemoryMB {
				d.GPUMemoryMB[k] = g.GPUMemoryMB
			}
		}
		descs[gi] = d
	}
	for _, p := range all {
		d := descs[p.group]
		d.Name, d.Warm = p.name, append([]string(nil), w.Executors[p.group].Warm...)
		e.fleet.Attach(d, nil)
		e.execs = append(e.execs, executor{name: p.name, group: p.group, gpus: int32(len(d.GPUs))})
	}
	return nil
}

// dispatch is the leader's dispatch (admission.Dispatcher, as the
// server's): the state machine's placement on the executors' free slots,
// each with its GPUs reserved, then each Assign committed and started.
func (e dispatcher) dispatch() error {
	if !e.fleet.HasRoom() || e.r.QueueLen() == 0 {
		// Nothing can be placed. (The leader would still offer its full
		// executors; placement on them proposes nothing and changes
		// nothing, so skipping the call changes no result.)
		return nil
	}
	// Full executors are offered too (0 jobs, 0 GPUs) where the policy
	// holds one for a big job; else they would change nothing.
	for _, p := range e.disp.Dispatch(&e.r, e.fleet, e.now, e.reserve, e.jobRef) {
		si, ok := e.jobIx[p.JobID]
		if !ok {
			return fmt.Errorf("%w: dispatch proposed job %d on %q", errInternal, p.JobID, p.Executor)
		}
		a := &e.assignMsg // the state machine keeps nothing of it (fsm.ApplyCommand)
		a.JobId, a.Executor, a.Attempt = p.JobID, p.Executor, p.Attempt
		if res := e.apply(fsm.CmdAssign, a); res.Err != nil {
			e.fleet.Unreserve(p.Exec, p.JobID)
			continue
		}
		e.start(p.Exec, si, a.Attempt)
	}
	return nil
}

// jobRef is a job's index in e.jobs, kept with its GPU reservation.
func (e dispatcher) jobRef(job uint64) int32 { return e.jobIx[job] }

// start runs an assigned attempt on an executor: its service time from the
// model's distribution, plus the cold start where the model is not warm.
func (e dispatcher) start(xi, si int32, attempt int32) {
	x := &e.execs[xi]
	j := &e.jobs[si]
	m := &e.models[j.model]
	e.stats.dequeued(e.engine, j)
	warm, _ := e.fleet.Start(xi, j.id, attempt, m.name)
	j.cold = !warm
	dur := runTime(j, m)
	j.attempt = attempt
	j.running = true
	j.exec = xi
	j.runStart = e.now
	j.runNs = dur
	j.runTimeout = m.timeout
	if j.firstStart < 0 {
		e.cal.Started(j.id, e.now)
		if e.sized {
			e.calBase.Started(j.id, e.now)
		}
		if j.eta {
			e.forecasts.etaFared(j)
		}
		j.firstStart = e.now - e.base
		if j.measured {
			t := &e.tenants[j.tenant]
			t.tally.waited(j.firstStart - j.arrived)
			for _, m := range e.miss {
				m.waited(t.tierIdx, float64(j.firstStart-j.arrived)/1e9)
			}
			if e.miss != nil {
				e.missCheck()
			}
		}
	}
	e.stats.busy(e.engine, j.gpus)
	if dur >= j.runTimeout {
		// The run timeout comes first: the state machine ends the attempt.
		e.ev.push(event{at: e.now + j.runTimeout, kind: evRunDeadline, id: j.id, b: attempt})
		return
	}
	e.ev.push(event{at: e.now + dur, kind: evFinish, a: xi, id: j.id, b: attempt, c: x.epoch})
}

// runTime draws how long an attempt of j runs: its model's distribution,
// scaled by its size where it has one (the distribution is then the noise),
// plus the cold start where the model was not loaded.
func runTime(j *simJob, m *modelState) int64 {
	dur := m.spec.Service.sample(m.service)
	if j.input != nil {
		dur = max(int64(float64(j.base)*float64(dur)/float64(m.spec.Service.Mean)), 1)
	}
	if j.cold {
		dur += int64(m.spec.ColdStart)
	}
	return dur
}

// stopRun takes an attempt off its executor at now.
func (e dispatcher) stopRun(xi int32, id uint64, attempt int32) (admission.Run, bool) {
	r, ok := e.fleet.Finish(xi, id, attempt)
	if !ok {
		return r, false
	}
	j := &e.jobs[r.Ref]
	e.stats.ran(e.engine, j, j.runStart, e.now)
	e.stats.busy(e.engine, -j.gpus)
	j.running = false
	j.exec = -1
	e.needDispatch = true
	return r, true
}

var errRunner = &sluicev1.JobError{Code: "runner_error", Message: "simulated failure"}

// finish is an executor reporting an attempt's end: Complete, or a
// retryable Fail for the model's failure rate.
func (e dispatcher) finish(ev event) error {
	x := &e.execs[ev.a]
	if x.epoch != ev.c {
		return nil // the executor crashed meanwhile
	}
	r, ok := e.stopRun(ev.a, ev.id, ev.b)
	if !ok {
		return nil
	}
	j := &e.jobs[r.Ref]
	m := &e.models[j.model]
	failed := m.spec.FailureRate > 0 && m.fail.Float64() < m.spec.FailureRate
	var res fsm.Result
	if failed {
		res = e.apply(fsm.CmdFail, &raftv1.Fail{JobId: j.id, Attempt: r.Attempt, Error: errRunner, Retryable: true})
	} else {
		c := &e.completeMsg
		c.JobId, c.Attempt, c.RunNs = j.id, r.Attempt, j.runNs
		res = e.apply(fsm.CmdComplete, c)
		if res.Err == nil {
			e.learn(m, j.runNs)
			e.forecasts.learnSize(m, j.input, j.runNs)
			e.clients.endJob(r.Ref, e.now, "SUCCEEDED")
			return nil
		}
	}
	return e.observe(r.Ref)
}

// learn updates the leader's service time for ETAs, as node's
// serviceTimes does.
func (e dispatcher) learn(m *modelState, ns int64) { m.svc.Observe(time.Duration(ns)) }

// observe reads where a job went after the state machine ended its
// attempt: back in the queue (a retry) or to a terminal state.
func (e dispatcher) observe(si int32) error {
	j := &e.jobs[si]
	if _, ok := e.r.QueuedAttempt(j.id); ok {
		j.enq++
		e.stats.requeued(e.engine, j)
		e.needDispatch = true
		return e.clients.readRecord(si, false)
	}
	if _, ok := e.r.RunningAttempt(j.id); ok {
		return fmt.Errorf("%w: job %d still running after its attempt ended", errInternal, j.id)
	}
	rec, ok := e.r.Job(j.id)
	state := "DEAD_LETTERED"
	if ok {
		state = fsm.StateName(rec.State)
	}
	e.clients.endJob(si, e.now, state)
	return nil
}

// runDeadline is an attempt's run timeout: the leader ticks, the state
// machine ends the attempt (retry or dead letter), and the executor stops
// the run (as node's stopStaleRuns does).
func (e dispatcher) runDeadline(ev event) error {
	si, ok := e.jobIx[ev.id]
	if !ok {
		return nil
	}
	j := &e.jobs[si]
	if j.attempt != ev.b {
		return nil
	}
	e.apply(fsm.CmdTick, tickMsg)
	if a, ok := e.r.RunningAttempt(j.id); ok && a == ev.b {
		return nil
	}
	if j.running {
		e.stopRun(j.exec, j.id, j.attempt)
	} else {
		e.faults.dropLost(j.id)
	}
	return e.observe(si)
}

func (e faults) dropLost(id uint64) {
	for xi := range e.execs {
		x := &e.execs[xi]
		for k, r := range x.lost {
			if r.Job == id {
				x.lost = append(x.lost[:k], x.lost[k+1:]...)
				return
			}
		}
	}
}

// scheduleFailures queues the random crashes and the scheduled outages
// and failovers.
func (e faults) scheduleFailures() {
	fl := &e.w.Failures
	if fl.Crashes != nil {
		for i := range e.execs {
			e.scheduleCrash(int32(i))
		}
	}
	for i, o := range fl.Outages {
		e.ev.push(event{at: e.base + int64(o.At), kind: evOutage, a: int32(i)})
	}
	for i, fo := range fl.Failovers {
		e.ev.push(event{at: e.base + int64(fo.At), kind: evFailover, a: int32(i)})
	}
}

// crashes is the executor's stream of crash and repair times, made on
// first use (only workloads with crashes need one).
func (e faults) crashes(xi int32) *rand.Rand {
	x := &e.execs[xi]
	if x.crashRNG == nil {
		x.crashRNG = stream(e.seed, "crash/"+x.name)
	}
	return x.crashRNG
}

func (e faults) scheduleCrash(xi int32) {
	x := &e.execs[xi]
	x.crashToken++
	d := int64(float64(e.w.Failures.Crashes.MTBF) * e.crashes(xi).ExpFloat64())
	e.ev.push(event{at: e.now + max(d, 1), kind: evCrash, a: xi, c: x.crashToken})
}

func (e faults) crash(ev event) {
	x := &e.execs[ev.a]
	if ev.c != x.crashToken {
		return
	}
	if !e.fleet.IsUp(ev.a) {
		e.scheduleCrash(ev.a)
		return
	}
	e.down(ev.a)
	d := int64(float64(e.w.Failures.Crashes.Repair) * e.crashes(ev.a).ExpFloat64())
	e.ev.push(event{at: e.now + max(d, 1), kind: evRepair, a: ev.a, c: x.epoch})
}

// down takes an executor down: its running attempts are lost until the
// leader notices (failures.detect) and requeues them.
func (e faults) down(xi int32) {
	x := &e.execs[xi]
	e.stats.crashes++
	for _, r := range e.fleet.Down(xi) {
		j := &e.jobs[r.Ref]
		e.stats.ran(e.engine, j, j.runStart, e.now)
		e.stats.busy(e.engine, -j.gpus)
		j.running = false
		j.exec = -1
		x.lost = append(x.lost, r)
	}
	x.epoch++
	e.stats.up(e.engine, -x.gpus)
	detect := int64(e.w.Failures.Detect)
	if detect == 0 {
		detect = int64(10 * time.Second)
	}
	if len(x.lost) > 0 {
		e.ev.push(event{at: e.now + detect, kind: evDetect, a: xi, c: x.epoch})
	}
}

func (e faults) repair(ev event) {
	x := &e.execs[ev.a]
	if e.fleet.IsUp(ev.a) || x.epoch != ev.c {
		return
	}
	e.fleet.Up(ev.a)
	e.stats.up(e.engine, x.gpus)
	e.needDispatch = true
	if e.w.Failures.Crashes != nil {
		e.scheduleCrash(ev.a)
	}
}

// detect is the leader requeueing the attempts of a lost executor.
func (e faults) detect(ev event) error {
	x := &e.execs[ev.a]
	lost := x.lost
	x.lost = nil
	for _, r := range lost {
		res := e.apply(fsm.CmdRequeue, &raftv1.Requeue{JobId: r.Job, Attempt: r.Attempt,
			Reason: fmt.Sprintf("executor %s lost (crashed)", x.name)})
		if res.Err != nil {
			continue // already ended (a run timeout got there first)
		}
		if err := e.placing.observe(r.Ref); err != nil {
			return err
		}
	}
	return nil
}

func (e faults) outage(ev event) {
	o := e.w.Failures.Outages[ev.a]
	var cands []int32
	for i := range e.execs {
		x := &e.execs[i]
		if e.fleet.IsUp(int32(i)) && (o.Group == "" || e.w.Executors[x.group].Name == o.Group) {
			cands = append(cands, int32(i))
		}
	}
	total := 0
	for i := range e.execs {
		if o.Group == "" || e.w.Executors[e.execs[i].group].Name == o.Group {
			total++
		}
	}
	n := min(o.Executors.of(total), len(cands))
	r := stream(e.seed, fmt.Sprintf("outage/%d", ev.a))
	r.Shuffle(len(cands), func(a, b int) { cands[a], cands[b] = cands[b], cands[a] })
	pick := cands[:n]
	sort.Slice(pick, func(a, b int) bool { return pick[a] < pick[b] })
	for _, xi := range pick {
		e.down(xi)
		if o.For > 0 {
			e.ev.push(event{at: e.now + int64(o.For), kind: evRepair, a: xi, c: e.execs[xi].epoch})
		}
	}
}
