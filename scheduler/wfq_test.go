package scheduler

import (
	"fmt"
	"math"
	"math/big"
	"testing"

	"pgregory.net/rapid"
)

// jobsByID indexes what a test enqueued, to look up a placed job's fields.
type jobsByID map[uint64]Job

// dispatch runs one Place over slots at now and starts every placement in
// order, as the leader and state machine would; it returns the started jobs.
func dispatch(t fataler, q *FairQueue, all jobsByID, now int64, slots []Slot) []Job {
	t.Helper()
	var out []Job
	for _, p := range q.Place(now, slots) {
		if !q.Start(p.JobID, now) {
			t.Fatalf("Start(%d) after Place: not queued", p.JobID)
		}
		out = append(out, all[p.JobID])
	}
	return out
}

func TestTierWeightsSplitDispatchesFourToOne(t *testing.T) {
	q := NewFairQueue(Config{
		Tiers:   []TierConfig{{Name: "pro", Weight: 4}, {Name: "free", Weight: 1}},
		Tenants: []TenantConfig{{Name: "p", Tier: "pro"}, {Name: "f", Tier: "free"}},
	})
	all := jobsByID{}
	for i := uint64(1); i <= 400; i++ {
		j := Job{ID: i, Seq: i, Tenant: "p", Model: "m", GPUs: 1, Cost: 1000}
		if i%2 == 0 {
			j.Tenant = "f"
		}
		all[i] = j
		q.Enqueue(j)
	}
	q.Advance(0)
	served := map[string]int{}
	for range 100 {
		for _, j := range dispatch(t, q, all, 0, []Slot{{Executor: "e", GPUs: 1}}) {
			served[j.Tenant]++
		}
	}
	if served["p"] != 80 || served["f"] != 20 {
		t.Fatalf("pro 4 : free 1 served %v in 100 dispatches, want 80 : 20", served)
	}
	mustInvariants(t, q)
}

func TestIdleTenantBanksNoCredit(t *testing.T) {
	q := NewFairQueue(Config{})
	all := jobsByID{}
	id := uint64(0)
	add := func(tenant string, n int) {
		for range n {
			id++
			all[id] = Job{ID: id, Seq: id, Tenant: tenant, Model: "m", GPUs: 1, Cost: 1}
			q.Enqueue(all[id])
		}
	}
	add("busy", 200)
	q.Advance(0)
	for range 100 { // "late" is idle all this time
		dispatch(t, q, all, 0, []Slot{{Executor: "e", GPUs: 1}})
	}
	add("late", 100)
	q.Advance(1)
	served := map[string]int{}
	for range 20 {
		for _, j := range dispatch(t, q, all, 1, []Slot{{Executor: "e", GPUs: 1}}) {
			served[j.Tenant]++
		}
	}
	// Banked credit would give "late" the next 100 dispatches.
	if served["late"] < 9 || served["late"] > 11 {
		t.Fatalf("after returning from idle, late got %d of 20 dispatches, want 10±1 (no banked credit)", served["late"])
	}
}

func TestPriorityReordersWithinTenantOnly(t *testing.T) {
	q := NewFairQueue(Config{})
	all := jobsByID{}
	jobs := []Job{
		{ID: 1, Seq: 1, Tenant: "a", Priority: 0},
		{ID: 2, Seq: 2, Tenant: "a", Priority: 9},
		{ID: 3, Seq: 3, Tenant: "b", Priority: 0},
		{ID: 4, Seq: 4, Tenant: "a", Priority: 9},
		{ID: 5, Seq: 5, Tenant: "b", Priority: 0},
	}
	for _, j := range jobs {
		j.Model, j.GPUs, j.Cost = "m", 1, 1
		all[j.ID] = j
		q.Enqueue(j)
	}
	q.Advance(0)
	var order []uint64
	for range 5 {
		for _, j := range dispatch(t, q, all, 0, []Slot{{Executor: "e", GPUs: 1}}) {
			order = append(order, j.ID)
		}
	}
	// a's priority 9 jobs go before a's priority 0 job, but b still gets
	// every other dispatch: priority does not jump the tenant's share.
	want := []uint64{2, 3, 4, 5, 1}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Fatalf("dispatch order %v, want %v", order, want)
	}
}

