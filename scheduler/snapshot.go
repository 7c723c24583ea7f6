package scheduler

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
)

// The fair queue's snapshot is its whole state, not a header over the job
// list: the queue's clock, the virtual times of both bands, every tier's
// tag and virtual time, every tenant's running count, every flow's tag and
// every queued job with its position key. Records are written sorted by
// name or ID and all numbers as varints, so the encoding is a function of
// the state alone; decoding rebuilds the same state (the B-trees' shapes
// may differ, but nothing depends on them: order, ranks and iteration
// depend only on the keys), so that encode → decode → encode gives the
// same bytes and every later decision is the same. Weights, caps and
// bounds are not in it: they come from the Config the queue was made with.

const (
	fairMagic   = "SLFQ\x02"
	fairMagicV1 = "SLFQ\x01" // before flows' since: decoded, never written
	fifoMagic   = "SLFI\x01"
)

// ErrBadSnapshot is returned for data that is not a queue encoding.
var ErrBadSnapshot = errors.New("scheduler: bad queue snapshot")

// MarshalBinary encodes the queue; see AppendBinary.
func (q *FairQueue) MarshalBinary() ([]byte, error) { return q.AppendBinary(nil) }

// AppendBinary appends the deterministic encoding of the queue's state.
func (q *FairQueue) AppendBinary(b []byte) ([]byte, error) {
	return line{q}.image(false).AppendBinary(b)
}

// Image is a copy of the queue's state, taken in a few bulk copies
// (the job arena and the ID index are copied whole, the tiers', tenants',
// flows' and models' few fields one by one) so that a caller holding a lock
// can take it cheaply and encode it after letting go: the encoding sorts
// and writes every queued job, which at a million jobs takes a while.
// The queue may change meanwhile; the image does not.
type Image struct {
	watermark int64
	vband     [2]vtime
	tiers     []tierImage
	tenants   []tenantImage
	flows     []flowImage
	models    []string
	jobs      []qjob   // the arena, whole
	byID      jobIndex // the arena indices of the queued jobs
}

type tierImage struct {
	name    string
	tag, vt vtime
}

type tenantImage struct {
	name    string
	running int32
}

type flowImage struct {
	tier, tenant int32
	tag          vtime
	since        uint64
}

// Image copies the queue's state for a later AppendBinary. It reads the
// queue only, like Position: it may run beside the other readers.
func (q *FairQueue) Image() *Image { return line{q}.image(true) }

// image takes the state, copying the arena and the ID index only when
// asked (AppendBinary encodes at once and needs no copy).
func (q line) image(copyArrays bool) *Image {
	im := &Image{
		watermark: q.watermark,
		vband:     q.vband,
		tiers:     make([]tierImage, len(q.tiers)),
		tenants:   make([]tenantImage, len(q.tenants)),
		flows:     make([]flowImage, len(q.flows)),
		models:    make([]string, len(q.models)),
		jobs:      q.jobs,
		byID:      q.byID,
	}
	if copyArrays {
		im.jobs, im.byID.slots = slices.Clone(q.jobs), slices.Clone(q.byID.slots)
	}
	for i := range q.tiers {
		t := &q.tiers[i]
		im.tiers[i] = tierImage{t.name, t.tag, t.vt}
	}
	for i := range q.tenants {
		im.tenants[i] = tenantImage{q.tenants[i].name, q.tenants[i].running}
	}
	for i := range q.flows {
		f := &q.flows[i]
		im.flows[i] = flowImage{f.tier, f.tenant, f.tag, f.since}
	}
	for i := range q.models {
		im.models[i] = q.models[i].name
	}
	return im
}

