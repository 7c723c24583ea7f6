package admission

import (
	"fmt"
	"math/bits"
	"slices"
	"strconv"

	"github.com/sluicehq/sluice/scheduler"
)

// Fleet is the leader's book of its executors, the executors' half of the
// leader protocol: what each offers, the attempts each runs or is about to
// run, and which of its GPUs they hold. It is soft state, never in the
// log. The server keeps one under its registry's lock, fed by leases and
// heartbeats; the simulator keeps one fed by its events. Both offer it to
// placement, reserve GPUs, start, finish and lose attempts through it, so
// that they choose executors and GPU ids alike. Not safe for concurrent use.
//
// Executors are numbered in name order, the order they are offered in;
// Attach of a new name and Remove renumber those after it.
type Fleet struct {
	execs []member
	ix    map[string]int32
	room  []uint64 // bit i: execs[i] is up, with a free slot and a free GPU
}

// Desc is what an executor says of itself.
type Desc struct {
	Name string
	// GPUs are its GPU ids (at most 64); one that declares none has one,
	// "gpu0".
	GPUs []string
	// GPUMemoryMB is each GPU's memory (0, or missing: not said).
	GPUMemoryMB []int64
	// Slots is how many jobs it runs at once; less than 1 means 1.
	Slots int32
	// Models it serves; empty means any.
	Models []string
	// Warm are the models loaded on it, the most recent last.
	Warm []string
	// WarmCap is how many models it keeps loaded; 0 means 2.
	WarmCap int
}

// MaxGPUs is the most GPUs a Fleet executor may have.
const MaxGPUs = 64

// Run is one attempt an executor runs, or is reserved for.
type Run struct {
	Job     uint64
	Attempt int32
	// GPUs it holds: bit k is Desc.GPUs[k].
	GPUs uint64
	// Ref is the caller's (the simulator's job slot).
	Ref int32
	// Reserved: placed and proposed, not yet started.
	Reserved bool
}

type member struct {
	Desc
	up    bool
	gpus  int32 // len(GPUs), at least 1
	memMB int64 // the smallest memory said: what each GPU is offered with
	used  uint64
	runs  []Run
}

// NewFleet is an empty fleet.
func NewFleet() *Fleet { return &Fleet{ix: map[string]int32{}} }

func (m *member) set(d Desc) {
	if len(d.GPUs) == 0 {
		d.GPUs = []string{"gpu0"}
	}
	if len(d.GPUs) > MaxGPUs {
		d.GPUs = d.GPUs[:MaxGPUs]
	}
	if d.WarmCap <= 0 {
		d.WarmCap = 2
	}
	if len(d.Warm) > d.WarmCap {
		d.Warm = d.Warm[len(d.Warm)-d.WarmCap:]
	}
	d.Slots = max(1, d.Slots)
	m.Desc, m.gpus, m.memMB = d, int32(len(d.GPUs)), 0
	for _, mb := range d.GPUMemoryMB {
		if m.memMB == 0 || (mb != 0 && mb < m.memMB) {
			m.memMB = mb
		}
	}
}

func (m *member) hasRoom() bool {
	return m.up && int32(len(m.runs)) < m.Slots && bits.OnesCount64(m.used) < int(m.gpus)
}

// GPUIDs names an executor's GPUs by UUID, "gpuK" for one without (and
// "gpu0" for an executor that declares none).
func GPUIDs(uuids []string) []string {
	ids := make([]string, max(1, len(uuids)))
	for i := range ids {
		if i < len(uuids) {
			ids[i] = uuids[i]
		}
		if ids[i] == "" {
			ids[i] = "gpu" + strconv.Itoa(i)
		}
	}
	return ids
}

// Len is how many executors the fleet holds, up or down.
func (f *Fleet) Len() int { return len(f.execs) }

// Index is the number of the executor called name.
func (f *Fleet) Index(name string) (int32, bool) {
	i, ok := f.ix[name]
	return i, ok
}

