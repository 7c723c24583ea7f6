package scheduler

import (
	"fmt"
	"testing"

	"pgregory.net/rapid"
)

// randomQueue fills a queue with random jobs over random tiers (one maybe
// strict), tenants, models, priorities and Ready times, with some jobs
// started and removed on the way.
func randomQueue(t *rapid.T) (*FairQueue, []uint64) {
	w := drawWorld(t, rapid.IntRange(1, 3).Draw(t, "tiers"), rapid.IntRange(1, 5).Draw(t, "tenants"), 5)
	w.cfg.Tiers[0].Strict = rapid.Bool().Draw(t, "strict")
	q := NewFairQueue(w.cfg)
	var ids []uint64
	for i := uint64(1); i <= uint64(rapid.IntRange(0, 60).Draw(t, "jobs")); i++ {
		q.Enqueue(Job{ID: i, Seq: i, Tenant: rapid.SampledFrom(w.tenants).Draw(t, "tenant"),
			Model: rapid.SampledFrom([]string{"m", "n"}).Draw(t, "model"), GPUs: 1,
			Cost: rapid.Int64Range(0, 30).Draw(t, "cost"), Priority: rapid.Int32Range(0, 9).Draw(t, "prio"),
			Ready: rapid.Int64Range(0, 20).Draw(t, "ready")})
		ids = append(ids, i)
		switch rapid.IntRange(0, 5).Draw(t, "op") {
		case 0:
			q.Advance(rapid.Int64Range(0, 20).Draw(t, "now"))
		case 1:
			if p := q.Place(20, []Slot{{Executor: "e", GPUs: 1}}); len(p) > 0 {
				q.Start(p[0].JobID, rapid.Int64Range(0, 10).Draw(t, "now"))
			}
		case 2:
			q.Remove(rapid.SampledFrom(ids).Draw(t, "remove"))
		}
	}
	return q, ids
}

// TestPositionIsRankAmongSameModelJobsInQueueOrder: Position(id) is 1 +
// the number of queued jobs of the same model before it in Ascend's order,
// which puts strict tiers first and delayed jobs last.
func TestPositionIsRankAmongSameModelJobsInQueueOrder(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		q, ids := randomQueue(t)
		mustInvariants(t, q)
		rank := map[string]int{}
		want := map[uint64]int{}
		seenDelayed := false
		n := 0
		q.Ascend(func(j Job) bool {
			rank[j.Model]++
			want[j.ID] = rank[j.Model]
			x := q.mustFind(j.ID)
			if !q.jobs[x].promoted {
				seenDelayed = true
			} else if seenDelayed {
				t.Fatalf("ready job %d after a delayed one in queue order", j.ID)
			}
			n++
			return true
		})
		if n != q.Len() {
			t.Fatalf("Ascend visited %d of %d", n, q.Len())
		}
		for _, id := range ids {
			p, ok := q.Position(id)
			if ok != (want[id] > 0) || p != want[id] {
				t.Fatalf("Position(%d) = %d, %v; rank in queue order %d", id, p, ok, want[id])
			}
		}
	})
}

// TestPagesConcatenateToQueueOrder: paging through with any page size
// (through the text token) visits exactly what Ascend visits.
func TestPagesConcatenateToQueueOrder(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		q, _ := randomQueue(t)
		var all []uint64
		q.Ascend(func(j Job) bool { all = append(all, j.ID); return true })
		limit := rapid.IntRange(1, 7).Draw(t, "limit")
		var got []uint64
		var cur Cursor
		for i := 0; ; i++ {
			page, next, more := q.Page(cur, limit)
			for _, j := range page {
				got = append(got, j.ID)
			}
			if !more {
				break
			}
			tok, _ := next.MarshalText()
			cur = Cursor{}
			if err := cur.UnmarshalText(tok); err != nil {
				t.Fatal(err)
			}
			if i > len(all) {
				t.Fatal("paging does not end")
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(all) {
			t.Fatalf("pages %v, Ascend %v", got, all)
		}
	})
}

