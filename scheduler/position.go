package scheduler

import (
	"encoding/base64"
	"math"
	"math/bits"
	"slices"
)

// Queue order, Position, Ascend and Page.
//
// The fair order is decided at dispatch from virtual times that move, so
// the queue cannot know exactly which job will start k-th. Queue order is
// its estimate, made of keys kept in order-statistic trees:
//
//   - A ready job's key is its estimated virtual start in its tier: when it
//     became ready, its flow's next start (max of the flow's tag and the
//     tier's virtual time) plus the cost of the flow's ready jobs of its
//     priority or higher, over the flow's weight; kept between the keys of
//     the flow's jobs before and after it, so a tenant's own jobs keep
//     their priority order. Within a tier, jobs are ordered by key, then
//     their flow's since and tenant name, priority and Seq: this is the
//     SFQ dispatch order when every job is ready and fits, no job arrives
//     and no cap binds.
//   - Across the tiers of a band the key is mapped, at the time of the
//     query, to the band's virtual time: a tier at virtual time V whose
//     flows with ready jobs weigh W in all, and which starts its next job
//     at band time B, reaches key s at about B + (s − V)·W/w_tier.
//     Ties go by tier name. That counts a tier's jobs of one key (tenants
//     back from idle) as starting together; DispatchAhead (project.go)
//     charges them one by one, for ETAs.
//   - Strict tiers come first, then the others, then the delayed jobs
//     (ready later than the queue's clock) by Ready time and Seq.
//
// Position(id) is 1 + the number of queued jobs of the same model before
// the job in queue order: jobs of other models run on other executors.
// It is an estimate and moves both ways: down as jobs ahead start or
// leave, up when a tenant's higher-priority job, or a tenant that was
// idle, enters ahead of it (an idle tenant enters at the tier's current
// virtual time). Caps and slot fit are not modelled. Cost: O(T log n) for
// T tiers holding the model's jobs.

// line is the queue as its readers walk it: places in queue order, pages
// and the work ahead of a job, merged from the per-tier B-trees. It only
// reads; FairQueue's Position, Ascend, Page and AheadOf are its methods.
type line struct{ *FairQueue }

// Position is the job's 1-based place in queue order among queued jobs of
// its model; see the comment above for what that estimates.
func (q *FairQueue) Position(id uint64) (int, bool) { return line{q}.position(id) }

// Ascend calls fn for each queued job in queue order until fn returns
// false.
func (q *FairQueue) Ascend(fn func(Job) bool) { line{q}.ascend(fn) }

// Page returns up to limit queued jobs in queue order after the cursor,
// the cursor to pass for the next page, and whether more jobs follow.
func (q *FairQueue) Page(after Cursor, limit int) (page []Job, next Cursor, more bool) {
	return line{q}.page(after, limit)
}

// AheadOf calls each with, for every model with queued jobs, how many of
// them come before the job in queue order (for its own model, Position - 1),
// to estimate the work ahead of it on executors that serve several models.
// Ties across tiers count as after.
func (q *FairQueue) AheadOf(id uint64, each func(model string, n int)) bool {
	return line{q}.aheadOf(id, each)
}

// conv maps a tier's virtual time to its band's, as of now.
type conv struct{ base, vt, num, den int64 }

func (q line) convOf(ti int32) conv {
	t := &q.tiers[ti]
	return conv{base: vmax(t.tag, q.vband[t.band()]).q, vt: t.vt.q, num: max(t.backlog, 1), den: t.weight}
}

// at is the band virtual time at which the tier reaches key sq.
func (c conv) at(sq int64) int64 {
	d := sq - c.vt
	if d <= 0 {
		return c.base
	}
	hi, lo := bits.Mul64(uint64(d), uint64(c.num))
	if hi >= uint64(c.den) {
		return math.MaxInt64
	}
	quo, _ := bits.Div64(hi, lo, uint64(c.den))
	if quo > uint64(math.MaxInt64-c.base) {
		return math.MaxInt64
	}
	return c.base + int64(quo)
}

// position is Position: the comment above says what it estimates.
func (q line) position(id uint64) (int, bool) {
	x, ok := q.byID.find(q.jobs, id)
	if !ok {
		return 0, false
	}
	j := &q.jobs[x]
	m := &q.models[j.model]
	if !j.promoted {
		return int(m.ready) + q.tr.rank(q.order(ordReady), m.delayed, x) + 1, true
	}
	t := &q.tiers[q.flows[j.flow].tier]
	r := q.convOf(q.flows[j.flow].tier).at(j.sq)
	return 1 + q.countAhead(m.trees, t, r, func(int32) int { return q.bt.rank(q.jobs, x) }), true
}