func TestStrictTierGoesFirstAndCanStarveOthers(t *testing.T) {
	q := NewFairQueue(Config{
		Tiers:   []TierConfig{{Name: "ops", Weight: 1, Strict: true}, {Name: "pro", Weight: 100}},
		Tenants: []TenantConfig{{Name: "probe", Tier: "ops"}, {Name: "p", Tier: "pro"}},
	})
	all := jobsByID{}
	all[1] = Job{ID: 1, Seq: 1, Tenant: "p", Model: "m", GPUs: 1, Cost: 1}
	q.Enqueue(all[1])
	for i := uint64(2); i < 50; i++ { // a continuous strict stream
		all[i] = Job{ID: i, Seq: i, Tenant: "probe", Model: "m", GPUs: 1, Cost: 1, Ready: int64(i)}
		q.Enqueue(all[i])
		q.Advance(int64(i))
		got := dispatch(t, q, all, int64(i), []Slot{{Executor: "e", GPUs: 1}})
		if len(got) != 1 || got[0].Tenant != "probe" {
			t.Fatalf("step %d: dispatched %v, want the strict tier's job", i, got)
		}
	}
	// As soon as the strict tier has nothing runnable, the others run.
	if got := dispatch(t, q, all, 60, []Slot{{Executor: "e", GPUs: 1}}); len(got) != 1 || got[0].ID != 1 {
		t.Fatalf("strict tier idle: dispatched %v, want job 1", got)
	}
}

// fairWorld is a random policy for the fairness properties.
type fairWorld struct {
	cfg     Config
	weight  map[string]int64 // tenant → weight
	tierOf  map[string]string
	tierW   map[string]int64
	tenants []string
	tiers   []string
}

func drawWorld(t *rapid.T, nTiers, nTenants int, maxW int32) fairWorld {
	w := fairWorld{weight: map[string]int64{}, tierOf: map[string]string{}, tierW: map[string]int64{}}
	for i := range nTiers {
		name := fmt.Sprintf("tier%d", i)
		tw := rapid.Int32Range(1, maxW).Draw(t, name+"/weight")
		w.cfg.Tiers = append(w.cfg.Tiers, TierConfig{Name: name, Weight: tw})
		w.tierW[name] = int64(tw)
		w.tiers = append(w.tiers, name)
	}
	for i := range nTenants {
		name := fmt.Sprintf("ten%d", i)
		tw := rapid.Int32Range(1, maxW).Draw(t, name+"/weight")
		tier := w.tiers[0]
		if i >= 2 {
			tier = rapid.SampledFrom(w.tiers).Draw(t, name+"/tier")
		}
		w.cfg.Tenants = append(w.cfg.Tenants, TenantConfig{Name: name, Tier: tier, Weight: tw})
		w.weight[name] = int64(tw)
		w.tierOf[name] = tier
		w.tenants = append(w.tenants, name)
	}
	return w
}

// TestBackloggedTenantsWeightedServiceWithinOneMaxCost checks the SFQ
// bound stated in the package documentation: over any stretch of dispatches
// during which tenants a and b of one tier are both backlogged,
// |W_a/w_a − W_b/w_b| ≤ C_a/w_a + C_b/w_b, whatever else arrives, whatever
// the priorities, and however many jobs each Place call hands out.
func TestBackloggedTenantsWeightedServiceWithinOneMaxCost(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) { backloggedTenantsBound(t, 8, smallCosts) })
}

// TestBackloggedTenantsBoundAtTheLimits is the same bound with weights up
// to the largest int32 and costs at and past MaxCost (charged as MaxCost),
// where products of costs and weights pass 64 bits.
func TestBackloggedTenantsBoundAtTheLimits(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) { backloggedTenantsBound(t, math.MaxInt32, edgeCosts) })
}

