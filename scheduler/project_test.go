package scheduler

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// TestDispatchAheadIsDispatchOrder: with every job ready and fitting, no
// caps and nothing arriving, DispatchAhead(id) is exactly the jobs that
// Place-and-Start, one slot at a time, runs before id, across tiers and
// bands, after a random history of arrivals and dispatches.
func TestDispatchAheadIsDispatchOrder(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := drawWorld(t, rapid.IntRange(1, 3).Draw(t, "tiers"), rapid.IntRange(1, 6).Draw(t, "tenants"), 7)
		w.cfg.Tiers[0].Strict = rapid.Bool().Draw(t, "strict")
		q := NewFairQueue(w.cfg)
		prio := map[string]int32{} // each tenant's jobs in its own priority order
		modelOf := map[uint64]string{}
		id := uint64(0)
		add := func(n int) {
			for range n {
				id++
				tn := rapid.SampledFrom(w.tenants).Draw(t, "tenant")
				if _, ok := prio[tn]; !ok {
					prio[tn] = 9
				}
				prio[tn] = rapid.Int32Range(0, prio[tn]).Draw(t, "prio")
				modelOf[id] = rapid.SampledFrom([]string{"m", "n", "o"}).Draw(t, "model")
				q.Enqueue(Job{ID: id, Seq: id, Tenant: tn, Model: modelOf[id],
					GPUs: 1, Priority: prio[tn], Cost: rapid.Int64Range(1, 5000).Draw(t, "cost")})
			}
			q.Advance(0)
		}
		run := func() uint64 {
			p := q.Place(0, []Slot{{Executor: "e", GPUs: 1}})
			if len(p) != 1 {
				t.Fatal("nothing placed")
			}
			q.Start(p[0].JobID, 0)
			return p[0].JobID
		}
		for range rapid.IntRange(0, 3).Draw(t, "rounds") {
			add(rapid.IntRange(1, 8).Draw(t, "arrivals"))
			for range rapid.IntRange(0, q.Len()).Draw(t, "dispatches") {
				run()
			}
		}
		add(rapid.IntRange(1, 12).Draw(t, "arrivals"))
		ahead := map[uint64][]uint64{}
		q.Ascend(func(j Job) bool {
			var a []uint64
			reached, ok := q.DispatchAhead(j.ID, 1<<30, func(x uint64) { a = append(a, x) })
			if !reached || !ok {
				t.Fatalf("DispatchAhead(%d) = %v, %v", j.ID, reached, ok)
			}
			ahead[j.ID] = a
			return true
		})
		// DispatchOrder is the one order whose prefixes those are, with
		// the models ranked as CountAhead names them; a limit cuts it
		// short, and so does the last of the jobs it is told to come to.
		var order []uint64
		rank := map[string]int{}
		if !q.DispatchOrder(1<<30, nil, func(x uint64, m int) {
			order = append(order, x)
			rank[modelOf[x]] = m
		}) || len(order) != len(ahead) {
			t.Fatalf("DispatchOrder: %v of %d jobs", order, len(ahead))
		}
		for k, x := range order {
			if !slices.Equal(ahead[x], order[:k]) {
				t.Fatalf("job %d: %v ahead, DispatchOrder has %v before it", x, ahead[x], order[:k])
			}
			var named []string
			q.CountAhead(x, 1<<30, func(m string, _ int) { named = append(named, m) })
			if !slices.IsSortedFunc(named, func(a, b string) int { return rank[a] - rank[b] }) {
				t.Fatalf("job %d: CountAhead names %v, DispatchOrder ranks them %v", x, named, rank)
			}
		}
		limit := rapid.IntRange(0, 3).Draw(t, "limit")
		var cut []uint64
		if q.DispatchOrder(limit, nil, func(x uint64, _ int) { cut = append(cut, x) }) != (len(order) <= limit) || !slices.Equal(cut, order[:min(limit, len(order))]) {
			t.Fatalf("DispatchOrder(%d): %v of %v", limit, cut, order)
		}
		until := rapid.SampledFrom(order).Draw(t, "until")
		cut = nil
		q.DispatchOrder(1<<30, []uint64{until, 1 << 40}, func(x uint64, _ int) { cut = append(cut, x) })
		if k := slices.Index(order, until); !slices.Equal(cut, order[:k+1]) {
			t.Fatalf("DispatchOrder until %d: %v of %v", until, cut, order)
		}
		var ran []uint64
		for q.Len() > 0 {
			x := run()
			if a := ahead[x]; !slices.Equal(a, ran) {
				t.Fatalf("job %d: projected %v ahead, %v ran before it", x, a, ran)
			}
			ran = append(ran, x)
		}
		// A limit stops it early.
		q = NewFairQueue(w.cfg)
		add(6)
		q.Ascend(func(j Job) bool {
			all, n := 0, 0
			q.DispatchAhead(j.ID, 1<<30, func(uint64) { all++ })
			reached, ok := q.DispatchAhead(j.ID, limit, func(uint64) { n++ })
			if !ok || n != min(all, limit) || reached != (all <= limit) {
				t.Fatalf("limit %d: %d of %d called, reached %v ok %v", limit, n, all, reached, ok)
			}
			return true
		})
	})
}

