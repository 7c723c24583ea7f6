package scheduler

import (
	"cmp"
	"math/bits"
	"slices"
)

// maxSlotGPUs bounds the free GPUs Place tells apart on one slot; more
// count as this many.
const maxSlotGPUs = 1024

// Place proposes placements of ready jobs (Ready <= now) onto the free
// slots, in dispatch order, without changing the queue. See PlaceInto.
func (q *FairQueue) Place(now int64, slots []Slot) []Placement {
	return q.PlaceInto(nil, now, slots)
}

// PlaceInto appends to dst the placements Place proposes and returns it;
// with room in dst it allocates nothing once warm. It is the queue's own
// Placer's Place: see there.
func (q *FairQueue) PlaceInto(dst []Placement, now int64, slots []Slot) []Placement {
	return q.placer.Place(dst, q, now, slots)
}

// A Placer places a FairQueue's ready jobs onto free slots: feasible slots
// (bitsets of the slots a job's class fits, by free GPUs), ranked (warm
// model, fewest GPUs spare, least memory spare, first offered), selected
// in the queue's fair order. It reads the queue and never changes it; its
// working memory, reused between calls, is its own, so Placers may run at
// once on one queue while nothing changes it. The zero value is ready.
type Placer struct {
	q       *FairQueue // the queue placed, during a call
	epoch   uint64     // the call: stamps the per-record scratch below
	gen     uint64     // bumps when a hold is released: negative fit caches expire
	slotsIn []Slot
	slots   []slotState
	byPos   []int32 // bit position → slot index; positions run by memory, then index
	words   int
	maxF    int32
	bucket  []uint64 // bucket f (free GPUs) at [f*words, (f+1)*words)
	held    []uint64
	bits    []uint64 // compat, warm and reservation bitsets, by offset
	res     []reservation
	due     []dueJob
	cands   []cand
	band    [2][]int32 // tiers with flows to visit
	save    []int32
	// tierHead's copy of a tier's charged heap
	saveCharged []int32
	v           [2]vtime    // simulated band virtual times
	left        int         // jobs the slots can still take
	out         []Placement // PlaceAll's

	// Scratch per record, indexed as the queue's records are; an entry is
	// valid in the call whose epoch it carries.
	tenants []tenantScratch
	tiers   []tierScratch
	flows   []flowScratch
	models  []modelScratch
	classes []classScratch
	after   []int32 // per class queue of the flows visited (flowScratch.queues): the last job placed from it, 0 for none
}

type tenantScratch struct {
	epoch  uint64
	placed int32 // jobs placed in this call
}

type tierScratch struct {
	tag, v   vtime   // simulated tag and virtual time (every call sets them, initTiers)
	frontier minHeap // heap positions not yet visited
	charged  minHeap // flows to visit again, by simulated tag
	live     bool
}

type flowScratch struct {
	epoch    uint64
	tag      vtime  // simulated tag
	since    uint64 // simulated since: a flow with only due jobs gets its first's
	res      int32  // 1 + index of the reservation held for its head
	due, end int32  // its range in p.due
	queues   int32  // 1 + where its class queues' entries start in p.after; 0: none placed from yet
}

type modelScratch struct {
	epoch   uint64
	warm    int32 // offset of its warm bitset
	warmSet bool
}

type classScratch struct {
	epoch   uint64
	compat  int32  // offset of its compat bitset
	noFit   uint64 // capacity generation at which nothing fit
	evEpoch uint64 // whether some slot fits it when drained
	ev      bool
}

type slotState struct{ free, left, total, pos int32 }

type reservation struct {
	job, flow int32
	off       int32 // the held positions, in bits
	done      bool
}

type dueJob struct {
	x    int32
	used bool
}

type cand struct {
	x       int32
	fc      int32 // index in the flow's classes, or -1-i for p.due[i]
	prio    int32 // its ordFlow key
	seq, id uint64
}