// TestBackloggedTiersBoundAtTheLimits is the tier-level bound at the limits.
func TestBackloggedTiersBoundAtTheLimits(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) { backloggedTiersBound(t, math.MaxInt32, edgeCosts) })
}

// A costDraw returns a job-cost generator for one flow (label names it).
type costDraw func(t *rapid.T, label string) func() int64

// smallCosts are costs in [1, C] for a drawn C of at most 60.
func smallCosts(t *rapid.T, label string) func() int64 {
	c := rapid.Int64Range(1, 60).Draw(t, label+"/maxcost")
	return func() int64 { return rapid.Int64Range(1, c).Draw(t, "cost") }
}

// edgeCosts are costs at the edges: 1, just under MaxCost, MaxCost, past
// it, and garbage (0 and negative count as 1).
func edgeCosts(t *rapid.T, label string) func() int64 {
	return func() int64 {
		return rapid.SampledFrom([]int64{1, 2, MaxCost - 1, MaxCost, MaxCost + 1, math.MaxInt64, 0, -5, math.MinInt64}).Draw(t, "cost")
	}
}

// gap is served[a]·w_b − served[b]·w_a, exactly: at the limits it needs
// more than 64 bits.
func gap(servedA, servedB, wa, wb int64) *big.Int {
	x := new(big.Int).Mul(big.NewInt(servedA), big.NewInt(wb))
	return x.Sub(x, new(big.Int).Mul(big.NewInt(servedB), big.NewInt(wa)))
}

// sfqBound is C_a·w_b + C_b·w_a.
func sfqBound(ca, cb, wa, wb int64) *big.Int {
	x := new(big.Int).Mul(big.NewInt(ca), big.NewInt(wb))
	return x.Add(x, new(big.Int).Mul(big.NewInt(cb), big.NewInt(wa)))
}

// epochGap tracks the spread of the weighted-service gap over a stretch of
// dispatches during which both flows are backlogged.
type epochGap struct {
	in     bool
	lo, hi *big.Int
}

// see records the gap d; it returns the spread hi − lo of this epoch.
func (e *epochGap) see(d *big.Int) *big.Int {
	if !e.in {
		e.in, e.lo, e.hi = true, d, d
	}
	if d.Cmp(e.lo) < 0 {
		e.lo = d
	}
	if d.Cmp(e.hi) > 0 {
		e.hi = d
	}
	return new(big.Int).Sub(e.hi, e.lo)
}

func backloggedTenantsBound(t *rapid.T, maxW int32, costs costDraw) {
	w := drawWorld(t, rapid.IntRange(1, 3).Draw(t, "tiers"), rapid.IntRange(2, 5).Draw(t, "tenants"), maxW)
	draw := map[string]func() int64{}
	for _, tn := range w.tenants {
		draw[tn] = costs(t, tn)
	}
	a, b := w.tenants[0], w.tenants[1]
	backloggedBound(t, w, "tenants", a, b, w.weight[a], w.weight[b], func(tn string) string { return tn },
		func(tn string) int64 { return draw[tn]() })
}

// TestBackloggedTiersWeightedServiceWithinOneMaxCost is the same bound one
// level up: two non-strict tiers both backlogged get GPU time in the ratio
// of their weights, within one maximum job cost per weight (reservation
// off: a reservation can move one job per tier ahead).
func TestBackloggedTiersWeightedServiceWithinOneMaxCost(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) { backloggedTiersBound(t, 8, smallCosts) })
}