// AppendBinary appends the encoding the queue had when the image was taken.
func (im *Image) AppendBinary(b []byte) ([]byte, error) {
	b = append(b, fairMagic...)
	b = appendVarint(b, im.watermark)
	b = appendVtime(appendVtime(b, im.vband[0]), im.vband[1])

	tiers := sortedBy(len(im.tiers), func(i int) string { return im.tiers[i].name })
	tierRank := rankOf(tiers, len(im.tiers))
	b = appendUvarint(b, uint64(len(tiers)))
	for _, i := range tiers {
		t := &im.tiers[i]
		b = appendVtime(appendVtime(appendString(b, t.name), t.tag), t.vt)
	}
	tenants := sortedBy(len(im.tenants), func(i int) string { return im.tenants[i].name })
	tenantRank := rankOf(tenants, len(im.tenants))
	b = appendUvarint(b, uint64(len(tenants)))
	for _, i := range tenants {
		b = appendVarint(appendString(b, im.tenants[i].name), int64(im.tenants[i].running))
	}
	flows := make([]int32, len(im.flows))
	for i := range flows {
		flows[i] = int32(i)
	}
	slices.SortFunc(flows, func(x, y int32) int {
		fx, fy := &im.flows[x], &im.flows[y]
		if c := cmp.Compare(tierRank[fx.tier], tierRank[fy.tier]); c != 0 {
			return c
		}
		return cmp.Compare(tenantRank[fx.tenant], tenantRank[fy.tenant])
	})
	flowRank := rankOf(flows, len(im.flows))
	b = appendUvarint(b, uint64(len(flows)))
	for _, i := range flows {
		f := &im.flows[i]
		b = appendUvarint(b, uint64(tierRank[f.tier]))
		b = appendUvarint(b, uint64(tenantRank[f.tenant]))
		b = appendVtime(b, f.tag)
		b = appendUvarint(b, f.since)
	}

	order := make([]int32, 0, im.byID.n)
	used := make([]bool, len(im.models))
	im.byID.each(func(x int32) {
		order = append(order, x)
		used[im.jobs[x].model] = true
	})
	slices.SortFunc(order, func(x, y int32) int { return cmp.Compare(im.jobs[x].id, im.jobs[y].id) })
	var models []int32
	for i, u := range used {
		if u {
			models = append(models, int32(i))
		}
	}
	slices.SortFunc(models, func(x, y int32) int { return cmp.Compare(im.models[x], im.models[y]) })
	modelRank := rankOf(models, len(im.models))
	b = appendUvarint(b, uint64(len(models)))
	for _, i := range models {
		b = appendString(b, im.models[i])
	}
	b = appendUvarint(b, uint64(len(order)))
	for _, x := range order {
		j := &im.jobs[x]
		b = appendUvarint(b, j.id)
		b = appendUvarint(b, j.seq)
		b = appendUvarint(b, uint64(flowRank[j.flow]))
		b = appendUvarint(b, uint64(modelRank[j.model]))
		b = appendVarint(b, int64(j.prio))
		b = appendVarint(b, int64(j.gpus))
		b = appendVarint(b, j.mem)
		b = appendVarint(b, j.cost)
		b = appendVarint(b, j.ready)
		b = appendVarint(b, j.sq)
		b = appendUvarint(b, uint64(j.sf))
	}
	return b, nil
}

