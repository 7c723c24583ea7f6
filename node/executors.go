package node

import (
	"context"
	"errors"
	"sort"
	"sync"

	"github.com/sluicehq/sluice/gpuexec"
	"github.com/sluicehq/sluice/scheduler"
)

// LocalExecutor is an executor that runs inside the node's process (the
// synthetic executors of `sluice dev`).
type LocalExecutor struct {
	Name        string
	Slots       int
	GPUs        int32
	GPUMemoryMB int64
	// Models it serves; empty means all.
	Models []string
	Runner gpuexec.Runner
}

// run is one attempt this node started on a local executor.
type run struct {
	attempt int32
	gpus    int32
	cancel  context.CancelCauseFunc
}

// localExec tracks one local executor's slots.
type localExec struct {
	cfg      LocalExecutor
	running  map[uint64]*run
	reserved map[uint64]int32 // assignment proposed, not yet started: its GPUs
	// warm lists the models run here most recently, newest last: a model
	// that ran is loaded, and placement prefers such executors.
	warm []string
}

// maxWarm is how many recently run models an executor counts as loaded.
const maxWarm = 2

// busy is the executor's jobs running or about to, and the GPUs they hold.
func (e *localExec) busy() (jobs int, gpus int32) {
	for _, r := range e.running {
		gpus += r.gpus
	}
	for _, g := range e.reserved {
		gpus += g
	}
	return len(e.running) + len(e.reserved), gpus
}

// executorPool holds the local executors and the attempts they run. It is
// soft state: after a restart it starts empty and the leader requeues
// whatever the log says was running (after the lease grace period).
type executorPool struct {
	mu    sync.Mutex
	execs map[string]*localExec
	names []string
	freed chan struct{}
}

func newExecutorPool(execs []LocalExecutor) *executorPool {
	p := &executorPool{execs: make(map[string]*localExec), freed: make(chan struct{}, 1)}
	for _, e := range execs {
		if e.Slots <= 0 {
			e.Slots = 1
		}
		if e.GPUs <= 0 {
			e.GPUs = 1
		}
		p.execs[e.Name] = &localExec{cfg: e, running: make(map[uint64]*run), reserved: make(map[uint64]int32)}
		p.names = append(p.names, e.Name)
	}
	sort.Strings(p.names)
	return p
}

// freeSlots offers one Slot per executor with room, in name order: the
// GPUs free now, the executor's total, how many more jobs it may run and
// the models warm on it. Executors that are full are offered too (0 jobs,
// 0 GPUs free) so that the scheduler can hold one for a big job.
func (p *executorPool) freeSlots() []scheduler.Slot {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]scheduler.Slot, 0, len(p.names))
	for _, n := range p.names {
		e := p.execs[n]
		jobs, gpus := e.busy()
		free := int32(max(0, e.cfg.Slots-jobs))
		freeGPUs := max(0, e.cfg.GPUs-gpus)
		if free == 0 {
			freeGPUs = 0 // Slot.Jobs 0 means 1: no GPUs is what says "full"
		}
		out = append(out, scheduler.Slot{Executor: n, GPUs: freeGPUs, TotalGPUs: e.cfg.GPUs,
			GPUMemoryMB: e.cfg.GPUMemoryMB, Models: e.cfg.Models, Warm: e.warm, Jobs: free})
	}
	return out
}

// slotsFor counts the slots that can serve a model, and how many are free.
func (p *executorPool) slotsFor(model string) (total, free int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.execs {
		if len(e.cfg.Models) == 0 || contains(e.cfg.Models, model) {
			total += e.cfg.Slots
			free += max(0, e.cfg.Slots-len(e.running)-len(e.reserved))
		}
	}
	return total, free
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

var errNoSlot = errors.New("no free slot")

// reserve holds a place and GPUs on the named executor for a job about to
// be assigned.
func (p *executorPool) reserve(executor string, job uint64, gpus int32) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.execs[executor]
	if !ok {
		return errNoSlot
	}
	jobs, used := e.busy()
	if jobs >= e.cfg.Slots || used+gpus > e.cfg.GPUs {
		return errNoSlot
	}
	e.reserved[job] = gpus
	return nil
}

// unreserve gives back a reservation whose assignment did not commit.
func (p *executorPool) unreserve(executor string, job uint64) {
	p.mu.Lock()
	if e, ok := p.execs[executor]; ok {
		delete(e.reserved, job)
	}
	p.mu.Unlock()
	p.signal()
}

// start turns a reservation into a running attempt and returns the runner
// and the attempt's context.
func (p *executorPool) start(parent context.Context, executor string, job uint64, attempt int32, model string) (gpuexec.Runner, context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.execs[executor]
	gpus := e.reserved[job]
	delete(e.reserved, job)
	ctx, cancel := context.WithCancelCause(parent)
	e.running[job] = &run{attempt: attempt, gpus: gpus, cancel: cancel}
	e.warm = warmAfter(e.warm, model)
	return e.cfg.Runner, ctx
}

// warmAfter is the warm list after running model: model moves to the end,
// the oldest falls off past maxWarm. It copies, since slots share the old
// slice.
func warmAfter(warm []string, model string) []string {
	out := make([]string, 0, maxWarm)
	for _, m := range warm {
		if m != model {
			out = append(out, m)
		}
	}
	out = append(out, model)
	if len(out) > maxWarm {
		out = out[len(out)-maxWarm:]
	}
	return out
}

// finish frees the slot of a finished attempt.
func (p *executorPool) finish(executor string, job uint64, attempt int32) {
	p.mu.Lock()
	if e, ok := p.execs[executor]; ok {
		if r, ok := e.running[job]; ok && r.attempt == attempt {
			r.cancel(nil)
			delete(e.running, job)
		}
	}
	p.mu.Unlock()
	p.signal()
}

func (p *executorPool) signal() {
	select {
	case p.freed <- struct{}{}:
	default:
	}
}

// holds reports whether a local executor runs (or is about to run) the
// given attempt of a job.
func (p *executorPool) holds(executor string, job uint64, attempt int32) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.execs[executor]
	if !ok {
		return false
	}
	if _, ok := e.reserved[job]; ok {
		return true
	}
	r, ok := e.running[job]
	return ok && r.attempt == attempt
}

// attempts lists every running attempt, for reconciliation with the log.
func (p *executorPool) attempts() map[uint64]int32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[uint64]int32)
	for _, e := range p.execs {
		for id, r := range e.running {
			out[id] = r.attempt
		}
	}
	return out
}

// stop cancels the given attempt if it is running here.
func (p *executorPool) stop(job uint64, attempt int32, why error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.execs {
		if r, ok := e.running[job]; ok && r.attempt == attempt {
			r.cancel(why)
		}
	}
}

// status describes the executors for GetClusterStatus.
func (p *executorPool) status() []execStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]execStatus, 0, len(p.names))
	for _, n := range p.names {
		e := p.execs[n]
		out = append(out, execStatus{name: n, slots: e.cfg.Slots, busy: len(e.running) + len(e.reserved), models: e.cfg.Models})
	}
	return out
}

type execStatus struct {
	name   string
	slots  int
	busy   int
	models []string
}