func backloggedTiersBound(t *rapid.T, maxW int32, costs costDraw) {
	w := drawWorld(t, rapid.IntRange(2, 3).Draw(t, "tiers"), rapid.IntRange(3, 6).Draw(t, "tenants"), maxW)
	// Put tenant 1 in tier1 so that tiers 0 and 1 both have tenants.
	w.cfg.Tenants[1].Tier, w.tierOf[w.tenants[1]] = w.tiers[1], w.tiers[1]
	draw := costs(t, "all")
	A, B := w.tiers[0], w.tiers[1]
	backloggedBound(t, w, "tiers", A, B, w.tierW[A], w.tierW[B], func(tn string) string { return w.tierOf[tn] },
		func(string) int64 { return draw() })
}

// backloggedBound checks |W_a/w_a − W_b/w_b| ≤ C_a/w_a + C_b/w_b over every
// stretch of dispatches during which flows a and b (tenants or tiers: group
// maps a tenant to its flow) are both backlogged, under random arrivals of
// every tenant's jobs at random priorities.
func backloggedBound(t *rapid.T, w fairWorld, what, a, b string, wa, wb int64, group func(tenant string) string, cost func(tenant string) int64) {
	q := NewFairQueue(w.cfg)
	queued := map[string]int{}
	seen := map[string]int64{} // largest cost charged so far
	owner := map[uint64]string{}
	charged := map[uint64]int64{}
	slots := []Slot{{Executor: "e", GPUs: 8, Jobs: rapid.Int32Range(1, 4).Draw(t, "perplace")}}
	served := map[string]int64{}
	var epoch epochGap
	id := uint64(0)
	for step := range rapid.IntRange(10, 120).Draw(t, "steps") {
		now := int64(step)
		for _, tn := range w.tenants {
			for range rapid.IntRange(0, 2).Draw(t, "arrivals") {
				id++
				c := cost(tn)
				q.Enqueue(Job{ID: id, Seq: id, Tenant: tn, Model: "m", GPUs: 1, Cost: c, Ready: now,
					Priority: rapid.Int32Range(0, 9).Draw(t, "prio")})
				g := group(tn)
				owner[id], charged[id] = g, costOf(c)
				queued[g]++
				seen[g] = max(seen[g], costOf(c))
			}
		}
		q.Advance(now)
		for _, p := range q.Place(now, slots) {
			if !(queued[a] > 0 && queued[b] > 0) {
				epoch.in = false
			} else {
				epoch.see(gap(served[a], served[b], wa, wb))
			}
			q.Start(p.JobID, now)
			g := owner[p.JobID]
			served[g] += charged[p.JobID]
			queued[g]--
			if epoch.in {
				if spread, bound := epoch.see(gap(served[a], served[b], wa, wb)), sfqBound(seen[a], seen[b], wa, wb); spread.Cmp(bound) > 0 {
					t.Fatalf("step %d: %s %s (w=%d) and %s (w=%d) backlogged: weighted service gap %v exceeds C_a·w_b + C_b·w_a = %v (units 1/(w_a·w_b))",
						step, what, a, wa, b, wb, spread, bound)
				}
			}
			if queued[a] == 0 || queued[b] == 0 {
				epoch.in = false
			}
		}
	}
	mustInvariants(t, q)
}