// Place appends to dst the placements of q's ready jobs onto slots and
// returns it.
//
// Jobs are taken in the fair order, simulating the charge of each one as
// Start would, so that a batch splits between flows and tiers exactly as
// one-at-a-time Place-then-Start would. A flow whose tenant is at its
// MaxRunning (counting jobs placed in this call) is passed over. A job
// goes to the slot it fits (Fits, and the GPUs and Jobs the slot has left
// after earlier placements) that has its model warm, then leaves the fewest
// GPUs spare, then the least memory per GPU spare, then comes first in
// slots. A job that fits no slot does not block the jobs behind it, with
// one exception, the reservation:
//
// When Config.ReserveAfter > 0 and a flow's best ready job has waited more
// than ReserveAfter since its Ready time, fits no slot now but would fit
// one of the offered executors with all its GPUs free (Slot.TotalGPUs),
// the flow dispatches nothing else until that job starts: its tag stops,
// the other flows of its tier pass it, and it becomes the tier's head.
// Each tier's head job (the best ready job of its least-tagged flow under
// its cap), once overdue, holds one executor: the one it fits best now,
// else, among those it would fit with all GPUs free, the one with the most
// GPUs free now (then the first). No other job is placed on the held
// executor's slots; it gains free GPUs as its jobs end and takes no new
// ones, so the head job starts within about one run time of the jobs
// there. Tiers reserve in dispatch order, one executor each; a held
// executor that the head job fits now moves it ahead of earlier tiers'
// jobs by at most that one job.
func (p *Placer) Place(dst []Placement, q *FairQueue, now int64, slots []Slot) []Placement {
	if len(slots) == 0 || q.n == 0 {
		return dst
	}
	p.begin(q, slots)
	if !p.setupSlots(slots) {
		p.end()
		return dst
	}
	p.collectDue(now)
	p.initTiers()
	if q.cfg.ReserveAfter > 0 {
		p.reserveHeads(now)
	}
	for b := 0; b < 2 && p.left > 0; b++ {
		for p.left > 0 {
			ti := p.nextTier(b)
			if ti < 0 {
				break
			}
			if fi := p.popFlow(ti); fi >= 0 {
				dst = p.visit(dst, fi, now)
			}
		}
	}
	p.end()
	return dst
}

// PlaceAll is Place into the Placer's own buffer, which the next call
// reuses.
func (p *Placer) PlaceAll(q *FairQueue, now int64, slots []Slot) []Placement {
	p.out = p.Place(p.out[:0], q, now, slots)
	return p.out
}

// begin starts a call on q: a new epoch, and scratch for every record.
func (p *Placer) begin(q *FairQueue, slots []Slot) {
	p.q, p.slotsIn = q, slots
	p.epoch++
	p.gen = 0
	p.after = p.after[:0]
	if len(p.flows) < len(q.flows) || len(p.classes) < len(q.classes) ||
		len(p.tenants) < len(q.tenants) || len(p.tiers) < len(q.tiers) || len(p.models) < len(q.models) {
		p.grow()
	}
}

// grow gives every record of the queue its scratch entry.
func (p *Placer) grow() {
	q := p.q
	p.tenants = extend(p.tenants, len(q.tenants))
	p.tiers = extend(p.tiers, len(q.tiers))
	p.flows = extend(p.flows, len(q.flows))
	p.models = extend(p.models, len(q.models))
	p.classes = extend(p.classes, len(q.classes))
}

// end lets go of the call's queue and slots.
func (p *Placer) end() { p.q, p.slotsIn = nil, nil }

// extend makes s at least n long; new entries are zero (no epoch).
func extend[T any](s []T, n int) []T {
	if len(s) < n {
		s = append(s, make([]T, n-len(s))...)
	}
	return s
}

