package scheduler

// records are the queue's arenas and their indexes: jobs (with their treap
// nodes), tenants, tiers, flows (a tenant in a tier), models and resource
// classes, each found by name or key and added on first use. Index 0 of
// jobs is nil; a freed job's index is reused.
type records struct {
	jobs []qjob  // arena; jobs[0] is nil
	tr   treaps  // the arena's jobs' treap nodes (treap.go)
	free []int32 // freed job indexes

	tenants  []tenant
	tenantIx map[string]int32
	tiers    []tier
	tierIx   map[string]int32
	flows    []flow
	flowIx   map[flowKey]int32
	models   []model
	modelIx  map[string]int32
	classes  []class
	classIx  map[classKey]int32
}

func newRecords() records {
	return records{
		jobs:     make([]qjob, 1),
		tr:       treaps{nodes: make([]tnode, 1)},
		tenantIx: make(map[string]int32),
		tierIx:   make(map[string]int32),
		flowIx:   make(map[flowKey]int32),
		modelIx:  make(map[string]int32),
		classIx:  make(map[classKey]int32),
	}
}

func (q *records) alloc() int32 {
	if n := len(q.free); n > 0 {
		x := q.free[n-1]
		q.free = q.free[:n-1]
		return x
	}
	q.jobs = append(q.jobs, qjob{})
	q.tr.nodes = append(q.tr.nodes, tnode{})
	return int32(len(q.jobs) - 1)
}

func (q *records) flowOf(ti, ten int32) int32 {
	k := flowKey{ti, ten}
	if i, ok := q.flowIx[k]; ok {
		return i
	}
	i := int32(len(q.flows))
	q.flows = append(q.flows, flow{
		tenant: ten, tier: ti, name: q.tenants[ten].name,
		weight: q.tenants[ten].weight, tag: vzero, hix: -1,
	})
	q.flowIx[k] = i
	q.tenants[ten].flows = append(q.tenants[ten].flows, i)
	return i
}

func (q *records) modelOf(name string) int32 {
	if i, ok := q.modelIx[name]; ok {
		return i
	}
	i := int32(len(q.models))
	q.models = append(q.models, model{name: name})
	q.modelIx[name] = i
	return i
}

func (q *records) classOf(k classKey) int32 {
	if i, ok := q.classIx[k]; ok {
		return i
	}
	i := int32(len(q.classes))
	q.classes = append(q.classes, class{classKey: k})
	q.classIx[k] = i
	return i
}

// classQueueOf finds (or adds) the flow's queue for a class.
func (q *records) classQueueOf(fi, c int32) int {
	f := &q.flows[fi]
	for i, id := range f.cids {
		if id == c {
			return i
		}
	}
	f.classes = append(f.classes, classQueue{class: c})
	f.cids = append(f.cids, c)
	return len(f.classes) - 1
}

// treeOf finds (or adds) the model's queue-order tree for a tier.
func (q *records) treeOf(mi, ti int32) int {
	m := &q.models[mi]
	for i := range m.trees {
		if m.trees[i].tier == ti {
			return i
		}
	}
	m.trees = append(m.trees, tierTree{tier: ti})
	return len(m.trees) - 1
}

// jobOf rebuilds the Job a queued job was enqueued as (Tier is the tier it
// is queued in).
func (q *records) jobOf(x int32) Job {
	j := &q.jobs[x]
	f := &q.flows[j.flow]
	return Job{
		ID: j.id, Tenant: f.name, Tier: q.tiers[f.tier].name, Model: q.models[j.model].name,
		Priority: j.prio, GPUs: j.gpus, GPUMemoryMB: j.mem, Cost: j.cost, Ready: j.ready, Seq: j.seq,
	}
}

// order is q's jobs in order o.
func (q *records) order(o int) *jobOrder { return &jobOrder{o: o, js: q.jobs, flows: q.flows} }

// tenantOf finds (or adds, configured by s) the tenant.
func (q *records) tenantOf(name string, s *settings) int32 {
	if i, ok := q.tenantIx[name]; ok {
		return i
	}
	i := int32(len(q.tenants))
	q.tenants = append(q.tenants, tenant{name: name})
	q.tenantIx[name] = i
	q.tenants[i].configure(s)
	return i
}

// tierOf finds (or adds, configured by s) the tier; vband is the bands'
// virtual times, which a strict tier enters at.
func (q *records) tierOf(name string, s *settings, vband *[2]vtime) int32 {
	if i, ok := q.tierIx[name]; ok {
		return i
	}
	i := int32(len(q.tiers))
	q.tiers = append(q.tiers, tier{name: name, tag: vzero, vt: vzero, weight: 1})
	q.tierIx[name] = i
	q.tiers[i].configure(s, vband)
	return i
}

// configure gives the tenant its weight, cap and bound under s.
func (t *tenant) configure(s *settings) {
	t.weight, t.maxRunning, t.maxQueued = 1, 0, s.cfg.MaxQueuedPerTenant
	if c, ok := s.tenantCfg[t.name]; ok {
		tc := s.cfg.Tenants[c]
		t.weight, t.maxRunning = weightOf(tc.Weight), tc.MaxRunning
		if tc.MaxQueued > 0 {
			t.maxQueued = tc.MaxQueued
		}
	}
}

func (t *tenant) underCap() bool {
	return t.maxRunning <= 0 || t.running < t.maxRunning
}

// configure gives the tier its weight and strictness under s; a tag moved
// to a new weight is rounded up, and a tier changing band enters the new
// band's virtual time (vband).
func (t *tier) configure(s *settings, vband *[2]vtime) {
	w, strict := int64(1), false
	if c, ok := s.tierCfg[t.name]; ok {
		w, strict = weightOf(s.cfg.Tiers[c].Weight), s.cfg.Tiers[c].Strict
	}
	if w != t.weight {
		t.weight = w
		t.tag = t.tag.over(w)
	}
	if strict != t.strict {
		t.strict = strict
		t.tag = enter(t.tag, vband[t.band()], t.weight)
	}
}