// TestNoQueuedJobStarvesAcrossWeightedTiers: a job waits at most a bounded
// number of dispatches while capacity keeps freeing up, however the other
// tenants of any non-strict tier keep submitting, at any priority. With
// one slot freeing per step, cost in [1, C], tier T of weight w_T and the
// job's tenant t of weight w_t with n jobs up to and including it:
//
//	D_T = n · (1 + Σ_{u≠t in T} (⌊C·w_u/w_t⌋ + 1))   dispatches of tier T
//	B   = D_T · (1 + Σ_{X≠T} (⌊C·w_X/w_T⌋ + 1))      dispatches in all
//
// (between two dispatches of a backlogged flow, another flow u passes at
// most ⌊C·w_u/w⌋ + 1 times, since its tag rises by at least 1/w_u each
// time and may not pass the waiting flow's, which is at most C/w ahead of
// the virtual time). Priority is strict within a tenant only, so the
// tenant itself sends nothing more ahead of its job.
func TestNoQueuedJobStarvesAcrossWeightedTiers(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := drawWorld(t, rapid.IntRange(1, 3).Draw(t, "tiers"), rapid.IntRange(2, 5).Draw(t, "tenants"), 3)
		q := NewFairQueue(w.cfg)
		C := rapid.Int64Range(1, 4).Draw(t, "maxcost")
		target := w.tenants[0]
		T := w.tierOf[target]
		id := uint64(0)
		add := func(tn string, prio int32, now int64) uint64 {
			id++
			q.Enqueue(Job{ID: id, Seq: id, Tenant: tn, Model: "m", GPUs: 1, Ready: now, Priority: prio,
				Cost: rapid.Int64Range(1, C).Draw(t, "cost")})
			return id
		}
		jprio := rapid.Int32Range(0, 9).Draw(t, "jprio")
		n := int64(1)
		for range rapid.IntRange(0, 3).Draw(t, "ahead") {
			p := rapid.Int32Range(0, 9).Draw(t, "prio")
			add(target, p, 0)
			if p >= jprio {
				n++
			}
		}
		J := add(target, jprio, 0)
		var sumU, sumX int64
		for _, u := range w.tenants[1:] {
			if w.tierOf[u] == T {
				sumU += C*w.weight[u]/w.weight[target] + 1
			}
		}
		for _, X := range w.tiers {
			if X != T {
				sumX += C*w.tierW[X]/w.tierW[T] + 1
			}
		}
		bound := n * (1 + sumU) * (1 + sumX)
		others := w.tenants[1:]
		for step := int64(0); ; step++ {
			if step > bound {
				t.Fatalf("job %d of %s still queued after %d dispatches; bound %d", J, target, step, bound)
			}
			for range rapid.IntRange(1, 2).Draw(t, "arrivals") {
				add(rapid.SampledFrom(others).Draw(t, "who"), rapid.Int32Range(0, 9).Draw(t, "prio"), step)
			}
			q.Advance(step)
			p := q.Place(step, []Slot{{Executor: "e", GPUs: 1}})
			if len(p) != 1 {
				t.Fatalf("step %d: %d placements for one free slot", step, len(p))
			}
			q.Start(p[0].JobID, step)
			if p[0].JobID == J {
				return
			}
		}
	})
}

// TestRunningNeverExceedsMaxRunning: caps hold jobs back without
// rejecting them, under random arrivals, starts and stops.
func TestRunningNeverExceedsMaxRunning(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		tenants := []string{"a", "b", "c"}
		cfg := Config{}
		caps := map[string]int{}
		for _, tn := range tenants {
			c := rapid.IntRange(0, 3).Draw(t, tn+"/cap")
			caps[tn] = c
			cfg.Tenants = append(cfg.Tenants, TenantConfig{Name: tn, MaxRunning: int32(c)})
		}
		q := NewFairQueue(cfg)
		running := map[string][]uint64{}
		owner := map[uint64]string{}
		queued := 0
		id := uint64(0)
		for step := range rapid.IntRange(1, 60).Draw(t, "steps") {
			now := int64(step)
			for range rapid.IntRange(0, 3).Draw(t, "arrivals") {
				id++
				tn := rapid.SampledFrom(tenants).Draw(t, "tenant")
				owner[id] = tn
				q.Enqueue(Job{ID: id, Seq: id, Tenant: tn, Model: "m", GPUs: 1, Cost: 1, Ready: now})
				queued++
			}
			for _, tn := range tenants {
				if r := running[tn]; len(r) > 0 && rapid.Bool().Draw(t, "stop") {
					running[tn] = r[1:]
					q.Stopped(tn)
				}
			}
			q.Advance(now)
			placed := q.Place(now, []Slot{{Executor: "e", GPUs: 4, Jobs: rapid.Int32Range(1, 4).Draw(t, "places")}})
			for _, p := range placed {
				tn := owner[p.JobID]
				q.Start(p.JobID, now)
				running[tn] = append(running[tn], p.JobID)
				queued--
				if c := caps[tn]; c > 0 && len(running[tn]) > c {
					t.Fatalf("tenant %s runs %d jobs, cap %d", tn, len(running[tn]), c)
				}
			}
			if q.Len() != queued {
				t.Fatalf("queue holds %d, want %d: a capped job was dropped", q.Len(), queued)
			}
			mustInvariants(t, q)
		}
	})
}