// countAhead counts the jobs of a model's queue-order trees that come
// before band time r of tier t: every job of a band before t's, those of
// t's own tree as sameTier says, and the others' by their mapped keys.
func (q line) countAhead(trees []tierTree, t *tier, r int64, sameTier func(root int32) int) int {
	band := t.band()
	n := 0
	for _, tt := range trees {
		if tt.root == 0 {
			continue
		}
		ot := &q.tiers[tt.tier]
		switch ob := ot.band(); {
		case ob < band:
			n += q.bt.size(tt.root)
		case ob > band:
		case ot == t:
			n += sameTier(tt.root)
		default:
			n += q.countBefore(tt.root, q.convOf(tt.tier), r, ot.name < t.name)
		}
	}
	return n
}

// countBefore counts the jobs of a queue-order tree that map to a band
// time before r (at r too when their tier sorts first).
func (q line) countBefore(root int32, c conv, r int64, tierFirst bool) int {
	return q.bt.countWhile(root, func(key uint64) bool {
		jr := c.at(sqOf(key))
		return jr < r || jr == r && tierFirst
	})
}

// Cursor is a place in queue order for Page; the zero Cursor is the start.
// Its text form (MarshalText) is an opaque page token. Queue order moves
// as jobs arrive and start, so paging is best effort: a job can move
// across the cursor between two pages.
type Cursor struct {
	set   bool
	band  uint8 // 0 strict, 1 other tiers, 2 delayed
	r     int64 // band virtual time, or Ready for delayed jobs
	tier  string
	sq    int64
	sf    uint32
	since uint64 // the flow's
	flow  string
	prio  int32
	seq   uint64
	id    uint64
}

// mergeIter walks one tree in order, starting after a cursor.
type mergeIter struct {
	cur  bCursor
	band uint8
	tier int32
	c    conv
	r    int64 // of the head
}

func (q line) head(it *mergeIter) int32 { return q.bt.job(it.cur) }

func (q line) setR(it *mergeIter) {
	x := q.head(it)
	if it.band == 2 {
		it.r = q.jobs[x].ready
	} else {
		it.r = it.c.at(q.jobs[x].sq)
	}
}

func (q line) advance(it *mergeIter) bool {
	if it.cur = q.bt.next(it.cur); it.cur.leaf == 0 {
		return false
	}
	q.setR(it)
	return true
}

// itLess orders iterator heads in queue order.
func (q line) itLess(a, b *mergeIter) bool {
	if a.band != b.band {
		return a.band < b.band
	}
	if a.r != b.r {
		return a.r < b.r
	}
	if a.tier != b.tier {
		return q.tiers[a.tier].name < q.tiers[b.tier].name
	}
	return q.order(ordPos).less(q.head(a), q.head(b))
}

// after reports whether job x (in a tree with the given band and tier,
// mapping to r) comes after the cursor in queue order.
func (q line) after(c *Cursor, x int32, band uint8, r int64, tier string) bool {
	if !c.set {
		return true
	}
	if band != c.band {
		return band > c.band
	}
	if r != c.r {
		return r > c.r
	}
	j := &q.jobs[x]
	if band != 2 {
		if tier != c.tier {
			return tier > c.tier
		}
		if j.sq != c.sq {
			return j.sq > c.sq
		}
		if j.sf != c.sf {
			return j.sf > c.sf
		}
		f := &q.flows[j.flow]
		if f.since != c.since {
			return f.since > c.since
		}
		if f.name != c.flow {
			return f.name > c.flow
		}
		if p, cp := prioOf(j.prio), prioOf(c.prio); p != cp {
			return p < cp
		}
	}
	if j.seq != c.seq {
		return j.seq > c.seq
	}
	return j.id > c.id
}

// iters makes one iterator per non-empty tree, positioned after c.
func (q line) iters(c *Cursor) []*mergeIter {
	var its []*mergeIter
	seek := func(it *mergeIter, root int32) {
		name := ""
		if it.band != 2 {
			name = q.tiers[it.tier].name
		}
		it.cur = q.bt.seek(root, func(n int32) bool {
			r := q.jobs[n].ready
			if it.band != 2 {
				r = it.c.at(q.jobs[n].sq)
			}
			return q.after(c, n, it.band, r, name)
		})
		if it.cur.leaf != 0 {
			q.setR(it)
			its = append(its, it)
		}
	}
	for mi := range q.models {
		for _, tt := range q.models[mi].trees {
			if tt.root != 0 {
				t := &q.tiers[tt.tier]
				seek(&mergeIter{band: uint8(t.band()), tier: tt.tier, c: q.convOf(tt.tier)}, tt.root)
			}
		}
	}
	if q.delayed != 0 {
		seek(&mergeIter{band: 2, tier: -1}, q.delayed)
	}
	return its
}

