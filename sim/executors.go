package sim

import (
	"fmt"
	"math/bits"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/sluicehq/sluice/fsm"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/scheduler"
)

// run is one attempt running on an executor.
type run struct {
	id      uint64
	attempt int32
	gpus    int32
	slot    int32 // index in the sim's job slab
}

type executor struct {
	name        string
	group       int32
	gpus, slots int32
	memMB       int64
	models      []string
	warm        []string
	warmCap     int
	up          bool
	epoch       uint32 // bumps when it goes down: older events are stale
	crashToken  uint32
	usedGPUs    int32
	runs        []run
	lost        []run // attempts lost in a crash, until the leader notices
	crashRNG    *rand.Rand
}

func (e *engine) buildExecutors() error {
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
	// The leader offers executors in name order (node/executors.go).
	sort.Slice(all, func(a, b int) bool { return all[a].name < all[b].name })
	for i, p := range all {
		g := &w.Executors[p.group]
		gpus := g.GPUs
		if gpus <= 0 {
			gpus = 1
		}
		slots := g.Slots
		if slots <= 0 {
			slots = gpus
		}
		wc := g.WarmCapacity
		if wc <= 0 {
			wc = 2
		}
		warm := append([]string(nil), g.Warm...)
		if len(warm) > wc {
			warm = warm[len(warm)-wc:]
		}
		e.execs = append(e.execs, executor{name: p.name, group: p.group, gpus: gpus, slots: slots,
			memMB: g.GPUMemoryMB, models: g.Models, warm: warm, warmCap: wc, up: true})
		e.execIx[p.name] = int32(i)
	}
	e.free = make([]uint64, (len(e.execs)+63)/64)
	for i := range e.execs {
		e.markRoom(int32(i))
	}
	return nil
}

// dispatch is the leader's dispatch: offer the executors' free slots to
// the state machine's placement (fsm.PlaceQueued, what the leader's
// fsm.Dispatch runs) and commit each Assign it proposes.
func (e *engine) dispatch() error {
	if !e.hasRoom() || e.f.QueueLen() == 0 {
		// Nothing can be placed. (The leader would still offer its full
		// executors; placement on them proposes nothing and changes
		// nothing, so skipping the call changes no result.)
		return nil
	}
	slots := e.slots[:0]
	if e.reserve {
		// Full executors are offered too (0 jobs, 0 GPUs), so that one can
		// be held for a big job, as the leader does.
		for i := range e.execs {
			if x := &e.execs[i]; x.up {
				slots = append(slots, e.slotOf(x))
			}
		}
	} else {
		for w, word := range e.free {
			for word != 0 {
				b := bits.TrailingZeros64(word)
				word &^= 1 << b
				slots = append(slots, e.slotOf(&e.execs[w*64+b]))
			}
		}
	}
	e.slots = slots
	if len(slots) == 0 {
		return nil
	}
	e.assigns = e.f.PlaceQueued(e.assigns[:0], e.now, slots)
	for _, p := range e.assigns {
		xi, ok := e.execIx[p.Executor]
		si, ok2 := e.jobIx[p.JobID]
		if !ok || !ok2 {
			return fmt.Errorf("%w: dispatch proposed job %d on %q", errInternal, p.JobID, p.Executor)
		}
		a := &e.assignMsg // the state machine keeps nothing of it (fsm.ApplyCommand)
		a.JobId, a.Executor, a.Attempt = p.JobID, p.Executor, p.Attempt
		x := &e.execs[xi]
		j := &e.jobs[si]
		if !x.hasRoom() || x.usedGPUs+j.gpus > x.gpus {
			continue // as the leader's pool.reserve refuses
		}
		if res := e.apply(fsm.CmdAssign, a); res.Err != nil {
			continue // as the leader unreserves
		}
		e.start(xi, si, a.Attempt)
	}
	return nil
}

func (e *engine) slotOf(x *executor) scheduler.Slot {
	free := x.slots - int32(len(x.runs))
	gpus := x.gpus - x.usedGPUs
	if free <= 0 || gpus < 0 {
		free, gpus = 0, 0
	}
	return scheduler.Slot{Executor: x.name, GPUs: gpus, TotalGPUs: x.gpus, GPUMemoryMB: x.memMB,
		Models: x.models, Warm: x.warm, Jobs: free}
}

// hasRoom reports whether some executor can take a job.
func (e *engine) hasRoom() bool {
	for _, w := range e.free {
		if w != 0 {
			return true
		}
	}
	return false
}