func TestDelayedJobsWaitForTheirReadyTime(t *testing.T) {
	q := NewFairQueue(Config{})
	q.Advance(100)
	q.Enqueue(Job{ID: 1, Seq: 1, Tenant: "a", Model: "m", GPUs: 1, Ready: 500})
	q.Enqueue(Job{ID: 2, Seq: 2, Tenant: "a", Model: "m", GPUs: 1, Ready: 50})
	slots := []Slot{{Executor: "e", GPUs: 2, Jobs: 2}}
	if p := q.Place(100, slots); len(p) != 1 || p[0].JobID != 2 {
		t.Fatalf("Place at 100 = %v, want only job 2", p)
	}
	// Ready at Place's now although the queue's clock is behind.
	if p := q.Place(600, slots); len(p) != 2 {
		t.Fatalf("Place at 600 = %v, want both", p)
	}
	if pos, _ := q.Position(1); pos != 2 {
		t.Fatalf("delayed job at position %d, want 2 (after the ready one)", pos)
	}
	q.Advance(600)
	mustInvariants(t, q)
	if p := q.Place(600, slots); len(p) != 2 {
		t.Fatalf("after Advance: Place = %v, want both", p)
	}
}

// TestEqualTagsGoInArrivalOrder: tenants whose next jobs have the same
// virtual start (idle ones re-entering at the tier's virtual time) are
// served in the order they started waiting, not by name, and Position
// says so. Before, a tenant named "z" waited behind every later "a".
func TestEqualTagsGoInArrivalOrder(t *testing.T) {
	q := NewFairQueue(Config{})
	all := jobsByID{}
	add := func(id uint64, tenant string) {
		all[id] = Job{ID: id, Seq: id, Tenant: tenant, Model: "m", GPUs: 1, Cost: 1000}
		q.Enqueue(all[id])
		q.Advance(int64(id))
	}
	// One slot: job 1 runs; z, m and a queue in that order.
	add(1, "first")
	dispatch(t, q, all, 1, []Slot{{Executor: "e", GPUs: 1}})
	add(2, "z")
	add(3, "m")
	add(4, "a")
	for id, want := range map[uint64]int{2: 1, 3: 2, 4: 3} {
		if p, _ := q.Position(id); p != want {
			t.Errorf("Position(%d) = %d, want %d (arrival order)", id, p, want)
		}
	}
	// z is served; "b" arrives at the virtual time m and a wait at: it
	// goes after them.
	var ran []string
	ran = append(ran, dispatch(t, q, all, 5, []Slot{{Executor: "e", GPUs: 1}})[0].Tenant)
	add(6, "b")
	for q.Len() > 0 {
		ran = append(ran, dispatch(t, q, all, 7, []Slot{{Executor: "e", GPUs: 1}})[0].Tenant)
	}
	if fmt.Sprint(ran) != "[z m a b]" {
		t.Fatalf("served %v, want [z m a b] (arrival order among equal tags)", ran)
	}
	// Several slots in one Place: the same order.
	q = NewFairQueue(Config{})
	for i, ten := range []string{"z", "m", "a"} {
		add(uint64(10+i), ten)
	}
	var got []string
	for _, j := range dispatch(t, q, all, 20, []Slot{{Executor: "e1", GPUs: 1}, {Executor: "e2", GPUs: 1}, {Executor: "e3", GPUs: 1}}) {
		got = append(got, j.Tenant)
	}
	if fmt.Sprint(got) != "[z m a]" {
		t.Fatalf("one Place of three served %v, want [z m a]", got)
	}
	mustInvariants(t, q)
}