// walk visits queued jobs in queue order after c until fn says stop.
func (q line) walk(c *Cursor, fn func(x int32, it *mergeIter) bool) {
	its := q.iters(c)
	less := func(a, b *mergeIter) int {
		if q.itLess(a, b) {
			return -1
		}
		if q.itLess(b, a) {
			return 1
		}
		return 0
	}
	// A k-way merge; k is the number of (model, tier) trees, so a sorted
	// slice with binary reinsertion is plenty.
	slices.SortFunc(its, less)
	for len(its) > 0 {
		it := its[0]
		if !fn(q.head(it), it) {
			return
		}
		its = its[1:]
		if q.advance(it) {
			i, _ := slices.BinarySearchFunc(its, it, less)
			its = slices.Insert(its, i, it)
		}
	}
}

// ascend is Ascend.
func (q line) ascend(fn func(Job) bool) {
	q.walk(&Cursor{}, func(x int32, _ *mergeIter) bool { return fn(q.jobOf(x)) })
}

// page is Page.
func (q line) page(after Cursor, limit int) (page []Job, next Cursor, more bool) {
	next = after
	q.walk(&after, func(x int32, it *mergeIter) bool {
		if len(page) == limit {
			more = true
			return false
		}
		page = append(page, q.jobOf(x))
		j := &q.jobs[x]
		next = Cursor{set: true, band: it.band, r: it.r, sq: j.sq, sf: j.sf, prio: j.prio, seq: j.seq, id: j.id}
		if it.band != 2 {
			f := &q.flows[j.flow]
			next.tier, next.since, next.flow = q.tiers[it.tier].name, f.since, f.name
		}
		return true
	})
	return page, next, more
}

// cursorVersion is a page token's first byte. Version 1, before flows'
// since, is refused: a token lives for one listing, which starts again.
const cursorVersion = 2

// MarshalText encodes the cursor as an opaque page token.
func (c Cursor) MarshalText() ([]byte, error) {
	if !c.set {
		return []byte{}, nil
	}
	b := []byte{cursorVersion, c.band}
	b = appendVarint(b, c.r)
	b = appendString(b, c.tier)
	b = appendVarint(b, c.sq)
	b = appendUvarint(b, uint64(c.sf))
	b = appendUvarint(b, c.since)
	b = appendString(b, c.flow)
	b = appendVarint(b, int64(c.prio))
	b = appendUvarint(b, c.seq)
	b = appendUvarint(b, c.id)
	return base64.RawURLEncoding.AppendEncode(nil, b), nil
}

// UnmarshalText decodes a page token made by MarshalText; empty is the
// start.
func (c *Cursor) UnmarshalText(text []byte) error {
	if len(text) == 0 {
		*c = Cursor{}
		return nil
	}
	b, err := base64.RawURLEncoding.AppendDecode(nil, text)
	if err != nil || len(b) < 2 || b[0] != cursorVersion || b[1] > 2 {
		return ErrBadCursor
	}
	d := decoder{b: b[2:]}
	n := Cursor{set: true, band: b[1], r: d.varint(), tier: d.str(), sq: d.varint()}
	sf := d.uvarint()
	n.since, n.flow, n.prio, n.seq, n.id = d.uvarint(), d.str(), d.int32(), d.uvarint(), d.uvarint()
	if d.finish() != nil || sf > math.MaxUint32 {
		return ErrBadCursor
	}
	n.sf = uint32(sf)
	*c = n
	return nil
}

// aheadOf is AheadOf.
func (q line) aheadOf(id uint64, each func(model string, n int)) bool {
	x, ok := q.byID.find(q.jobs, id)
	if !ok {
		return false
	}
	j := &q.jobs[x]
	pos, _ := q.position(id)
	var t *tier
	var r int64
	var key uint64
	if j.promoted {
		t = &q.tiers[q.flows[j.flow].tier]
		r = q.convOf(q.flows[j.flow].tier).at(j.sq)
		key = q.order(ordPos).pack(x)
	}
	before := func(root int32) int { return q.bt.countWhile(root, func(k uint64) bool { return k < key }) } // ties after
	for mi := range q.models {
		m := &q.models[mi]
		if m.queued == 0 {
			continue
		}
		if int32(mi) == j.model {
			each(m.name, pos-1)
			continue
		}
		if !j.promoted {
			each(m.name, int(m.ready)) // a delayed job comes after every ready one
			continue
		}
		each(m.name, q.countAhead(m.trees, t, r, before))
	}
	return true
}