// TestQueueOrderIsDispatchOrderWithinATier: with every job ready and
// fitting, one tier, no arrivals and each tenant's jobs queued in its own
// priority order, queue order is exactly the order Place-and-Start runs
// them in, so Position is exact there.
func TestQueueOrderIsDispatchOrderWithinATier(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := drawWorld(t, 1, rapid.IntRange(1, 5).Draw(t, "tenants"), 7)
		q := NewFairQueue(w.cfg)
		id := uint64(0)
		for _, tn := range w.tenants {
			prio := int32(9)
			for range rapid.IntRange(0, 12).Draw(t, "jobs") {
				id++
				prio = rapid.Int32Range(0, prio).Draw(t, "prio")
				q.Enqueue(Job{ID: id, Seq: id, Tenant: tn, Model: "m", GPUs: 1, Priority: prio, Cost: rapid.Int64Range(1, 50).Draw(t, "cost")})
			}
		}
		q.Advance(0)
		var order []uint64
		q.Ascend(func(j Job) bool { order = append(order, j.ID); return true })
		var ran []uint64
		for q.Len() > 0 {
			p := q.Place(0, []Slot{{Executor: "e", GPUs: 1}})
			if len(p) != 1 {
				t.Fatal("nothing placed")
			}
			if pos, _ := q.Position(p[0].JobID); pos != 1 {
				t.Fatalf("dispatched job %d was at position %d", p[0].JobID, pos)
			}
			ran = append(ran, p[0].JobID)
			q.Start(p[0].JobID, 0)
		}
		if fmt.Sprint(ran) != fmt.Sprint(order) {
			t.Fatalf("dispatch order %v, queue order %v", ran, order)
		}
	})
}

func TestPositionInterleavesTenantsByWeight(t *testing.T) {
	q := NewFairQueue(Config{Tenants: []TenantConfig{{Name: "a", Weight: 2}, {Name: "b", Weight: 1}}})
	for i := uint64(1); i <= 6; i++ {
		q.Enqueue(Job{ID: i, Seq: i, Tenant: "a", Model: "m", Cost: 10})
		q.Enqueue(Job{ID: 100 + i, Seq: 100 + i, Tenant: "b", Model: "m", Cost: 10})
	}
	q.Enqueue(Job{ID: 999, Seq: 999, Tenant: "b", Model: "other", Cost: 10})
	q.Advance(0)
	// a's k-th job starts at virtual 5(k-1), b's at 10(k-1): a, b, a, a, b, a, a, b…
	for id, want := range map[uint64]int{1: 1, 101: 2, 2: 3, 3: 4, 102: 5, 4: 6, 999: 1} {
		if p, _ := q.Position(id); p != want {
			t.Errorf("Position(%d) = %d, want %d", id, p, want)
		}
	}
}

func TestCursorTokenRejectsGarbage(t *testing.T) {
	var c Cursor
	for _, tok := range []string{"!!", "AQ", "AgE"} {
		if err := c.UnmarshalText([]byte(tok)); err == nil {
			t.Errorf("token %q accepted", tok)
		}
	}
	if err := c.UnmarshalText(nil); err != nil || c != (Cursor{}) {
		t.Error("empty token is not the start")
	}
}

// AheadOf counts, by model, the queued jobs before a job in queue order:
// one tenant's jobs go in submission order, whatever their model.
func TestAheadOfCountsEveryModelInQueueOrder(t *testing.T) {
	q := NewFairQueue(Config{})
	q.Advance(0)
	for i, m := range []string{"m", "n", "m", "n", "n"} {
		q.Enqueue(Job{ID: uint64(i + 1), Seq: uint64(i + 1), Tenant: "a", Model: m, GPUs: 1, Cost: 1})
	}
	got := map[string]int{}
	if !q.AheadOf(4, func(model string, n int) { got[model] = n }) {
		t.Fatal("job 4 is not queued")
	}
	if got["m"] != 2 || got["n"] != 1 {
		t.Fatalf("ahead of job 4: %v, want 2 of m and 1 of n", got)
	}
	if q.AheadOf(99, func(string, int) {}) {
		t.Fatal("a job not queued has jobs ahead")
	}
}
