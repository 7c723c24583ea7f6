package scheduler

import (
	"math"
)

// FairQueue is the hierarchical weighted-fair queue: strict tiers first,
// then tiers by weight, tenants by weight within their tier, then job
// priority (higher first), then arrival (Seq). Both weighted levels use
// start-time fair queueing (SFQ) on exact rational virtual time; see the
// package documentation for the guarantee.
//
// Vocabulary: a flow is one tenant's jobs in one tier (a tenant has one
// flow unless its tier changed while jobs were queued). A flow's tag is the
// virtual start of its next job: dispatching a job of cost c moves it to
// max(tag, tier virtual time) + c/weight, and the tier's virtual time to
// the start used. Of flows with equal tags, the one whose ready jobs began
// with the earliest arrival goes first (flow.since), then the tenant's
// name. Tiers are tagged the same way against the virtual time of their
// band (strict or not).
//
// A job is ready once its Ready time has passed the queue's clock, which
// Advance and Start move (the state machine's time); until then it is
// delayed and outside the fair order. Place still offers delayed jobs that
// are ready at Place's own now.
//
// Mutating methods need exclusive access. The read-only ones (Position,
// Len, Ascend, Page, CheckAdmission, AppendBinary, MarshalBinary, and a
// Placer's Place) may run at the same time as each other; Place and
// PlaceInto use the queue's own Placer, so two of those at once need the
// caller to serialise them (or a Placer each).
type FairQueue struct {
	settings // the Config, indexed (config.go)

	records         // the jobs, tenants, tiers, flows, models and classes (records.go)
	bt      bforest // B-tree nodes (btree.go)
	byID    jobIndex
	n       int

	vband     [2]vtime // virtual time of the strict (0) and normal (1) tiers
	watermark int64    // the latest time given to Advance or Start
	delayed   int32    // root of the global delayed B-tree

	placer Placer // PlaceInto's
}

var (
	_ Queue = (*FairQueue)(nil)
	_ Queue = (*FIFO)(nil)
)

type qjob struct {
	id, seq  uint64
	ready    int64
	cost     int64 // as given; costOf(cost) is charged
	mem      int64
	sq       int64  // position key: estimated virtual start, whole part
	sf       uint32 // and fraction
	prio     int32
	gpus     int32
	flow     int32
	model    int32
	class    int32
	leaf     int32 // its B-tree leaf (queue order if promoted, else delayed)
	prev     int32 // neighbours in its class queue (classqueue.go), if promoted
	next     int32
	promoted bool // ready by the queue's clock: in the fair order
}

type tenant struct {
	name       string
	weight     int64
	maxRunning int32
	maxQueued  int64
	running    int32
	queued     int64
	flows      []int32
}

type tier struct {
	name    string
	weight  int64
	strict  bool
	tag     vtime   // start of the tier's next job in band virtual time
	vt      vtime   // the tier's virtual time: largest flow start dispatched
	heap    minHeap // active flows, least (tag, name) first
	backlog int64   // weights of the flows with ready jobs
}

type flowKey struct{ tier, tenant int32 }

type flow struct {
	tenant, tier int32
	name         string // the tenant's, for deterministic ties
	weight       int64
	tag          vtime
	classes      []classQueue // one per resource class with ready jobs
	cids         []int32      // classes[i].class, compact for the lookup
	ready        int32        // ready jobs
	costAt       [10]int64    // cost of ready jobs by priority
	hix          int32        // index in the tier heap, -1 when inactive
	// since is the Seq of the job that ended the flow's last spell without
	// ready jobs: of two flows with equal tags the one whose spell began
	// with the earlier arrival goes first (arrival order among equals; a
	// retried or delayed job keeps the Seq it arrived with), not the one
	// whose name sorts first. It only changes while the flow has no ready
	// job, so the queue-order trees, which read it, stay in order.
	since uint64
}

type model struct {
	name    string
	queued  int64
	ready   int64
	trees   []tierTree // queue-order B-trees of ready jobs, one per tier
	delayed int32      // root of the model's delayed treap
}

type tierTree struct{ tier, root int32 }

type classKey struct {
	model int32
	gpus  int32
	mem   int64
}

type class struct{ classKey }

// NewFairQueue returns an empty fair queue under cfg.
func NewFairQueue(cfg Config) *FairQueue {
	q := &FairQueue{
		records:   newRecords(),
		bt:        bforest{bn: make([]bnode, 1)},
		vband:     [2]vtime{vzero, vzero},
		watermark: math.MinInt64,
	}
	q.SetConfig(cfg)
	return q
}

// Len is the number of queued jobs, ready or delayed.
func (q *FairQueue) Len() int { return q.n }

// QueuedOfModel is the number of queued jobs of the model, ready or delayed.
func (q *FairQueue) QueuedOfModel(model string) int {
	if i, ok := q.modelIx[model]; ok {
		return int(q.models[i].queued)
	}
	return 0
}

func (t *tier) band() int {
	if t.strict {
		return 0
	}
	return 1
}