func (p *Placer) setupSlots(slots []Slot) bool {
	n := len(slots)
	p.slots = slices.Grow(p.slots[:0], n)[:n]
	p.byPos = slices.Grow(p.byPos[:0], n)[:n]
	p.words = (n + 63) / 64
	p.maxF, p.left = 0, 0
	sorted := true
	for i := range slots {
		s := &slots[i]
		free := min(max(s.GPUs, 0), maxSlotGPUs)
		total := max(s.TotalGPUs, s.GPUs)
		jobs := max(s.Jobs, 1)
		p.slots[i] = slotState{free: free, left: jobs, total: total}
		p.maxF = max(p.maxF, free)
		p.left += int(jobs)
		p.byPos[i] = int32(i)
		if i > 0 && s.GPUMemoryMB < slots[i-1].GPUMemoryMB {
			sorted = false
		}
	}
	if !sorted {
		slices.SortStableFunc(p.byPos, func(a, b int32) int {
			return cmp.Compare(slots[a].GPUMemoryMB, slots[b].GPUMemoryMB)
		})
	}
	w := p.words
	p.bucket = clearWords(p.bucket, int(p.maxF+1)*w)
	p.held = clearWords(p.held, w)
	p.bits = p.bits[:0]
	p.res = p.res[:0]
	for pos, si := range p.byPos {
		st := &p.slots[si]
		st.pos = int32(pos)
		setBit(p.bucket[int(st.free)*w:], pos)
	}
	return p.left > 0
}

func clearWords(b []uint64, n int) []uint64 {
	b = slices.Grow(b[:0], n)[:n]
	clear(b)
	return b
}

func setBit(b []uint64, i int)      { b[i>>6] |= 1 << (i & 63) }
func clearBit(b []uint64, i int)    { b[i>>6] &^= 1 << (i & 63) }
func hasBit(b []uint64, i int) bool { return b[i>>6]&(1<<(i&63)) != 0 }

// newBits adds a zeroed bitset to the pool and returns its offset.
func (p *Placer) newBits() int32 {
	off := len(p.bits)
	p.bits = slices.Grow(p.bits, p.words)[:off+p.words]
	clear(p.bits[off:])
	return int32(off)
}

func canRun(models []string, name string) bool {
	return len(models) == 0 || slices.Contains(models, name)
}

// compat returns the offset of the bitset of slots whose model list and
// memory suit class ci, whatever their free GPUs.
func (p *Placer) compat(ci int32) int32 {
	cs := &p.classes[ci]
	if cs.epoch == p.epoch {
		return cs.compat
	}
	c := &p.q.classes[ci]
	off := p.newBits()
	name := p.q.models[c.model].name
	for i := range p.slotsIn {
		s := &p.slotsIn[i]
		if s.GPUMemoryMB >= c.mem && canRun(s.Models, name) {
			setBit(p.bits[off:], int(p.slots[i].pos))
		}
	}
	cs.epoch, cs.compat, cs.noFit = p.epoch, off, 0
	return off
}

// warm returns the offset of the bitset of slots with model mi warm, or -1
// when no slot has it warm.
func (p *Placer) warm(mi int32) int32 {
	ms := &p.models[mi]
	if ms.epoch == p.epoch {
		if !ms.warmSet {
			return -1
		}
		return ms.warm
	}
	name := p.q.models[mi].name
	ms.epoch, ms.warmSet = p.epoch, false
	for i := range p.slotsIn {
		if slices.Contains(p.slotsIn[i].Warm, name) {
			if !ms.warmSet {
				ms.warm, ms.warmSet = p.newBits(), true
			}
			setBit(p.bits[ms.warm:], int(p.slots[i].pos))
		}
	}
	if !ms.warmSet {
		return -1
	}
	return ms.warm
}

// bestSlot returns the bit position of the best slot for job x, or -1.
// Held slots are left out except those held by res.
func (p *Placer) bestSlot(x int32, res *reservation) int32 {
	j := &p.q.jobs[x]
	g := max(j.gpus, 0)
	if g > p.maxF {
		return -1
	}
	w := p.words
	cb := p.bits[p.compat(j.class):][:w]
	var wb, rb []uint64
	if off := p.warm(j.model); off >= 0 {
		wb = p.bits[off:][:w]
	}
	if res != nil {
		rb = p.bits[res.off:][:w]
	}
	for pass := 0; pass < 2; pass++ {
		if pass == 0 && wb == nil {
			continue
		}
		for f := g; f <= p.maxF; f++ {
			b := p.bucket[int(f)*w:][:w]
			for i, word := range b {
				m := word & cb[i]
				if m == 0 {
					continue
				}
				if wb != nil {
					if pass == 0 {
						m &= wb[i]
					} else {
						m &^= wb[i]
					}
				}
				h := p.held[i]
				if rb != nil {
					h &^= rb[i]
				}
				if m &^= h; m != 0 {
					return int32(i*64 + bits.TrailingZeros64(m))
				}
			}
		}
	}
	return -1
}