// UnmarshalBinary replaces the queue's state with an encoded one, keeping
// its Config. On error the queue is unchanged.
func (q *FairQueue) UnmarshalBinary(data []byte) error {
	d := decoder{b: data}
	v1 := d.magicOf(fairMagic, fairMagicV1) == 1
	type rtenant struct {
		name    string
		running int64
	}
	type rflow struct {
		tier, tenant int
		tag          vtime
		since        uint64
	}
	type rjob struct {
		j     Job
		flow  int
		sq    int64
		sf    uint64
		model int
	}
	watermark := d.varint()
	vb := [2]vtime{d.vtime(), d.vtime()}
	tiers := make([]tierImage, d.count())
	for i := range tiers {
		tiers[i] = tierImage{d.str(), d.vtime(), d.vtime()}
	}
	tenants := make([]rtenant, d.count())
	for i := range tenants {
		tenants[i] = rtenant{d.str(), d.varint()}
		if tenants[i].running < 0 || tenants[i].running > math.MaxInt32 {
			d.fail("running count")
		}
	}
	flows := make([]rflow, d.count())
	for i := range flows {
		flows[i] = rflow{d.index(len(tiers)), d.index(len(tenants)), d.vtime(), 0}
		if !v1 {
			flows[i].since = d.uvarint()
		}
	}
	models := make([]string, d.count())
	for i := range models {
		models[i] = d.str()
	}
	jobs := make([]rjob, d.count())
	for i := range jobs {
		r := &jobs[i]
		r.j.ID, r.j.Seq = d.uvarint(), d.uvarint()
		r.flow, r.model = d.index(len(flows)), d.index(len(models))
		r.j.Priority, r.j.GPUs = d.int32(), d.int32()
		r.j.GPUMemoryMB, r.j.Cost, r.j.Ready = d.varint(), d.varint(), d.varint()
		r.sq, r.sf = d.varint(), d.uvarint()
		if r.sf > math.MaxUint32 {
			d.fail("position key")
		}
	}
	if err := d.finish(); err != nil {
		return err
	}
	if v1 {
		// Before since was kept: each flow's oldest ready job stands in for
		// the start of its spell (a flow with none gets its own at its next
		// promotion).
		for i := range flows {
			flows[i].since = math.MaxUint64
		}
		for _, r := range jobs {
			if r.j.Ready <= watermark {
				flows[r.flow].since = min(flows[r.flow].since, r.j.Seq)
			}
		}
		for i := range flows {
			if flows[i].since == math.MaxUint64 {
				flows[i].since = 0
			}
		}
	}

	q.reset()
	q.watermark, q.vband = watermark, vb
	tierIx := make([]int32, len(tiers))
	for i, t := range tiers {
		tierIx[i] = q.tierOf(t.name, &q.settings, &q.vband)
	}
	tenantIx := make([]int32, len(tenants))
	for i, t := range tenants {
		tenantIx[i] = q.tenantOf(t.name, &q.settings)
		q.tenants[tenantIx[i]].running = int32(t.running)
	}
	flowIx := make([]int32, len(flows))
	for i, f := range flows {
		flowIx[i] = q.flowOf(tierIx[f.tier], tenantIx[f.tenant])
	}
	for _, r := range jobs {
		if _, dup := q.byID.find(q.jobs, r.j.ID); dup {
			continue
		}
		f := &q.flows[flowIx[r.flow]]
		r.j.Tenant, r.j.Tier, r.j.Model = f.name, q.tiers[f.tier].name, models[r.model]
		q.Enqueue(r.j)
		if x, _ := q.byID.find(q.jobs, r.j.ID); q.jobs[x].promoted {
			// Re-key exactly as encoded: unlink, set the key and the flow's
			// since, link again.
			q.removeKeyed(x)
			q.jobs[x].sq, q.jobs[x].sf = r.sq, uint32(r.sf)
			q.flows[flowIx[r.flow]].since = flows[r.flow].since
			q.link(x, q.classQueueOf(q.jobs[x].flow, q.jobs[x].class), true)
		}
	}
	// Linking activated flows and clamped tags; put the encoded tags back.
	for i, t := range tiers {
		q.tiers[tierIx[i]].tag, q.tiers[tierIx[i]].vt = t.tag, t.vt
	}
	for i, f := range flows {
		q.flows[flowIx[i]].tag, q.flows[flowIx[i]].since = f.tag, f.since
	}
	for ti := range q.tiers {
		q.tiers[ti].heap.heapify(q.flowOrder())
	}
	return nil
}

// removeKeyed unlinks a ready job from its queue-order tree (it stays in
// its class queue) so that link can put it back under another key.
func (q *FairQueue) removeKeyed(x int32) {
	j := &q.jobs[x]
	f := &q.flows[j.flow]
	m := &q.models[j.model]
	ti := q.treeOf(j.model, f.tier)
	q.bt.delete(q.jobs, &m.trees[ti].root, x)
	m.ready--
	f.costAt[prioOf(j.prio)] -= costOf(j.cost)
	f.ready--
	if f.ready == 0 {
		q.tiers[f.tier].backlog -= f.weight
		q.deactivate(j.flow)
	}
	j.promoted = false
}