// Enqueue adds j; a job whose ID is already queued is ignored. A job with
// an empty Tier joins its tenant's configured tier.
func (q *FairQueue) Enqueue(j Job) {
	if _, ok := q.byID.find(q.jobs, j.ID); ok {
		return
	}
	ten := q.tenantOf(j.Tenant, &q.settings)
	tierName := j.Tier
	if tierName == "" {
		tierName = q.tierOfTenant(j.Tenant)
	}
	f := q.flowOf(q.tierOf(tierName, &q.settings, &q.vband), ten)
	m := q.modelOf(j.Model)
	x := q.alloc()
	q.jobs[x] = qjob{
		id: j.ID, seq: j.Seq, ready: j.Ready, cost: j.Cost, mem: j.GPUMemoryMB,
		prio: j.Priority, gpus: j.GPUs,
		flow: f, model: m, class: q.classOf(classKey{m, j.GPUs, j.GPUMemoryMB}),
	}
	q.byID.add(q.jobs, x)
	q.n++
	q.tenants[ten].queued++
	q.models[m].queued++
	if j.Ready <= q.watermark {
		q.promote(x)
	} else {
		q.models[m].delayed = q.tr.insert(q.order(ordReady), q.models[m].delayed, x)
		q.bt.insert(q.order(ordReady), &q.delayed, x)
	}
}

// Remove takes a job out of the queue without charging anyone: for a job
// canceled or expired while queued. A job that starts goes through Start.
func (q *FairQueue) Remove(id uint64) bool {
	x, ok := q.byID.find(q.jobs, id)
	if !ok {
		return false
	}
	q.removeAt(x)
	return true
}

// Start takes the job out of the queue because it starts running at now:
// its flow and tier are charged its cost, and it counts against its
// tenant's MaxRunning until Stopped. It also advances the queue's clock to
// now (see Advance). False if the job is not queued.
func (q *FairQueue) Start(id uint64, now int64) bool {
	q.Advance(now)
	x, ok := q.byID.find(q.jobs, id)
	if !ok {
		return false
	}
	fi, cost := q.jobs[x].flow, costOf(q.jobs[x].cost)
	q.removeAt(x)
	q.charge(fi, cost)
	ten := &q.tenants[q.flows[fi].tenant]
	ten.running++
	if !ten.underCap() {
		for _, f := range ten.flows {
			q.deactivate(f)
		}
	}
	return true
}

// Stopped records that a running job of the tenant ended (succeeded,
// failed, canceled, lost: any way), freeing a place under its MaxRunning.
func (q *FairQueue) Stopped(tenantName string) {
	i, ok := q.tenantIx[tenantName]
	if !ok || q.tenants[i].running == 0 {
		return
	}
	t := &q.tenants[i]
	t.running--
	for _, f := range t.flows {
		q.activate(f)
	}
}

// Advance moves the queue's clock to now (it never goes back): delayed
// jobs whose Ready time has come join the fair order. The state machine
// calls it with its own time before applying each entry.
func (q *FairQueue) Advance(now int64) {
	if now <= q.watermark {
		return
	}
	q.watermark = now
	for q.delayed != 0 {
		x := q.bt.first(q.delayed)
		if q.jobs[x].ready > now {
			return
		}
		q.unlinkDelayed(x)
		q.promote(x)
	}
}

// charge accounts a dispatch of cost c from flow fi (SFQ at both levels).
func (q *FairQueue) charge(fi int32, c int64) {
	f := &q.flows[fi]
	t := &q.tiers[f.tier]
	serve(&f.tag, &t.vt, c, f.weight)
	if f.hix >= 0 {
		t.heap.down(f.hix, q.flowOrder()) // a charge only raises the tag (costOf ≥ 1)
	}
	serve(&t.tag, &q.vband[t.band()], c, t.weight)
}

// promote puts a job that became ready into its class queue and its
// queue-order tree. Its position key is the virtual start it would get if
// its flow kept being served: the flow's next start plus the cost queued
// ahead of it in the flow, over the flow's weight, kept between the keys
// of its neighbours in its class queue so that a tenant's jobs of one
// class keep their priority order in queue order.
func (q *FairQueue) promote(x int32) {
	j := &q.jobs[x]
	f := &q.flows[j.flow]
	t := &q.tiers[f.tier]
	ci := q.classQueueOf(j.flow, j.class)
	f.classes[ci].push(q.jobs, x)
	if f.ready == 0 {
		f.since = j.seq
	}
	p := prioOf(j.prio)
	var ahead int64
	for i := p; i < len(f.costAt); i++ {
		ahead += f.costAt[i]
	}
	s := enter(f.tag, t.vt, f.weight).plus(ahead, f.weight)
	j.sq, j.sf = s.q, s.frac()
	// Kept between its neighbours in its class queue. (Across a tenant's
	// classes keys are not clamped: that would read every class's tail on
	// each arrival.)
	lo, hi := f.classes[ci].prev(q.jobs, x), f.classes[ci].next(q.jobs, x)
	if lo != 0 && keyBefore(j.sq, j.sf, q.jobs[lo].sq, q.jobs[lo].sf) {
		j.sq, j.sf = q.jobs[lo].sq, q.jobs[lo].sf
	}
	if hi != 0 && keyBefore(q.jobs[hi].sq, q.jobs[hi].sf, j.sq, j.sf) {
		j.sq, j.sf = q.jobs[hi].sq, q.jobs[hi].sf
	}
	q.link(x, ci, true)
}