// Name is executor i's name.
func (f *Fleet) Name(i int32) string { return f.execs[i].Name }

// Runs are the attempts executor i runs or is reserved for. The slice is
// the fleet's: read it before the next change.
func (f *Fleet) Runs(i int32) []Run { return f.execs[i].runs }

// Used is the GPUs of executor i that its runs hold (bit k: Desc.GPUs[k]).
func (f *Fleet) Used(i int32) uint64 { return f.execs[i].used }

// IDs names the GPUs of executor i in mask.
func (f *Fleet) IDs(i int32, mask uint64) []string {
	out := make([]string, 0, bits.OnesCount64(mask))
	for m := mask; m != 0; m &= m - 1 {
		out = append(out, f.execs[i].GPUs[bits.TrailingZeros64(m)])
	}
	return out
}

// GPUMask is the mask of ids among all (bit k: all[k]); ids not in all
// are left out.
func GPUMask(all, ids []string) uint64 {
	var mask uint64
	for k, id := range all {
		if slices.Contains(ids, id) {
			mask |= 1 << k
		}
	}
	return mask
}

// AllGPUs names every GPU of executor i.
func (f *Fleet) AllGPUs(i int32) []string { return f.execs[i].GPUs }

// Warm are the models loaded on executor i, the most recent last.
func (f *Fleet) Warm(i int32) []string { return f.execs[i].Warm }

// Attach puts an executor up with d and the runs it is known to have
// (their GPUs held), replacing any executor of the same name and its
// runs. It returns its number.
func (f *Fleet) Attach(d Desc, runs []Run) int32 {
	i, ok := f.ix[d.Name]
	if !ok {
		i = int32(len(f.execs))
		for i > 0 && f.execs[i-1].Name > d.Name {
			i--
		}
		if int(i) == len(f.execs) { // the last in name order: nothing renumbered
			f.execs = append(f.execs, member{})
			f.ix[d.Name] = i
			if int(i)/64 == len(f.room) {
				f.room = append(f.room, 0)
			}
		} else {
			f.execs = slices.Insert(f.execs, int(i), member{Desc: Desc{Name: d.Name}})
			f.renumber()
		}
	}
	m := &f.execs[i]
	m.set(d)
	m.up, m.used, m.runs = true, 0, append(m.runs[:0], runs...)
	for _, r := range runs {
		m.used |= r.GPUs
	}
	f.mark(i)
	return i
}

// Update replaces executor i's description, keeping its runs.
func (f *Fleet) Update(i int32, d Desc) {
	f.execs[i].set(d)
	f.mark(i)
}

// SetWarm replaces the models executor i says are loaded (all of them,
// however many).
func (f *Fleet) SetWarm(i int32, warm []string) {
	m := &f.execs[i]
	m.Warm, m.WarmCap = warm, max(m.WarmCap, len(warm)) // what it says is loaded, is
}

// Remove forgets executor i, returning its runs.
func (f *Fleet) Remove(i int32) []Run {
	runs := f.execs[i].runs
	f.execs = slices.Delete(f.execs, int(i), int(i)+1)
	f.renumber()
	return runs
}

// Clear forgets every executor.
func (f *Fleet) Clear() {
	f.execs = f.execs[:0]
	f.renumber()
}

func (f *Fleet) renumber() {
	clear(f.ix)
	f.room = make([]uint64, (len(f.execs)+63)/64)
	for i := range f.execs {
		f.ix[f.execs[i].Name] = int32(i)
		f.mark(int32(i))
	}
}

func (f *Fleet) mark(i int32) {
	w, b := i/64, uint(i%64)
	if f.execs[i].hasRoom() {
		f.room[w] |= 1 << b
	} else {
		f.room[w] &^= 1 << b
	}
}

// Down takes executor i down (crashed): it is offered nothing, its loaded
// models are gone, and it returns the runs it held.
func (f *Fleet) Down(i int32) []Run {
	m := &f.execs[i]
	runs := m.runs
	m.runs, m.used, m.up, m.Warm = nil, 0, false, nil
	f.mark(i)
	return runs
}