// reset empties the queue, keeping its Config.
func (q *FairQueue) reset() {
	q.records, q.bt, q.byID, q.n = newRecords(), bforest{bn: make([]bnode, 1)}, jobIndex{}, 0
	q.vband, q.watermark, q.delayed = [2]vtime{vzero, vzero}, math.MinInt64, 0
}

func sortedBy(n int, key func(int) string) []int32 {
	ix := make([]int32, n)
	for i := range ix {
		ix[i] = int32(i)
	}
	slices.SortFunc(ix, func(a, b int32) int { return cmp.Compare(key(int(a)), key(int(b))) })
	return ix
}

// rankOf inverts a sorted table of record indices below n: rank[record] =
// its place in the table.
func rankOf(sorted []int32, n int) []int32 {
	r := make([]int32, n)
	for i, x := range sorted {
		r[x] = int32(i)
	}
	return r
}

func appendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }
func appendVarint(b []byte, v int64) []byte   { return binary.AppendVarint(b, v) }
func appendString(b []byte, s string) []byte {
	return append(appendUvarint(b, uint64(len(s))), s...)
}

func appendVtime(b []byte, v vtime) []byte {
	v = v.norm()
	return appendUvarint(appendUvarint(appendVarint(b, v.q), uint64(v.r)), uint64(v.d))
}

func appendJob(b []byte, j Job) []byte {
	b = appendUvarint(b, j.ID)
	b = appendString(b, j.Tenant)
	b = appendString(b, j.Tier)
	b = appendString(b, j.Model)
	b = appendVarint(b, int64(j.Priority))
	b = appendVarint(b, int64(j.GPUs))
	b = appendVarint(b, j.GPUMemoryMB)
	b = appendVarint(b, j.Cost)
	b = appendVarint(b, j.Ready)
	return appendUvarint(b, j.Seq)
}

// decoder reads what the append functions wrote; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrBadSnapshot, what)
	}
	d.b = nil
}

func (d *decoder) magic(m string) { d.magicOf(m) }

// magicOf reads one of the formats ms and says which (its index).
func (d *decoder) magicOf(ms ...string) int {
	for i, m := range ms {
		if len(d.b) >= len(m) && string(d.b[:len(m)]) == m {
			d.b = d.b[len(m):]
			return i
		}
	}
	d.fail("unknown format")
	return -1
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("truncated")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("truncated")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) int32() int32 {
	v := d.varint()
	if v < math.MinInt32 || v > math.MaxInt32 {
		d.fail("int32 out of range")
	}
	return int32(v)
}

// count reads a record count; each record takes at least one byte, so a
// count above the bytes left is corrupt (and never allocates much).
func (d *decoder) count() int {
	v := d.uvarint()
	if v > uint64(len(d.b)) {
		d.fail("count exceeds the data")
		return 0
	}
	return int(v)
}

func (d *decoder) index(n int) int {
	v := d.uvarint()
	if v >= uint64(n) {
		d.fail("index out of range")
		return 0
	}
	return int(v)
}

func (d *decoder) str() string {
	n := d.count()
	if d.err != nil {
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) vtime() vtime {
	v := vtime{q: d.varint(), r: int64(d.uvarint()), d: int64(d.uvarint())}
	if d.err == nil && (v.d < 1 || v.d > math.MaxInt32 || v.r < 0 || v.r >= v.d) {
		d.fail("virtual time")
	}
	return v
}

func (d *decoder) job() Job {
	return Job{
		ID: d.uvarint(), Tenant: d.str(), Tier: d.str(), Model: d.str(),
		Priority: d.int32(), GPUs: d.int32(), GPUMemoryMB: d.varint(),
		Cost: d.varint(), Ready: d.varint(), Seq: d.uvarint(),
	}
}

func (d *decoder) finish() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	return d.err
}

// ErrBadCursor is returned for a page token that Cursor.MarshalText did not
// make.
var ErrBadCursor = errors.New("scheduler: bad page token")