// link makes a job ready with its position key set: into its class queue
// (unless already there) and its queue-order tree.
func (q *FairQueue) link(x int32, ci int, queued bool) {
	j := &q.jobs[x]
	j.promoted = true
	f := &q.flows[j.flow]
	if !queued {
		f.classes[ci].push(q.jobs, x)
	}
	m := &q.models[j.model]
	ti := q.treeOf(j.model, f.tier)
	q.bt.insert(q.order(ordPos), &m.trees[ti].root, x)
	m.ready++
	f.costAt[prioOf(j.prio)] += costOf(j.cost)
	f.ready++
	if f.ready == 1 {
		q.tiers[f.tier].backlog += f.weight
		q.activate(j.flow)
	}
}

func keyBefore(aq int64, af uint32, bq int64, bf uint32) bool {
	return aq < bq || aq == bq && af < bf
}

func (q *FairQueue) unlinkDelayed(x int32) {
	m := &q.models[q.jobs[x].model]
	m.delayed = q.tr.delete(q.jobs, m.delayed, x)
	q.bt.delete(q.jobs, &q.delayed, x)
}

func (q *FairQueue) removeAt(x int32) {
	j := &q.jobs[x]
	m := &q.models[j.model]
	if !j.promoted {
		q.unlinkDelayed(x)
	} else {
		f := &q.flows[j.flow]
		ci := q.classQueueOf(j.flow, j.class)
		f.classes[ci].remove(q.jobs, x)
		if f.classes[ci].n == 0 {
			last := len(f.classes) - 1
			f.classes[ci], f.cids[ci] = f.classes[last], f.cids[last]
			f.classes, f.cids = f.classes[:last], f.cids[:last]
		}
		ti := q.treeOf(j.model, f.tier)
		q.bt.delete(q.jobs, &m.trees[ti].root, x)
		m.ready--
		f.costAt[prioOf(j.prio)] -= costOf(j.cost)
		f.ready--
		if f.ready == 0 {
			q.tiers[f.tier].backlog -= f.weight
			q.deactivate(j.flow)
		}
	}
	q.byID.remove(q.jobs, x)
	q.n--
	q.tenants[q.flows[j.flow].tenant].queued--
	m.queued--
	*j = qjob{}
	q.free = append(q.free, x)
}

// activate puts a flow with ready jobs and room under its tenant's cap into
// its tier's heap. Its tag becomes at least the tier's virtual time: a flow
// that was idle, capped or empty banks no credit for that time.
func (q *FairQueue) activate(fi int32) {
	f := &q.flows[fi]
	if f.hix >= 0 || f.ready == 0 || !q.tenants[f.tenant].underCap() {
		return
	}
	t := &q.tiers[f.tier]
	if len(t.heap) == 0 {
		t.tag = enter(t.tag, q.vband[t.band()], t.weight)
	}
	f.tag = enter(f.tag, t.vt, f.weight)
	q.tiers[f.tier].heap.push(fi, q.flowOrder())
}

func (q *FairQueue) deactivate(fi int32) {
	if f := &q.flows[fi]; f.hix >= 0 {
		i := f.hix
		f.hix = -1
		q.tiers[f.tier].heap.remove(i, q.flowOrder())
	}
}

// flowOrder is the order of a tier's flow heap, which keeps each flow's
// place in it (flow.hix).
func (q *FairQueue) flowOrder() heapOrder { return heapOrder{q: q, kind: byTag} }

// SetConfig applies a new policy. Queued and running jobs stay; weights,
// strictness, caps and bounds take effect for the next decision. A tag
// moved to a new weight is rounded up, never down.
func (q *FairQueue) SetConfig(cfg Config) {
	q.settings = indexConfig(cfg)
	for i := range q.tiers {
		q.tiers[i].configure(&q.settings, &q.vband)
	}
	for i := range q.tenants {
		q.tenants[i].configure(&q.settings)
	}
	for i := range q.tiers {
		q.tiers[i].backlog = 0
	}
	for i := range q.flows {
		f := &q.flows[i]
		if w := q.tenants[f.tenant].weight; w != f.weight {
			f.weight = w
			f.tag = f.tag.over(w)
		}
		if f.ready > 0 {
			q.tiers[f.tier].backlog += f.weight
		}
	}
	// Tags may have moved: restore heap order, then the caps.
	for ti := range q.tiers {
		q.tiers[ti].heap.heapify(q.flowOrder())
	}
	for i := range q.flows {
		if q.tenants[q.flows[i].tenant].underCap() {
			q.activate(int32(i))
		} else {
			q.deactivate(int32(i))
		}
	}
}
