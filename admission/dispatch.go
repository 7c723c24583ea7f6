package admission

import (
	"github.com/sluicehq/sluice/fsm"
	"github.com/sluicehq/sluice/scheduler"
)

// Placed is one assignment Dispatch proposes, with the GPUs it holds.
type Placed struct {
	fsm.Assignment
	Exec int32  // the executor's index in the fleet
	Mask uint64 // the GPUs reserved for it (Fleet.IDs names them)
}

// Placer is the state machine's placement (fsm.JobReads.PlaceQueued), under
// whatever lock its caller keeps; p is the placement's working memory.
type Placer interface {
	PlaceQueued(p *scheduler.Placer, dst []fsm.Assignment, now int64, slots []scheduler.Slot) []fsm.Assignment
}

// Dispatcher is a leader's dispatch scratch: one per leader loop, not safe
// for concurrent use.
type Dispatcher struct {
	placer  scheduler.Placer
	slots   []scheduler.Slot
	assigns []fsm.Assignment
	placed  []Placed
}

// Dispatch is the leader's placement, the server's and the simulator's
// alike: the state machine places its ready jobs at now on the slots the
// fleet offers (fsm.PlaceQueued; full executors too when full, so that a
// big job can hold one), and each placement reserves the lowest free GPUs
// of its executor (Fleet.Reserve, with ref(job) as its Ref; ref nil: 0)
// before its Assign is committed. A placement whose executor is gone or
// has no room left is dropped. The caller commits each, then starts it
// (Fleet.Start) or gives the reservation back (Fleet.Unreserve). The result
// is valid until the next call.
func (d *Dispatcher) Dispatch(st Placer, fl *Fleet, now int64, full bool, ref func(job uint64) int32) []Placed {
	d.placed = d.placed[:0]
	d.slots = fl.Offer(d.slots[:0], full)
	if len(d.slots) == 0 {
		return d.placed
	}
	d.assigns = st.PlaceQueued(&d.placer, d.assigns[:0], now, d.slots)
	for _, a := range d.assigns {
		xi, ok := fl.Index(a.Executor)
		if !ok {
			continue
		}
		var r int32
		if ref != nil {
			r = ref(a.JobID)
		}
		mask, ok := fl.Reserve(xi, a.JobID, a.GPUs, r)
		if !ok {
			continue
		}
		d.placed = append(d.placed, Placed{Assignment: a, Exec: xi, Mask: mask})
	}
	return d.placed
}