// Up puts executor i back up.
func (f *Fleet) Up(i int32) {
	f.execs[i].up = true
	f.mark(i)
}

// IsUp reports whether executor i is up.
func (f *Fleet) IsUp(i int32) bool { return f.execs[i].up }

// HasRoom reports whether some executor could take a job now.
func (f *Fleet) HasRoom() bool {
	for _, w := range f.room {
		if w != 0 {
			return true
		}
	}
	return false
}

// Offer appends to dst what the executors up offer placement, in name
// order: each one's free GPUs, its total, how many more jobs it may take
// and its warm models. Full executors are offered too (no GPUs free) when
// full is set, so that one can be held for a big job (the policy's
// reserve_after); else only those with room.
func (f *Fleet) Offer(dst []scheduler.Slot, full bool) []scheduler.Slot {
	if full {
		for i := range f.execs {
			if f.execs[i].up {
				dst = append(dst, f.execs[i].slot())
			}
		}
		return dst
	}
	for w, word := range f.room {
		for word != 0 {
			b := bits.TrailingZeros64(word)
			word &^= 1 << b
			dst = append(dst, f.execs[w*64+b].slot())
		}
	}
	return dst
}

func (m *member) slot() scheduler.Slot {
	jobs := m.Slots - int32(len(m.runs))
	gpus := m.gpus - int32(bits.OnesCount64(m.used))
	if jobs <= 0 || gpus < 0 {
		jobs, gpus = 0, 0 // Slot.Jobs 0 means 1: no GPUs free is what says "full"
	}
	return scheduler.Slot{Executor: m.Name, GPUs: gpus, TotalGPUs: m.gpus, GPUMemoryMB: m.memMB,
		Models: m.Models, Warm: m.Warm, Jobs: jobs}
}

// Reserve holds gpus free GPUs of executor i, the lowest numbered, for a
// job placement put there, before its Assign commits; ref is the caller's.
// false when the executor is down or full.
func (f *Fleet) Reserve(i int32, job uint64, gpus int32, ref int32) (uint64, bool) {
	m := &f.execs[i]
	if !m.up || int32(len(m.runs)) >= m.Slots {
		return 0, false
	}
	var pick uint64
	free := ^m.used
	if m.gpus < 64 {
		free &= 1<<m.gpus - 1
	}
	for n := int32(0); n < gpus; n++ {
		if free == 0 {
			return 0, false
		}
		b := free & -free
		pick |= b
		free &^= b
	}
	m.used |= pick
	m.runs = append(m.runs, Run{Job: job, GPUs: pick, Ref: ref, Reserved: true})
	f.mark(i)
	return pick, true
}

// reservation is the index of job's reservation in m.runs, or -1.
func (m *member) reservation(job uint64) int {
	for k := range m.runs {
		if m.runs[k].Job == job && m.runs[k].Reserved {
			return k
		}
	}
	return -1
}

// running is the index of job's running attempt in m.runs, or -1. (A job
// can have both: a stale attempt not yet stopped, and a new reservation.)
func (m *member) running(job uint64, attempt int32) int {
	for k := range m.runs {
		if r := &m.runs[k]; r.Job == job && !r.Reserved && r.Attempt == attempt {
			return k
		}
	}
	return -1
}

func (f *Fleet) drop(i int32, k int) Run {
	m := &f.execs[i]
	r := m.runs[k]
	m.runs = slices.Delete(m.runs, k, k+1)
	m.used &^= r.GPUs
	f.mark(i)
	return r
}

// Unreserve gives back a reservation whose Assign did not commit.
func (f *Fleet) Unreserve(i int32, job uint64) {
	if k := f.execs[i].reservation(job); k >= 0 {
		f.drop(i, k)
	}
}

