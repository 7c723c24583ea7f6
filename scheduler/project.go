package scheduler

import "time"

// DispatchAhead calls each with the ready jobs that would start before
// job id if every ready job could run and nothing else arrived: the
// dispatch order the fair queue's tier level gives, not queue order. Queue
// order maps each tier's keys onto its band's virtual time as of now
// (Position's estimate), which counts a tier's jobs that share one key (its
// tenants back from idle, all at the tier's virtual time) as starting
// together; the tier level charges each of them in turn, so a weight-4
// tier's job is ahead of all but a fifth of a weight-1 tier's line. Here
// the tiers' tags are charged job by job, as Start charges them: every
// strict tier's job comes first (for a job of a non-strict tier), then the
// tiers of the job's band in order of their tags. Within a tier it follows
// queue order, so it is exact where that is: every job ready and fitting,
// nothing arriving, no cap binding, and each tenant's jobs queued in its
// own priority order (TestDispatchAheadIsDispatchOrder). It stops after
// limit jobs and reports whether it reached id. ok is false, nothing
// called, for a job that is not queued or not ready (a delayed job comes
// after every ready one: Page's order).
func (q *FairQueue) DispatchAhead(id uint64, limit int, each func(id uint64)) (reached, ok bool) {
	return q.project(id, limit, func(x int32) bool { each(q.jobs[x].id); return true })
}

// DispatchOrder calls each with the ready jobs in the order DispatchAhead
// projects, every band (DispatchAhead(id) is the jobs before id here),
// and the rank of each one's model in the order CountAhead names models;
// at most limit of them, and where until names jobs, only until every one
// of those that is queued and ready has come (none: it calls nothing). It
// reports whether it came to the end of the ready jobs. A list of jobs
// reads the jobs ahead of each from one walk that ends at its last.
func (q *FairQueue) DispatchOrder(limit int, until []uint64, each func(id uint64, model int)) bool {
	var wanted map[int32]bool
	if until != nil {
		wanted = make(map[int32]bool, len(until))
		for _, id := range until {
			if x, found := q.byID.find(q.jobs, id); found && q.jobs[x].promoted {
				wanted[x] = true
			}
		}
		if len(wanted) == 0 {
			return false
		}
	}
	left, seen := len(wanted), 0
	for b := range len(q.vband) {
		if !q.projectBand(b, -1, limit, &seen, func(x int32) bool {
			each(q.jobs[x].id, int(q.jobs[x].model))
			if wanted[x] {
				left--
				return left > 0
			}
			return true
		}) {
			return false
		}
	}
	return true
}

// CountAhead is DispatchAhead counted by model: it calls each, in the
// queue's order of models, with how many of each model's jobs would start
// before id, and only if it reached id.
func (q *FairQueue) CountAhead(id uint64, limit int, each func(model string, n int)) (reached, ok bool) {
	counts := make([]int, len(q.models))
	if reached, ok = q.project(id, limit, func(x int32) bool { counts[q.jobs[x].model]++; return true }); reached {
		for mi, n := range counts {
			if n > 0 {
				each(q.models[mi].name, n)
			}
		}
	}
	return reached, ok
}

// project is DispatchAhead by arena index.
func (q *FairQueue) project(id uint64, limit int, each func(x int32) bool) (reached, ok bool) {
	x, found := q.byID.find(q.jobs, id)
	if !found || !q.jobs[x].promoted {
		return false, false
	}
	band := q.tiers[q.flows[q.jobs[x].flow].tier].band()
	seen := 0
	for b := 0; b <= band; b++ {
		if !q.projectBand(b, x, limit, &seen, each) {
			return false, true
		}
	}
	return true, true
}

// tierWalk is one tier's ready jobs in tier order (its per-model trees
// merged), with the tier's simulated tag.
type tierWalk struct {
	tier int32
	tag  vtime
	its  []bCursor // one per non-empty tree, the least head first
}