// initFlow returns flow fi's scratch, set up for this call: its simulated
// tag starts at its tag.
func (p *Placer) initFlow(fi int32) *flowScratch {
	fs := &p.flows[fi]
	if fs.epoch != p.epoch {
		f := &p.q.flows[fi]
		fs.epoch, fs.tag, fs.since, fs.res, fs.due, fs.end, fs.queues = p.epoch, f.tag, f.since, 0, 0, 0, 0
	}
	return fs
}

// placedBy is how many jobs of tenant ti this call has placed.
func (p *Placer) placedBy(ti int32) *int32 {
	ts := &p.tenants[ti]
	if ts.epoch != p.epoch {
		ts.epoch, ts.placed = p.epoch, 0
	}
	return &ts.placed
}

// atCap reports whether flow fi's tenant runs, with this call's
// placements, as many jobs as it may.
func (p *Placer) atCap(f *flow) bool {
	ten := &p.q.tenants[f.tenant]
	return ten.maxRunning > 0 && ten.running+*p.placedBy(f.tenant) >= ten.maxRunning
}

// collectDue gathers delayed jobs that are ready at now although the
// queue's clock has not reached them (Advance not called yet): Place
// offers them as well. Normally there are none or few.
func (p *Placer) collectDue(now int64) {
	q := p.q
	p.due = p.due[:0]
	if q.delayed == 0 || q.jobs[q.bt.first(q.delayed)].ready > now {
		return
	}
	q.bt.ascend(q.delayed, func(x int32) bool {
		if q.jobs[x].ready > now {
			return false
		}
		p.due = append(p.due, dueJob{x: x})
		return true
	})
	slices.SortFunc(p.due, func(a, b dueJob) int {
		fa, fb := q.jobs[a.x].flow, q.jobs[b.x].flow
		if fa != fb {
			return cmp.Compare(fa, fb)
		}
		if q.order(ordFlow).less(a.x, b.x) {
			return -1
		}
		return 1
	})
	for i := 0; i < len(p.due); {
		fi := q.jobs[p.due[i].x].flow
		e := i + 1
		for e < len(p.due) && q.jobs[p.due[e].x].flow == fi {
			e++
		}
		fs := p.initFlow(fi)
		fs.due, fs.end = int32(i), int32(e)
		i = e
	}
}

// initTiers sets up each tier's enumeration of flows in tag order: the
// heap of active flows is walked lazily through a frontier of positions,
// and flows charged in this call (plus flows with only due jobs) wait in a
// second heap under their simulated tags.
func (p *Placer) initTiers() {
	q := p.q
	p.v = q.vband
	p.band[0], p.band[1] = p.band[0][:0], p.band[1][:0]
	for ti := range q.tiers {
		t, ts := &q.tiers[ti], &p.tiers[ti]
		ts.tag, ts.v, ts.live = t.tag, t.vt, false
		ts.frontier, ts.charged = ts.frontier[:0], ts.charged[:0]
		if len(t.heap) > 0 {
			ts.frontier = append(ts.frontier, 0)
			ts.live = true
		}
	}
	for i := 0; i < len(p.due); {
		fi := q.jobs[p.due[i].x].flow
		f, fs := &q.flows[fi], &p.flows[fi]
		i = int(fs.end)
		if f.hix >= 0 || !q.tenants[f.tenant].underCap() {
			continue
		}
		t, ts := &q.tiers[f.tier], &p.tiers[f.tier]
		if !ts.live {
			ts.tag = enter(t.tag, p.v[t.band()], t.weight)
			ts.live = true
		}
		fs.tag = enter(f.tag, t.vt, f.weight)
		// The flow has no ready job: the first of its due jobs that the
		// clock promotes (by Ready, then Seq) starts its wait.
		first := p.due[fs.due].x
		for d := fs.due + 1; d < fs.end; d++ {
			if q.order(ordReady).less(p.due[d].x, first) {
				first = p.due[d].x
			}
		}
		fs.since = q.jobs[first].seq
		ts.charged.push(fi, p.simOrder())
	}
	for ti := range q.tiers {
		if p.tiers[ti].live {
			b := q.tiers[ti].band()
			p.band[b] = append(p.band[b], int32(ti))
		}
	}
}

