package scheduler

import (
	"math/rand/v2"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// TestBTreesAgreeWithSortedSlices drives the queue through thousands of
// arrivals, removals, starts and promotions, enough for the B-trees to be
// three levels deep and to split, borrow and merge at every level, and
// checks their structure (checkInvariants), that each tree's order is
// sorted, and each job's rank against its index in that order.
func TestBTreesAgreeWithSortedSlices(t *testing.T) {
	deepest, most := 0.0, 0
	rapid.Check(t, func(t *rapid.T) {
		// rapid picks the shape of the run; a generator seeded by it makes
		// the thousands of operations (rapid's own draws stay small).
		rng := rand.New(rand.NewPCG(rapid.Uint64().Draw(t, "seed"), 1))
		grow := rapid.IntRange(0, 4000).Draw(t, "grow")
		mixed := rapid.IntRange(0, 4000).Draw(t, "mixed")
		removePct := rapid.IntRange(10, 90).Draw(t, "removePct")
		delayedPct := rapid.IntRange(0, 50).Draw(t, "delayedPct")
		tenants := rapid.IntRange(1, 3).Draw(t, "tenants")
		q := NewFairQueue(Config{})
		var ids []uint64
		now := int64(0)
		q.Advance(now)
		next := uint64(1)
		enqueue := func() {
			ready := now
			if rng.IntN(100) < delayedPct {
				ready = now + 1 + rng.Int64N(50)
			}
			q.Enqueue(Job{
				ID: next, Seq: next, Tenant: string(rune('a' + int(next)%tenants)), Model: "m",
				Priority: rng.Int32N(10), Cost: 1 + rng.Int64N(5000), GPUs: 1, Ready: ready,
			})
			ids = append(ids, next)
			next++
		}
		remove := func(i int) {
			k := rng.IntN(len(ids))
			if rng.IntN(4) == 0 {
				k = 0 // the oldest: dispatch order takes from the front
			}
			id := ids[k]
			ids = slices.Delete(ids, k, k+1)
			ok := q.Remove(id)
			if rng.IntN(2) == 0 {
				ok = q.Start(id, now) || ok
			}
			if !ok {
				t.Fatalf("op %d: job %d not found", i, id)
			}
		}
		check := func() {
			mustInvariants(t, q)
			checkRanks(t, q)
			deepest, most = max(deepest, q.meanTreeDepth()), max(most, q.Len())
		}
		ops := grow + mixed + len(ids)
		for i := 0; i < ops || len(ids) > 0; i++ {
			switch {
			case i < grow:
				enqueue()
			case i < grow+mixed && rng.IntN(100) >= removePct:
				if rng.IntN(10) == 0 {
					now += 1 + rng.Int64N(20)
					q.Advance(now)
				} else {
					enqueue()
				}
			case len(ids) > 0:
				remove(i)
			}
			if i%397 == 0 {
				check()
			}
		}
		check()
	})
	t.Logf("deepest queue-order tree: %.0f levels; most jobs queued: %d", deepest, most)
	if deepest < 3 {
		t.Errorf("no run grew a tree three levels deep (deepest %.0f): the test misses inner splits and merges", deepest)
	}
}

// checkRanks compares rank, countWhile and seek with a walk of each
// tree's leaves.
func checkRanks(t *rapid.T, q *FairQueue) {
	check := func(o int, root int32) {
		var order []int32
		q.bt.ascend(root, func(x int32) bool { order = append(order, x); return true })
		if len(order) != q.bt.size(root) {
			t.Fatalf("ascend saw %d jobs, size %d", len(order), q.bt.size(root))
		}
		if !slices.IsSortedFunc(order, func(a, b int32) int {
			if q.order(o).less(a, b) {
				return -1
			}
			return 1
		}) {
			t.Fatalf("ascend out of order")
		}
		for i, x := range order {
			if r := q.bt.rank(q.jobs, x); r != i {
				t.Fatalf("rank of job %d is %d, want %d", q.jobs[x].id, r, i)
			}
		}
		for _, cut := range []int{0, len(order) / 3, len(order) / 2, len(order)} {
			pred := func(x int32) bool { return slices.Index(order, x) >= cut }
			c := q.bt.seek(root, pred)
			if cut == len(order) {
				if c.leaf != 0 {
					t.Fatalf("seek past the end found job %d", q.jobs[q.bt.job(c)].id)
				}
				continue
			}
			if c.leaf == 0 || q.bt.job(c) != order[cut] {
				t.Fatalf("seek to %d of %d missed", cut, len(order))
			}
			if cut > 0 {
				limit := q.order(o).pack(order[cut])
				want := 0
				for _, x := range order {
					if q.order(o).pack(x) < limit {
						want++
					}
				}
				if got := q.bt.countWhile(root, func(k uint64) bool { return k < limit }); got != want {
					t.Fatalf("count below key: %d, want %d", got, want)
				}
			}
		}
	}
	for mi := range q.models {
		for _, tt := range q.models[mi].trees {
			check(ordPos, tt.root)
		}
	}
	check(ordReady, q.delayed)
}