// TestDispatchAheadCountsAWeightedTiersShare: a pro job (weight 4) behind
// two pro jobs has a fifth as many of free's (weight 1) jobs ahead as it
// has its own, not free's whole line, though all of free's tenants came
// back from idle at the tier's virtual time. A delayed job is not
// projected.
func TestDispatchAheadCountsAWeightedTiersShare(t *testing.T) {
	q := NewFairQueue(Config{
		Tiers:   []TierConfig{{Name: "pro", Weight: 4}, {Name: "free", Weight: 1}},
		Tenants: []TenantConfig{{Name: "p", Tier: "pro"}},
	})
	id := uint64(0)
	for i := range 10 {
		id++
		q.Enqueue(Job{ID: id, Seq: id, Tenant: fmt.Sprintf("f%d", i), Tier: "free", Model: "m", GPUs: 1, Cost: 1000})
	}
	for range 3 {
		id++
		q.Enqueue(Job{ID: id, Seq: id, Tenant: "p", Model: "m", GPUs: 1, Cost: 1000})
	}
	q.Enqueue(Job{ID: 99, Seq: 99, Tenant: "p", Model: "m", GPUs: 1, Cost: 1000, Ready: 50})
	q.Advance(0)
	tiers := map[bool]int{}
	if reached, ok := q.DispatchAhead(13, 100, func(x uint64) { tiers[x <= 10]++ }); !reached || !ok {
		t.Fatal("not reached")
	}
	// Pro's tags 0, 1/4, 2/4, 3/4 for its four jobs; free's 0 then 1: one
	// free job (the tie at 0 goes by tier name) before pro's third.
	if tiers[true] != 1 || tiers[false] != 2 {
		t.Fatalf("free %d and pro %d ahead of pro's third job, want 1 and 2", tiers[true], tiers[false])
	}
	var counted []string
	if reached, _ := q.CountAhead(13, 100, func(m string, n int) { counted = append(counted, fmt.Sprintf("%s:%d", m, n)) }); !reached || fmt.Sprint(counted) != "[m:3]" {
		t.Fatalf("CountAhead: %v (reached %v), want [m:3]", counted, reached)
	}
	if reached, ok := q.CountAhead(13, 2, func(string, int) { t.Fatal("called past the limit") }); reached || !ok {
		t.Fatalf("CountAhead past the limit: reached %v, ok %v", reached, ok)
	}
	if p, _ := q.Position(13); p <= 3 {
		t.Fatalf("queue order has pro's third job at %d: the test no longer shows the difference", p)
	}
	if _, ok := q.DispatchAhead(99, 100, func(uint64) {}); ok {
		t.Fatal("a delayed job was projected")
	}
}

// TestBehindIsTheLeadPastTheTiersVirtualTime: a tenant's third job of
// cost 1,000 is 2,000 past the tier's virtual time, with two tenants
// backlogged; a newcomer's job is at it. FairShareWait turns the lead into
// time: 2,000 milli-GPU-seconds for each of 2 weights on 1 slot is 4 s.
func TestBehindIsTheLeadPastTheTiersVirtualTime(t *testing.T) {
	q := NewFairQueue(Config{})
	for i := uint64(1); i <= 3; i++ {
		q.Enqueue(Job{ID: i, Seq: i, Tenant: "a", Model: "m", GPUs: 1, Cost: 1000})
	}
	q.Enqueue(Job{ID: 4, Seq: 4, Tenant: "b", Model: "m", GPUs: 1, Cost: 1000})
	q.Enqueue(Job{ID: 5, Seq: 5, Tenant: "c", Model: "m", GPUs: 1, Cost: 1000, Ready: 10})
	q.Advance(0)
	if lead, backlog, weight, ok := q.Behind(3); !ok || lead != 2000 || backlog != 2 || weight != 1 {
		t.Fatalf("Behind(3) = %d, %d, %d, %v; want 2000, 2, 1, true", lead, backlog, weight, ok)
	}
	if lead, _, _, ok := q.Behind(4); !ok || lead != 0 {
		t.Fatalf("Behind(4) = %d, %v; want 0 (a newcomer is at the virtual time)", lead, ok)
	}
	if _, _, _, ok := q.Behind(5); ok {
		t.Fatal("a delayed job is behind nothing yet")
	}
	if w := FairShareWait(2000, 2, 1); w != 4*time.Second {
		t.Fatalf("FairShareWait = %v, want 4s", w)
	}
	if w := FairShareWait(0, 2, 1); w != 0 {
		t.Fatalf("FairShareWait at the virtual time = %v, want 0", w)
	}
	if w := FairShareWait(math.MaxInt64, math.MaxInt64, 0.5); w != math.MaxInt64 {
		t.Fatalf("FairShareWait past the largest Duration = %v, want it saturated", w)
	}
}