// simTag is flow fi's simulated tag.
func (p *Placer) simTag(fi int32) vtime {
	if fs := &p.flows[fi]; fs.epoch == p.epoch {
		return fs.tag
	}
	return p.q.flows[fi].tag
}

// simSince is flow fi's simulated since.
func (p *Placer) simSince(fi int32) uint64 {
	if fs := &p.flows[fi]; fs.epoch == p.epoch {
		return fs.since
	}
	return p.q.flows[fi].since
}

// simOrder orders flows by simulated tag (the charged heaps).
func (p *Placer) simOrder() heapOrder { return heapOrder{q: p.q, p: p, kind: bySimTag} }

// The frontier holds heap positions (flow t.heap[i]) in simulated tag
// order; charged holds flows.
func (p *Placer) frontierOrder(ti int32) heapOrder {
	return heapOrder{q: p.q, p: p, ti: ti, kind: byFrontier}
}

// popFlow returns the tier's next flow in simulated tag order, or -1.
func (p *Placer) popFlow(ti int32) int32 {
	t, ts := &p.q.tiers[ti], &p.tiers[ti]
	nf, nc := len(ts.frontier), len(ts.charged)
	switch {
	case nf == 0 && nc == 0:
		return -1
	case nf > 0 && (nc == 0 || p.simOrder().less(t.heap[ts.frontier[0]], ts.charged[0])):
		o := p.frontierOrder(ti)
		i := ts.frontier.pop(o)
		for _, c := range [2]int32{2*i + 1, 2*i + 2} {
			if int(c) < len(t.heap) {
				ts.frontier.push(c, o)
			}
		}
		return t.heap[i]
	}
	return ts.charged.pop(p.simOrder())
}

// nextTier returns the band's tier with the least simulated tag that has
// flows left to visit, or -1.
func (p *Placer) nextTier(b int) int32 {
	best := int32(-1)
	live := p.band[b][:0]
	for _, ti := range p.band[b] {
		ts := &p.tiers[ti]
		if len(ts.frontier) == 0 && len(ts.charged) == 0 {
			continue
		}
		live = append(live, ti)
		if best < 0 {
			best = ti
			continue
		}
		if c := ts.tag.cmp(p.tiers[best].tag); c < 0 || c == 0 && p.q.tiers[ti].name < p.q.tiers[best].name {
			best = ti
		}
	}
	p.band[b] = live
	return best
}

// gather lists a flow's candidate jobs, the best first and the rest in no
// order (bestFirst orders them as they are needed: the first usually
// fits): the first ready job of each of its class queues not yet placed
// in this call, and its due jobs. The flow's scratch is set up (initFlow).
// Within a class every job needs the same slots, so if the first does not
// fit, none does.
func (p *Placer) gather(fi int32, now int64) []cand {
	q := p.q
	f, fs := &q.flows[fi], &p.flows[fi]
	cs := p.cands[:0]
	if fs.queues == 0 {
		for i := range f.classes {
			if fc := &f.classes[i]; fc.hReady <= now {
				cs = append(cs, cand{x: fc.head, fc: int32(i), prio: fc.hPrio, seq: fc.hSeq, id: fc.hID})
			} else if c, ok := p.firstReady(fc, int32(i), 0, now); ok {
				cs = append(cs, c)
			}
		}
	} else {
		after := p.after[fs.queues-1:][:len(f.classes)]
		for i := range f.classes {
			fc := &f.classes[i]
			if after[i] == 0 && fc.hReady <= now {
				cs = append(cs, cand{x: fc.head, fc: int32(i), prio: fc.hPrio, seq: fc.hSeq, id: fc.hID})
			} else if c, ok := p.firstReady(fc, int32(i), after[i], now); ok {
				cs = append(cs, c)
			}
		}
	}
	for d := fs.due; d < fs.end; d++ {
		if !p.due[d].used {
			j := &q.jobs[p.due[d].x]
			cs = append(cs, cand{x: p.due[d].x, fc: -1 - d, prio: int32(prioOf(j.prio)), seq: j.seq, id: j.id})
		}
	}
	bestFirst(cs)
	p.cands = cs
	return cs
}

