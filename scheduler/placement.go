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
// with room in dst it allocates nothing once warm.
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
func (q *FairQueue) PlaceInto(dst []Placement, now int64, slots []Slot) []Placement {
	if len(slots) == 0 || q.n == 0 {
		return dst
	}
	ps := &q.ps
	ps.epoch++
	ps.gen = 0
	ps.slotsIn = slots
	defer func() { ps.slotsIn = nil }()
	if !ps.setupSlots(slots) {
		return dst
	}
	q.collectDue(now)
	q.initTiers()
	if q.cfg.ReserveAfter > 0 {
		q.reserveHeads(now)
	}
	for b := 0; b < 2 && ps.left > 0; b++ {
		for ps.left > 0 {
			ti := q.nextTier(b)
			if ti < 0 {
				break
			}
			if fi := q.popFlow(ti); fi >= 0 {
				dst = q.visit(dst, fi, now)
			}
		}
	}
	return dst
}

// placeScratch is Place's working memory, reused between calls. Records
// (flows, tiers, tenants, classes, models) carry scratch fields stamped
// with ps.epoch, so that nothing needs clearing between calls.
type placeScratch struct {
	epoch   uint64
	gen     uint64 // bumps when a hold is released: negative fit caches expire
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
	v           [2]vtime // simulated band virtual times
	left        int      // jobs the slots can still take
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
	fc      int32 // index in the flow's classes, or -1-i for ps.due[i]
	prio    int32 // its ordFlow key
	seq, id uint64
}

