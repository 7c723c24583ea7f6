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
	cancel  context.CancelCauseFunc
}

// localExec tracks one local executor's slots.
type localExec struct {
	cfg      LocalExecutor
	running  map[uint64]*run
	reserved map[uint64]bool // assignment proposed, not yet started
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
		p.execs[e.Name] = &localExec{cfg: e, running: make(map[uint64]*run), reserved: make(map[uint64]bool)}
		p.names = append(p.names, e.Name)
	}
	sort.Strings(p.names)
	return p
}

// freeSlots lists one Slot per free place, executors in name order.
func (p *executorPool) freeSlots() []scheduler.Slot {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []scheduler.Slot
	for _, n := range p.names {
		e := p.execs[n]
		for i := len(e.running) + len(e.reserved); i < e.cfg.Slots; i++ {
			out = append(out, scheduler.Slot{Executor: n, GPUs: e.cfg.GPUs, GPUMemoryMB: e.cfg.GPUMemoryMB, Models: e.cfg.Models})
		}
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

// reserve holds a slot on the named executor for a job about to be assigned.
func (p *executorPool) reserve(executor string, job uint64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.execs[executor]
	if !ok || len(e.running)+len(e.reserved) >= e.cfg.Slots {
		return errNoSlot
	}
	e.reserved[job] = true
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
func (p *executorPool) start(parent context.Context, executor string, job uint64, attempt int32) (gpuexec.Runner, context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.execs[executor]
	delete(e.reserved, job)
	ctx, cancel := context.WithCancelCause(parent)
	e.running[job] = &run{attempt: attempt, cancel: cancel}
	return e.cfg.Runner, ctx
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
	if e.reserved[job] {
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