// Start turns job's reservation on executor i into its running attempt,
// of model, which is then the executor's most recent warm model. warm says
// whether model was loaded before (else the attempt starts cold); ok is
// false when i holds no reservation for job.
func (f *Fleet) Start(i int32, job uint64, attempt int32, model string) (warm, ok bool) {
	m := &f.execs[i]
	k := m.reservation(job)
	if k < 0 {
		return false, false
	}
	m.runs[k].Reserved, m.runs[k].Attempt = false, attempt
	warm = slices.Contains(m.Warm, model)
	if !warm || m.Warm[len(m.Warm)-1] != model {
		m.Warm = scheduler.WarmAfter(m.Warm, model, m.WarmCap)
	}
	return warm, true
}

// Finish ends a running attempt on executor i, freeing its place; false
// when that attempt does not run there.
func (f *Fleet) Finish(i int32, job uint64, attempt int32) (Run, bool) {
	k := f.execs[i].running(job, attempt)
	if k < 0 {
		return Run{}, false
	}
	return f.drop(i, k), true
}

// Running reports whether executor i runs the attempt (started, not
// only reserved).
func (f *Fleet) Running(i int32, job uint64, attempt int32) bool {
	return f.execs[i].running(job, attempt) >= 0
}

// Holds reports whether executor i runs the attempt, or holds a
// reservation for the job (its attempt is being assigned).
func (f *Fleet) Holds(i int32, job uint64, attempt int32) bool {
	m := &f.execs[i]
	return m.reservation(job) >= 0 || m.running(job, attempt) >= 0
}

func (m *member) serves(model string) bool {
	return len(m.Models) == 0 || slices.Contains(m.Models, model)
}

// SlotsOf is how many jobs executor i runs at once.
func (f *Fleet) SlotsOf(i int32) int32 { return f.execs[i].Slots }

// Serves reports whether executor i serves model.
func (f *Fleet) Serves(i int32, model string) bool { return f.execs[i].serves(model) }

// Slots counts the slots of the executors up that serve model, and how
// many of them are free (admission.Executors).
func (f *Fleet) Slots(model string) (total, free int) {
	for i := range f.execs {
		m := &f.execs[i]
		if m.up && m.serves(model) {
			total += int(m.Slots)
			free += max(0, int(m.Slots)-len(m.runs))
		}
	}
	return total, free
}

// Share is the share of the slots up serving other that also serve model
// (admission.Executors).
func (f *Fleet) Share(model, other string) float64 {
	shared, total := 0, 0
	for i := range f.execs {
		m := &f.execs[i]
		if !m.up || !m.serves(other) {
			continue
		}
		total += int(m.Slots)
		if m.serves(model) {
			shared += int(m.Slots)
		}
	}
	if total == 0 {
		return 0
	}
	return float64(shared) / float64(total)
}

// Unplaceable says why no executor, up or down (a crashed one comes back),
// could ever run a job of model needing gpus GPUs of memMB MiB each,
// whatever runs on them now, as placement offers them (each GPU with the
// executor's smallest memory); "" when one could, or when the fleet is
// empty (nothing is known yet).
func (f *Fleet) Unplaceable(model string, gpus int32, memMB int64) string {
	if len(f.execs) == 0 {
		return ""
	}
	serving, mostGPUs, mostMem := 0, int32(0), int64(0)
	for i := range f.execs {
		m := &f.execs[i]
		if !m.serves(model) {
			continue
		}
		if m.gpus >= gpus && m.memMB >= memMB {
			return ""
		}
		serving++
		mostGPUs = max(mostGPUs, m.gpus)
		if m.gpus >= gpus {
			mostMem = max(mostMem, m.memMB)
		}
	}
	switch {
	case serving == 0:
		return fmt.Sprintf("no connected executor serves model %s", model)
	case mostGPUs < gpus:
		return fmt.Sprintf("needs %d GPUs; the largest executor has %d", gpus, mostGPUs)
	}
	return fmt.Sprintf("needs %d MiB of memory on each of its %d GPU(s); no executor has that many that large (the largest GPU has %d MiB)", memMB, gpus, mostMem)
}