func (e *engine) markRoom(xi int32) {
	w, b := xi/64, uint(xi%64)
	if e.execs[xi].hasRoom() {
		e.free[w] |= 1 << b
	} else {
		e.free[w] &^= 1 << b
	}
}

// start runs an assigned attempt on an executor: its service time from the
// model's distribution, plus the cold start where the model is not warm.
func (e *engine) start(xi, si int32, attempt int32) {
	x := &e.execs[xi]
	j := &e.jobs[si]
	m := &e.models[j.model]
	e.stats.dequeued(e, j)
	dur := m.spec.Service.sample(m.service)
	if !contains(x.warm, m.name) {
		dur += int64(m.spec.ColdStart)
		x.warm = scheduler.WarmAfter(x.warm, m.name, x.warmCap)
	} else if x.warm[len(x.warm)-1] != m.name {
		x.warm = scheduler.WarmAfter(x.warm, m.name, x.warmCap)
	}
	j.attempt = attempt
	j.running = true
	j.exec = xi
	j.runStart = e.now
	j.runNs = dur
	j.runTimeout = m.timeout
	if j.firstStart < 0 {
		if j.eta {
			e.etaFared(j)
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
	x.runs = append(x.runs, run{id: j.id, attempt: attempt, gpus: j.gpus, slot: si})
	x.usedGPUs += j.gpus
	e.stats.busy(e, j.gpus)
	e.markRoom(xi)
	if dur >= j.runTimeout {
		// The run timeout comes first: the state machine ends the attempt.
		e.ev.push(event{at: e.now + j.runTimeout, kind: evRunDeadline, id: j.id, b: attempt})
		return
	}
	e.ev.push(event{at: e.now + dur, kind: evFinish, a: xi, id: j.id, b: attempt, c: x.epoch})
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// stopRun takes an attempt off its executor at now.
func (e *engine) stopRun(xi int32, id uint64) (run, bool) {
	x := &e.execs[xi]
	for k, r := range x.runs {
		if r.id == id {
			x.runs = append(x.runs[:k], x.runs[k+1:]...)
			x.usedGPUs -= r.gpus
			j := &e.jobs[r.slot]
			e.stats.ran(e, j, j.runStart, e.now)
			e.stats.busy(e, -r.gpus)
			j.running = false
			j.exec = -1
			e.markRoom(xi)
			e.needDispatch = true
			return r, true
		}
	}
	return run{}, false
}

var errRunner = &sluicev1.JobError{Code: "runner_error", Message: "simulated failure"}

// finish is an executor reporting an attempt's end: Complete, or a
// retryable Fail for the model's failure rate.
func (e *engine) finish(ev event) error {
	x := &e.execs[ev.a]
	if x.epoch != ev.c {
		return nil // the executor crashed meanwhile
	}
	r, ok := e.stopRun(ev.a, ev.id)
	if !ok || r.attempt != ev.b {
		return nil
	}
	j := &e.jobs[r.slot]
	m := &e.models[j.model]
	failed := m.spec.FailureRate > 0 && m.fail.Float64() < m.spec.FailureRate
	var res fsm.Result
	if failed {
		res = e.apply(fsm.CmdFail, &raftv1.Fail{JobId: j.id, Attempt: r.attempt, Error: errRunner, Retryable: true})
	} else {
		c := &e.completeMsg
		c.JobId, c.Attempt, c.RunNs = j.id, r.attempt, j.runNs
		res = e.apply(fsm.CmdComplete, c)
		if res.Err == nil {
			e.learn(m, j.runNs)
			e.endJob(r.slot, e.now, "SUCCEEDED")
			return nil
		}
	}
	return e.observe(r.slot)
}

// learn updates the leader's service time for ETAs, as node's
// serviceTimes does.
func (e *engine) learn(m *modelState, ns int64) { m.svc.Observe(time.Duration(ns)) }

// observe reads where a job went after the state machine ended its
// attempt: back in the queue (a retry) or to a terminal state.
func (e *engine) observe(si int32) error {
	j := &e.jobs[si]
	if _, ok := e.f.QueuedAttempt(j.id); ok {
		j.enq++
		e.stats.requeued(e, j)
		e.needDispatch = true
		return e.readRecord(si, false)
	}
	if _, ok := e.f.RunningAttempt(j.id); ok {
		return fmt.Errorf("%w: job %d still running after its attempt ended", errInternal, j.id)
	}
	rec, ok := e.f.Job(j.id)
	state := "DEAD_LETTERED"
	if ok {
		state = fsm.StateName(rec.State)
	}
	e.endJob(si, e.now, state)
	return nil
}

// runDeadline is an attempt's run timeout: the leader ticks, the state
// machine ends the attempt (retry or dead letter), and the executor stops
// the run (as node's stopStaleRuns does).
func (e *engine) runDeadline(ev event) error {
	si, ok := e.jobIx[ev.id]
	if !ok {
		return nil
	}
	j := &e.jobs[si]
	if j.attempt != ev.b {
		return nil
	}
	e.apply(fsm.CmdTick, tickMsg)
	if a, ok := e.f.RunningAttempt(j.id); ok && a == ev.b {
		return nil
	}
	if j.running {
		e.stopRun(j.exec, j.id)
	} else {
		e.dropLost(j.id)
	}
	return e.observe(si)
}

func (e *engine) dropLost(id uint64) {
	for xi := range e.execs {
		x := &e.execs[xi]
		for k, r := range x.lost {
			if r.id == id {
				x.lost = append(x.lost[:k], x.lost[k+1:]...)
				return
			}
		}
	}
}

// scheduleFailures queues the random crashes and the scheduled outages
// and failovers.
func (e *engine) scheduleFailures() {
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
func (e *engine) crashes(xi int32) *rand.Rand {
	x := &e.execs[xi]
	if x.crashRNG == nil {
		x.crashRNG = stream(e.seed, "crash/"+x.name)
	}
	return x.crashRNG
}

func (e *engine) scheduleCrash(xi int32) {
	x := &e.execs[xi]
	x.crashToken++
	d := int64(float64(e.w.Failures.Crashes.MTBF) * e.crashes(xi).ExpFloat64())
	e.ev.push(event{at: e.now + max(d, 1), kind: evCrash, a: xi, c: x.crashToken})
}

func (e *engine) crash(ev event) {
	x := &e.execs[ev.a]
	if ev.c != x.crashToken {
		return
	}
	if !x.up {
		e.scheduleCrash(ev.a)
		return
	}
	e.down(ev.a)
	d := int64(float64(e.w.Failures.Crashes.Repair) * e.crashes(ev.a).ExpFloat64())
	e.ev.push(event{at: e.now + max(d, 1), kind: evRepair, a: ev.a, c: x.epoch})
}

// down takes an executor down: its running attempts are lost until the
// leader notices (failures.detect) and requeues them.
func (e *engine) down(xi int32) {
	x := &e.execs[xi]
	e.stats.crashes++
	for _, r := range x.runs {
		j := &e.jobs[r.slot]
		e.stats.ran(e, j, j.runStart, e.now)
		e.stats.busy(e, -r.gpus)
		j.running = false
		j.exec = -1
		x.lost = append(x.lost, r)
	}
	x.runs = x.runs[:0]
	x.usedGPUs = 0
	x.up = false
	x.epoch++
	x.warm = nil
	e.stats.up(e, -x.gpus)
	e.markRoom(xi)
	detect := int64(e.w.Failures.Detect)
	if detect == 0 {
		detect = int64(10 * time.Second)
	}
	if len(x.lost) > 0 {
		e.ev.push(event{at: e.now + detect, kind: evDetect, a: xi, c: x.epoch})
	}
}

func (e *engine) repair(ev event) {
	x := &e.execs[ev.a]
	if x.up || x.epoch != ev.c {
		return
	}
	x.up = true
	e.stats.up(e, x.gpus)
	e.markRoom(ev.a)
	e.needDispatch = true
	if e.w.Failures.Crashes != nil {
		e.scheduleCrash(ev.a)
	}
}

// detect is the leader requeueing the attempts of a lost executor.
func (e *engine) detect(ev event) error {
	x := &e.execs[ev.a]
	lost := x.lost
	x.lost = nil
	for _, r := range lost {
		res := e.apply(fsm.CmdRequeue, &raftv1.Requeue{JobId: r.id, Attempt: r.attempt,
			Reason: fmt.Sprintf("executor %s lost (crashed)", x.name)})
		if res.Err != nil {
			continue // already ended (a run timeout got there first)
		}
		if err := e.observe(r.slot); err != nil {
			return err
		}
	}
	return nil
}

func (e *engine) outage(ev event) {
	o := e.w.Failures.Outages[ev.a]
	var cands []int32
	for i := range e.execs {
		x := &e.execs[i]
		if x.up && (o.Group == "" || e.w.Executors[x.group].Name == o.Group) {
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