// firstReady is the candidate of class queue fc (the flow's i-th) that
// comes after job `after` (0: from the head) and is ready at now.
func (p *Placer) firstReady(fc *classQueue, i, after int32, now int64) (cand, bool) {
	x := fc.firstReady(p.q.jobs, after, now)
	if x == 0 {
		return cand{}, false
	}
	j := &p.q.jobs[x]
	return cand{x: x, fc: i, prio: int32(prioOf(j.prio)), seq: j.seq, id: j.id}, true
}

// bestFirst moves the best candidate of cs to cs[0].
func bestFirst(cs []cand) {
	b := 0
	for i := 1; i < len(cs); i++ {
		if cs[i].before(&cs[b]) {
			b = i
		}
	}
	if b > 0 {
		cs[0], cs[b] = cs[b], cs[0]
	}
}

// before is ordFlow on candidates' copied keys.
func (c *cand) before(d *cand) bool {
	if c.prio != d.prio {
		return c.prio > d.prio
	}
	if c.seq != d.seq {
		return c.seq < d.seq
	}
	return c.id < d.id
}

// reserveHeads lets each tier's overdue head job hold an executor.
func (p *Placer) reserveHeads(now int64) {
	for b := 0; b < 2; b++ {
		order := append(p.save[:0], p.band[b]...)
		slices.SortFunc(order, func(a, c int32) int {
			if x := p.tiers[a].tag.cmp(p.tiers[c].tag); x != 0 {
				return x
			}
			return cmp.Compare(p.q.tiers[a].name, p.q.tiers[c].name)
		})
		for _, ti := range order {
			fi, x := p.tierHead(ti, now)
			// Only a head that fits no free slot now needs capacity held:
			// one that fits takes its turn in the weighted order, or an
			// overloaded tier's overdue heads would take every executor
			// that frees up ahead of higher-weight tiers.
			if x != 0 && p.overdue(x, now) && p.bestSlot(x, nil) < 0 {
				p.reserve(fi, x)
			}
		}
		p.save = order
	}
}

// tierHead finds the flow the tier would serve first and that flow's best
// ready job, leaving the tier's enumeration as it found it.
func (p *Placer) tierHead(ti int32, now int64) (fi, x int32) {
	ts := &p.tiers[ti]
	frontier := len(ts.frontier) > 0
	p.saveCharged = append(p.saveCharged[:0], ts.charged...)
	fi = -1
	for x == 0 {
		if fi = p.popFlow(ti); fi < 0 {
			break
		}
		p.initFlow(fi)
		if p.atCap(&p.q.flows[fi]) {
			continue
		}
		if cs := p.gather(fi, now); len(cs) > 0 {
			x = cs[0].x
		}
	}
	ts.frontier = ts.frontier[:0]
	if frontier {
		ts.frontier = append(ts.frontier, 0)
	}
	ts.charged = append(ts.charged[:0], p.saveCharged...)
	return fi, x
}

// reserve holds an executor for job x of flow fi; see Place.
func (p *Placer) reserve(fi, x int32) {
	// x fits no free slot (see reserveHeads): hold the compatible executor
	// closest to fitting it, the one with the most GPUs free.
	exec := -1
	j := &p.q.jobs[x]
	cb := p.bits[p.compat(j.class):]
	for i := range p.slots {
		st := &p.slots[i]
		if st.left <= 0 || st.total < j.gpus || !hasBit(cb, int(st.pos)) || hasBit(p.held, int(st.pos)) {
			continue
		}
		if exec < 0 || st.free > p.slots[exec].free {
			exec = i
		}
	}
	if exec < 0 {
		return
	}
	off := p.newBits()
	name := p.slotsIn[exec].Executor
	for i := range p.slotsIn {
		if pos := int(p.slots[i].pos); p.slotsIn[i].Executor == name && !hasBit(p.held, pos) {
			setBit(p.bits[off:], pos)
		}
	}
	for i := 0; i < p.words; i++ {
		p.held[i] |= p.bits[int(off)+i]
	}
	p.res = append(p.res, reservation{job: x, flow: fi, off: off})
	p.flows[fi].res = int32(len(p.res))
}