// projectBand emits band b's ready jobs in simulated dispatch order until
// job stop (false: limit reached first, or each said to stop; a band
// without stop is emitted whole).
func (q *FairQueue) projectBand(b int, stop int32, limit int, seen *int, each func(x int32) bool) bool {
	var walks []tierWalk
	for mi := range q.models {
		for _, tt := range q.models[mi].trees {
			if tt.root == 0 || q.tiers[tt.tier].band() != b {
				continue
			}
			i := 0
			for i < len(walks) && walks[i].tier != tt.tier {
				i++
			}
			if i == len(walks) {
				t := &q.tiers[tt.tier]
				walks = append(walks, tierWalk{tier: tt.tier, tag: enter(t.tag, q.vband[b], t.weight)})
			}
			walks[i].its = append(walks[i].its, bCursor{leaf: q.bt.firstLeaf(tt.root)})
		}
	}
	for i := range walks {
		q.sortHeads(walks[i].its)
	}
	v := q.vband[b]
	for {
		best := -1
		for i := range walks {
			w := &walks[i]
			if len(w.its) == 0 {
				continue
			}
			if best < 0 {
				best = i
				continue
			}
			bw := &walks[best]
			if c := vmax(w.tag, v).cmp(vmax(bw.tag, v)); c < 0 || c == 0 && q.tiers[w.tier].name < q.tiers[bw.tier].name {
				best = i
			}
		}
		if best < 0 {
			return true
		}
		w := &walks[best]
		jx := q.bt.job(w.its[0])
		if jx == stop {
			return true
		}
		if *seen >= limit {
			return false
		}
		*seen++
		if !each(jx) {
			return false
		}
		serve(&w.tag, &v, costOf(q.jobs[jx].cost), q.tiers[w.tier].weight)
		if w.its[0] = q.bt.next(w.its[0]); w.its[0].leaf == 0 {
			w.its = w.its[1:]
		}
		q.sortHeads(w.its)
	}
}

// sortHeads puts the cursor with the least head (queue order) first; the
// rest stay as they were (a tier has one tree per model: a few).
func (q *FairQueue) sortHeads(its []bCursor) {
	o := q.order(ordPos)
	for i := 1; i < len(its); i++ {
		if o.less(q.bt.job(its[i]), q.bt.job(its[0])) {
			its[0], its[i] = its[i], its[0]
		}
	}
}

// Behind is how far job id's position key is past its tier's virtual
// time (lead, in the key's units: cost over its tenant's weight), the
// weight of the tier's tenants with ready jobs (backlog) and its own
// tenant's (weight). A job at the tier's virtual time (lead 0) goes before
// every later arrival of its tier; one past it, whose tenant was served or
// queued just before, is passed by every tenant that arrives while the
// virtual time is short of its key. Under fair sharing the virtual time
// moves at the tier's capacity over backlog, so the job waits about
// lead·backlog over the tier's capacity (FairShareWait). ok is false for a
// job not queued or not ready.
func (q *FairQueue) Behind(id uint64) (lead, backlog, weight int64, ok bool) {
	x, found := q.byID.find(q.jobs, id)
	if !found || !q.jobs[x].promoted {
		return 0, 0, 0, false
	}
	f := &q.flows[q.jobs[x].flow]
	t := &q.tiers[f.tier]
	return max(q.jobs[x].sq-t.vt.q, 0), t.backlog, f.weight, true
}

// FairShareWait is how long a job lead past its tier's virtual time waits
// for the fair sharing to reach it (Behind), with backlog weights sharing
// slots: costs are milli-GPU-seconds, so a slot serves 1,000 a second.
// It saturates at the largest Duration.
func FairShareWait(lead, backlog int64, slots float64) time.Duration {
	if lead <= 0 || backlog <= 0 || slots <= 0 {
		return 0
	}
	return duration(float64(lead) * float64(backlog) * float64(time.Millisecond) / slots)
}