func (ps *placeScratch) setupSlots(slots []Slot) bool {
	n := len(slots)
	ps.slots = slices.Grow(ps.slots[:0], n)[:n]
	ps.byPos = slices.Grow(ps.byPos[:0], n)[:n]
	ps.words = (n + 63) / 64
	ps.maxF, ps.left = 0, 0
	sorted := true
	for i := range slots {
		s := &slots[i]
		free := min(max(s.GPUs, 0), maxSlotGPUs)
		total := max(s.TotalGPUs, s.GPUs)
		jobs := max(s.Jobs, 1)
		ps.slots[i] = slotState{free: free, left: jobs, total: total}
		ps.maxF = max(ps.maxF, free)
		ps.left += int(jobs)
		ps.byPos[i] = int32(i)
		if i > 0 && s.GPUMemoryMB < slots[i-1].GPUMemoryMB {
			sorted = false
		}
	}
	if !sorted {
		slices.SortStableFunc(ps.byPos, func(a, b int32) int {
			return cmp.Compare(slots[a].GPUMemoryMB, slots[b].GPUMemoryMB)
		})
	}
	w := ps.words
	ps.bucket = clearWords(ps.bucket, int(ps.maxF+1)*w)
	ps.held = clearWords(ps.held, w)
	ps.bits = ps.bits[:0]
	ps.res = ps.res[:0]
	for pos, si := range ps.byPos {
		st := &ps.slots[si]
		st.pos = int32(pos)
		setBit(ps.bucket[int(st.free)*w:], pos)
	}
	return ps.left > 0
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
func (ps *placeScratch) newBits() int32 {
	off := len(ps.bits)
	ps.bits = slices.Grow(ps.bits, ps.words)[:off+ps.words]
	clear(ps.bits[off:])
	return int32(off)
}

func canRun(models []string, name string) bool {
	return len(models) == 0 || slices.Contains(models, name)
}

// compat returns the offset of the bitset of slots whose model list and
// memory suit class ci, whatever their free GPUs.
func (q *FairQueue) compat(ci int32) int32 {
	ps := &q.ps
	c := &q.classes[ci]
	if c.sEpoch == ps.epoch {
		return c.sCompat
	}
	off := ps.newBits()
	name := q.models[c.model].name
	for i := range ps.slotsIn {
		s := &ps.slotsIn[i]
		if s.GPUMemoryMB >= c.mem && canRun(s.Models, name) {
			setBit(ps.bits[off:], int(ps.slots[i].pos))
		}
	}
	c.sEpoch, c.sCompat, c.sNoFit = ps.epoch, off, 0
	return off
}

// warm returns the offset of the bitset of slots with model mi warm, or -1
// when no slot has it warm.
func (q *FairQueue) warm(mi int32) int32 {
	ps := &q.ps
	m := &q.models[mi]
	if m.sEpoch == ps.epoch {
		if !m.sWarmSet {
			return -1
		}
		return m.sWarm
	}
	m.sEpoch, m.sWarmSet = ps.epoch, false
	for i := range ps.slotsIn {
		if slices.Contains(ps.slotsIn[i].Warm, m.name) {
			if !m.sWarmSet {
				m.sWarm, m.sWarmSet = ps.newBits(), true
			}
			setBit(ps.bits[m.sWarm:], int(ps.slots[i].pos))
		}
	}
	if !m.sWarmSet {
		return -1
	}
	return m.sWarm
}

// bestSlot returns the bit position of the best slot for job x, or -1.
// Held slots are left out except those held by res.
func (q *FairQueue) bestSlot(x int32, res *reservation) int32 {
	ps := &q.ps
	j := &q.jobs[x]
	g := max(j.gpus, 0)
	if g > ps.maxF {
		return -1
	}
	w := ps.words
	cb := ps.bits[q.compat(j.class):][:w]
	var wb, rb []uint64
	if off := q.warm(j.model); off >= 0 {
		wb = ps.bits[off:][:w]
	}
	if res != nil {
		rb = ps.bits[res.off:][:w]
	}
	for pass := 0; pass < 2; pass++ {
		if pass == 0 && wb == nil {
			continue
		}
		for f := g; f <= ps.maxF; f++ {
			b := ps.bucket[int(f)*w:][:w]
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
				h := ps.held[i]
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

func (q *FairQueue) initFlow(fi int32) *flow {
	f := &q.flows[fi]
	if f.sEpoch != q.ps.epoch {
		f.sEpoch, f.sTag, f.sRes, f.sDue, f.sEnd = q.ps.epoch, f.tag, 0, 0, 0
	}
	return f
}

func (q *FairQueue) placedBy(t *tenant) int32 {
	if t.sEpoch != q.ps.epoch {
		t.sEpoch, t.sPlaced = q.ps.epoch, 0
	}
	return t.sPlaced
}

// collectDue gathers delayed jobs that are ready at now although the
// queue's clock has not reached them (Advance not called yet): Place
// offers them as well. Normally there are none or few.
func (q *FairQueue) collectDue(now int64) {
	ps := &q.ps
	ps.due = ps.due[:0]
	if q.delayed == 0 || q.jobs[q.bt.first(q.delayed)].ready > now {
		return
	}
	q.bt.ascend(q.delayed, func(x int32) bool {
		if q.jobs[x].ready > now {
			return false
		}
		ps.due = append(ps.due, dueJob{x: x})
		return true
	})
	slices.SortFunc(ps.due, func(a, b dueJob) int {
		fa, fb := q.jobs[a.x].flow, q.jobs[b.x].flow
		if fa != fb {
			return cmp.Compare(fa, fb)
		}
		if q.order(ordFlow).less(a.x, b.x) {
			return -1
		}
		return 1
	})
	for i := 0; i < len(ps.due); {
		fi := q.jobs[ps.due[i].x].flow
		e := i + 1
		for e < len(ps.due) && q.jobs[ps.due[e].x].flow == fi {
			e++
		}
		f := q.initFlow(fi)
		f.sDue, f.sEnd = int32(i), int32(e)
		i = e
	}
}

// initTiers sets up each tier's enumeration of flows in tag order: the
// heap of active flows is walked lazily through a frontier of positions,
// and flows charged in this call (plus flows with only due jobs) wait in a
// second heap under their simulated tags.
func (q *FairQueue) initTiers() {
	ps := &q.ps
	ps.v = q.vband
	ps.band[0], ps.band[1] = ps.band[0][:0], ps.band[1][:0]
	for ti := range q.tiers {
		t := &q.tiers[ti]
		t.sEpoch, t.sTag, t.sV, t.sLive = ps.epoch, t.tag, t.vt, false
		t.frontier, t.charged = t.frontier[:0], t.charged[:0]
		if len(t.heap) > 0 {
			t.frontier = append(t.frontier, 0)
			t.sLive = true
		}
	}
	for i := 0; i < len(ps.due); {
		fi := q.jobs[ps.due[i].x].flow
		f := &q.flows[fi]
		i = int(f.sEnd)
		if f.hix >= 0 || !q.underCap(&q.tenants[f.tenant]) {
			continue
		}
		t := &q.tiers[f.tier]
		if !t.sLive {
			t.sTag = enter(t.tag, ps.v[t.band()], t.weight)
			t.sLive = true
		}
		f.sTag = enter(f.tag, t.vt, f.weight)
		q.tiers[f.tier].charged.push(fi, heapOrder{q: q, kind: bySimTag})
	}
	for ti := range q.tiers {
		if t := &q.tiers[ti]; t.sLive {
			ps.band[t.band()] = append(ps.band[t.band()], int32(ti))
		}
	}
}

func (q *FairQueue) simTag(fi int32) vtime {
	if f := &q.flows[fi]; f.sEpoch == q.ps.epoch {
		return f.sTag
	}
	return q.flows[fi].tag
}

// The frontier holds heap positions (flow t.heap[p]) in simulated tag
// order; charged holds flows.
func (q *FairQueue) frontierOrder(t *tier) heapOrder {
	return heapOrder{q: q, t: t, kind: byFrontier}
}

// popFlow returns the tier's next flow in simulated tag order, or -1.
func (q *FairQueue) popFlow(ti int32) int32 {
	t := &q.tiers[ti]
	nf, nc := len(t.frontier), len(t.charged)
	switch {
	case nf == 0 && nc == 0:
		return -1
	case nf > 0 && (nc == 0 || (heapOrder{q: q, kind: bySimTag}).less(t.heap[t.frontier[0]], t.charged[0])):
		o := q.frontierOrder(t)
		p := t.frontier.pop(o)
		for _, c := range [2]int32{2*p + 1, 2*p + 2} {
			if int(c) < len(t.heap) {
				t.frontier.push(c, o)
			}
		}
		return t.heap[p]
	}
	return t.charged.pop(heapOrder{q: q, kind: bySimTag})
}

// nextTier returns the band's tier with the least simulated tag that has
// flows left to visit, or -1.
func (q *FairQueue) nextTier(b int) int32 {
	ps := &q.ps
	best := int32(-1)
	live := ps.band[b][:0]
	for _, ti := range ps.band[b] {
		t := &q.tiers[ti]
		if len(t.frontier) == 0 && len(t.charged) == 0 {
			continue
		}
		live = append(live, ti)
		if best < 0 {
			best = ti
			continue
		}
		bt := &q.tiers[best]
		if c := t.sTag.cmp(bt.sTag); c < 0 || c == 0 && t.name < bt.name {
			best = ti
		}
	}
	ps.band[b] = live
	return best
}

// gather lists a flow's candidate jobs, the best first and the rest in no
// order (bestFirst orders them as they are needed: the first usually
// fits): the first ready job of each of its class queues not yet placed
// in this call, and its due jobs.
// Within a class every job needs the same slots, so if the first does not
// fit, none does.
func (q *FairQueue) gather(fi int32, now int64) []cand {
	ps := &q.ps
	f := &q.flows[fi]
	cs := ps.cands[:0]
	for i := range f.classes {
		fc := &f.classes[i]
		c := cand{x: fc.head, fc: int32(i), prio: fc.hPrio, seq: fc.hSeq, id: fc.hID}
		if fc.sEpoch == ps.epoch || fc.hReady > now {
			after := int32(0)
			if fc.sEpoch == ps.epoch {
				after = fc.sAfter
			}
			if c.x = fc.firstReady(q.jobs, after, now); c.x == 0 {
				continue
			}
			j := &q.jobs[c.x]
			c.prio, c.seq, c.id = int32(prioOf(j.prio)), j.seq, j.id
		}
		cs = append(cs, c)
	}
	if f.sEpoch == ps.epoch {
		for d := f.sDue; d < f.sEnd; d++ {
			if !ps.due[d].used {
				j := &q.jobs[ps.due[d].x]
				cs = append(cs, cand{x: ps.due[d].x, fc: -1 - d, prio: int32(prioOf(j.prio)), seq: j.seq, id: j.id})
			}
		}
	}
	bestFirst(cs)
	ps.cands = cs
	return cs
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
func (q *FairQueue) reserveHeads(now int64) {
	ps := &q.ps
	for b := 0; b < 2; b++ {
		order := append(ps.save[:0], ps.band[b]...)
		slices.SortFunc(order, func(a, c int32) int {
			ta, tc := &q.tiers[a], &q.tiers[c]
			if x := ta.sTag.cmp(tc.sTag); x != 0 {
				return x
			}
			return cmp.Compare(ta.name, tc.name)
		})
		for _, ti := range order {
			fi, x := q.tierHead(ti, now)
			// Only a head that fits no free slot now needs capacity held:
			// one that fits takes its turn in the weighted order, or an
			// overloaded tier's overdue heads would take every executor
			// that frees up ahead of higher-weight tiers.
			if x != 0 && q.overdue(x, now) && q.bestSlot(x, nil) < 0 {
				q.reserve(fi, x)
			}
		}
		ps.save = order
	}
}

// tierHead finds the flow the tier would serve first and that flow's best
// ready job, leaving the tier's enumeration as it found it.
func (q *FairQueue) tierHead(ti int32, now int64) (fi, x int32) {
	ps := &q.ps
	t := &q.tiers[ti]
	frontier := len(t.frontier) > 0
	ps.saveCharged = append(ps.saveCharged[:0], t.charged...)
	fi = -1
	for x == 0 {
		if fi = q.popFlow(ti); fi < 0 {
			break
		}
		f := q.initFlow(fi)
		ten := &q.tenants[f.tenant]
		if ten.maxRunning > 0 && ten.running+q.placedBy(ten) >= ten.maxRunning {
			continue
		}
		if cs := q.gather(fi, now); len(cs) > 0 {
			x = cs[0].x
		}
	}
	t.frontier = t.frontier[:0]
	if frontier {
		t.frontier = append(t.frontier, 0)
	}
	t.charged = append(t.charged[:0], ps.saveCharged...)
	return fi, x
}

// reserve holds an executor for job x of flow fi; see PlaceInto.
func (q *FairQueue) reserve(fi, x int32) {
	ps := &q.ps
	// x fits no free slot (see reserveHeads): hold the compatible executor
	// closest to fitting it, the one with the most GPUs free.
	exec := -1
	j := &q.jobs[x]
	cb := ps.bits[q.compat(j.class):]
	for i := range ps.slots {
		st := &ps.slots[i]
		if st.left <= 0 || st.total < j.gpus || !hasBit(cb, int(st.pos)) || hasBit(ps.held, int(st.pos)) {
			continue
		}
		if exec < 0 || st.free > ps.slots[exec].free {
			exec = i
		}
	}
	if exec < 0 {
		return
	}
	off := ps.newBits()
	name := ps.slotsIn[exec].Executor
	for i := range ps.slotsIn {
		if p := int(ps.slots[i].pos); ps.slotsIn[i].Executor == name && !hasBit(ps.held, p) {
			setBit(ps.bits[off:], p)
		}
	}
	for i := 0; i < ps.words; i++ {
		ps.held[i] |= ps.bits[int(off)+i]
	}
	ps.res = append(ps.res, reservation{job: x, flow: fi, off: off})
	q.flows[fi].sRes = int32(len(ps.res))
}

func (q *FairQueue) noFit(ci int32) bool {
	c := &q.classes[ci]
	return c.sEpoch == q.ps.epoch && c.sNoFit == q.ps.gen+1
}

// visit tries to place one job of flow fi; a flow that places one is
// queued again under its new simulated tag, one that does not is done for
// this call.
func (q *FairQueue) visit(dst []Placement, fi int32, now int64) []Placement {
	ps := &q.ps
	f := q.initFlow(fi)
	ten := &q.tenants[f.tenant]
	if ten.maxRunning > 0 && ten.running+q.placedBy(ten) >= ten.maxRunning {
		return dst
	}
	var res *reservation
	if f.sRes > 0 && !ps.res[f.sRes-1].done {
		res = &ps.res[f.sRes-1]
	}
	cs := q.gather(fi, now)
	for i := range cs {
		if i > 0 {
			bestFirst(cs[i:])
		}
		c := cs[i]
		mine := res != nil && res.job == c.x
		ci := q.jobs[c.x].class
		pos := int32(-1)
		switch {
		case mine:
			pos = q.bestSlot(c.x, res)
		case !q.noFit(ci):
			pos = q.bestSlot(c.x, nil)
		}
		if pos >= 0 {
			return q.placeAt(dst, fi, c, pos, res)
		}
		if mine || i == 0 && q.overdue(c.x, now) && q.couldFit(c.x) {
			// The flow waits for its head job: dispatching the jobs behind
			// it would move the flow's tag on and keep it from ever heading
			// its tier, which is when the head job gets an executor held.
			return dst
		}
		q.compat(ci)
		q.classes[ci].sNoFit = ps.gen + 1
	}
	return dst
}

func (q *FairQueue) overdue(x int32, now int64) bool {
	return q.cfg.ReserveAfter > 0 && now-q.jobs[x].ready > q.cfg.ReserveAfter
}

// couldFit reports whether job x would fit one of the offered slots once
// all that executor's GPUs were free (Slot.TotalGPUs).
func (q *FairQueue) couldFit(x int32) bool {
	ps := &q.ps
	j := &q.jobs[x]
	c := &q.classes[j.class]
	cb := ps.bits[q.compat(j.class):]
	if c.sEvEpoch != ps.epoch {
		c.sEvEpoch, c.sEv = ps.epoch, false
		for i := range ps.slots {
			if st := &ps.slots[i]; st.total >= j.gpus && hasBit(cb, int(st.pos)) {
				c.sEv = true
				break
			}
		}
	}
	return c.sEv
}

func (q *FairQueue) placeAt(dst []Placement, fi int32, c cand, pos int32, res *reservation) []Placement {
	ps := &q.ps
	j := &q.jobs[c.x]
	si := ps.byPos[pos]
	st := &ps.slots[si]
	w := ps.words
	clearBit(ps.bucket[int(st.free)*w:], int(pos))
	st.free -= max(j.gpus, 0)
	st.left--
	if st.left > 0 {
		setBit(ps.bucket[int(st.free)*w:], int(pos))
	}
	ps.left--
	dst = append(dst, Placement{JobID: j.id, Executor: ps.slotsIn[si].Executor, Slot: int(si)})

	f := &q.flows[fi]
	if c.fc >= 0 {
		fc := &f.classes[c.fc]
		fc.sEpoch, fc.sAfter = ps.epoch, c.x
	} else {
		ps.due[-1-c.fc].used = true
	}
	q.placedBy(&q.tenants[f.tenant])
	q.tenants[f.tenant].sPlaced++

	// The same charge as Start, on the simulated tags.
	cost := costOf(j.cost)
	t := &q.tiers[f.tier]
	serve(&f.sTag, &t.sV, cost, f.weight)
	serve(&t.sTag, &ps.v[t.band()], cost, t.weight)
	q.tiers[f.tier].charged.push(fi, heapOrder{q: q, kind: bySimTag})

	if res != nil && res.job == c.x {
		res.done = true
		for i := 0; i < w; i++ {
			ps.held[i] &^= ps.bits[int(res.off)+i]
		}
		ps.gen++
	}
	return dst
}