func (p *Placer) noFit(ci int32) bool {
	cs := &p.classes[ci]
	return cs.epoch == p.epoch && cs.noFit == p.gen+1
}

// visit tries to place one job of flow fi; a flow that places one is
// queued again under its new simulated tag, one that does not is done for
// this call.
func (p *Placer) visit(dst []Placement, fi int32, now int64) []Placement {
	fs := p.initFlow(fi)
	if p.atCap(&p.q.flows[fi]) {
		return dst
	}
	var res *reservation
	if fs.res > 0 && !p.res[fs.res-1].done {
		res = &p.res[fs.res-1]
	}
	cs := p.gather(fi, now)
	for i := range cs {
		if i > 0 {
			bestFirst(cs[i:])
		}
		c := cs[i]
		mine := res != nil && res.job == c.x
		ci := p.q.jobs[c.x].class
		pos := int32(-1)
		switch {
		case mine:
			pos = p.bestSlot(c.x, res)
		case !p.noFit(ci):
			pos = p.bestSlot(c.x, nil)
		}
		if pos >= 0 {
			return p.placeAt(dst, fi, c, pos, res)
		}
		if mine || i == 0 && p.overdue(c.x, now) && p.couldFit(c.x) {
			// The flow waits for its head job: dispatching the jobs behind
			// it would move the flow's tag on and keep it from ever heading
			// its tier, which is when the head job gets an executor held.
			return dst
		}
		p.compat(ci)
		p.classes[ci].noFit = p.gen + 1
	}
	return dst
}

func (p *Placer) overdue(x int32, now int64) bool {
	return p.q.cfg.ReserveAfter > 0 && now-p.q.jobs[x].ready > p.q.cfg.ReserveAfter
}

// couldFit reports whether job x would fit one of the offered slots once
// all that executor's GPUs were free (Slot.TotalGPUs).
func (p *Placer) couldFit(x int32) bool {
	j := &p.q.jobs[x]
	cs := &p.classes[j.class]
	cb := p.bits[p.compat(j.class):]
	if cs.evEpoch != p.epoch {
		cs.evEpoch, cs.ev = p.epoch, false
		for i := range p.slots {
			if st := &p.slots[i]; st.total >= j.gpus && hasBit(cb, int(st.pos)) {
				cs.ev = true
				break
			}
		}
	}
	return cs.ev
}

func (p *Placer) placeAt(dst []Placement, fi int32, c cand, pos int32, res *reservation) []Placement {
	q := p.q
	j := &q.jobs[c.x]
	si := p.byPos[pos]
	st := &p.slots[si]
	w := p.words
	clearBit(p.bucket[int(st.free)*w:], int(pos))
	st.free -= max(j.gpus, 0)
	st.left--
	if st.left > 0 {
		setBit(p.bucket[int(st.free)*w:], int(pos))
	}
	p.left--
	dst = append(dst, Placement{JobID: j.id, Executor: p.slotsIn[si].Executor, Slot: int(si)})

	f, fs := &q.flows[fi], &p.flows[fi]
	if c.fc >= 0 {
		if fs.queues == 0 {
			n := len(p.after)
			fs.queues = int32(n) + 1
			p.after = slices.Grow(p.after, len(f.classes))[:n+len(f.classes)]
			clear(p.after[n:])
		}
		p.after[fs.queues-1+c.fc] = c.x
	} else {
		p.due[-1-c.fc].used = true
	}
	*p.placedBy(f.tenant)++

	// The same charge as Start, on the simulated tags.
	cost := costOf(j.cost)
	t, ts := &q.tiers[f.tier], &p.tiers[f.tier]
	serve(&fs.tag, &ts.v, cost, f.weight)
	serve(&ts.tag, &p.v[t.band()], cost, t.weight)
	ts.charged.push(fi, p.simOrder())

	if res != nil && res.job == c.x {
		res.done = true
		for i := 0; i < w; i++ {
			p.held[i] &^= p.bits[int(res.off)+i]
		}
		p.gen++
	}
	return dst
}
