package scheduler

import (
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// TestJobIndexProperties: the ID table finds exactly the jobs filed in it,
// through growth and removals that shift runs back.
func TestJobIndexProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		js := []qjob{{}} // arena index 0 is "empty"
		var ix jobIndex
		filed := map[uint64]int32{}
		t.Repeat(map[string]func(*rapid.T){
			"add": func(t *rapid.T) {
				// Few distinct IDs, so that probes collide.
				id := rapid.Uint64Range(1, 200).Draw(t, "id") * rapid.SampledFrom([]uint64{1, 1 << 32}).Draw(t, "spread")
				if _, ok := filed[id]; ok {
					t.Skip("filed already")
				}
				js = append(js, qjob{id: id})
				x := int32(len(js) - 1)
				ix.add(js, x)
				filed[id] = x
			},
			"remove": func(t *rapid.T) {
				if len(filed) == 0 {
					t.Skip("empty")
				}
				ids := slices.Sorted(func(yield func(uint64) bool) {
					for id := range filed {
						if !yield(id) {
							return
						}
					}
				})
				id := rapid.SampledFrom(ids).Draw(t, "id")
				ix.remove(js, filed[id])
				delete(filed, id)
			},
			"": func(t *rapid.T) {
				for id, x := range filed {
					if y, ok := ix.find(js, id); !ok || y != x {
						t.Fatalf("find(%d) = %d, %v; want %d", id, y, ok, x)
					}
				}
				if _, ok := ix.find(js, 1<<40+7); ok {
					t.Fatal("found an ID never filed")
				}
				n := 0
				ix.each(func(int32) { n++ })
				if n != len(filed) || ix.n != n {
					t.Fatalf("the table holds %d (counts %d), want %d", n, ix.n, len(filed))
				}
			},
		})
	})
}

// TestClassQueueProperties: a class queue walks its jobs, both ways, in
// the flow order (priority, then Seq, then ID), whatever the order they
// came in and left, its head is the first, and firstReady skips the jobs
// not ready yet.
func TestClassQueueProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		js := []qjob{{}}
		var c classQueue
		var in []int32
		t.Repeat(map[string]func(*rapid.T){
			"push": func(t *rapid.T) {
				js = append(js, qjob{id: uint64(len(js)), seq: rapid.Uint64Range(0, 30).Draw(t, "seq"),
					prio: rapid.Int32Range(-1, 10).Draw(t, "prio"), ready: rapid.Int64Range(0, 3).Draw(t, "ready")})
				x := int32(len(js) - 1)
				c.push(js, x)
				in = append(in, x)
			},
			"remove": func(t *rapid.T) {
				if len(in) == 0 {
					t.Skip("empty")
				}
				i := rapid.IntRange(0, len(in)-1).Draw(t, "i")
				c.remove(js, in[i])
				in = slices.Delete(in, i, i+1)
			},
			"": func(t *rapid.T) {
				want := slices.Clone(in)
				slices.SortFunc(want, func(a, b int32) int {
					if flowBefore(&js[a], &js[b]) {
						return -1
					}
					return 1
				})
				var got []int32
				for x := c.first(); x != 0; x = c.next(js, x) {
					got = append(got, x)
				}
				if !slices.Equal(got, want) || c.n != int32(len(want)) {
					t.Fatalf("walked %v (n %d), want %v", got, c.n, want)
				}
				if (len(want) == 0) != (c.head == 0) || len(want) > 0 && c.head != want[0] {
					t.Fatalf("head %d, want the first of %v", c.head, want)
				}
				for i, x := range want {
					if p := c.prev(js, x); (i == 0 && p != 0) || (i > 0 && p != want[i-1]) {
						t.Fatalf("prev(%d) = %d in %v", x, p, want)
					}
				}
				now := rapid.Int64Range(0, 3).Draw(t, "now")
				first := int32(0)
				for _, x := range want[:min(len(want), readyScan)] {
					if js[x].ready <= now {
						first = x
						break
					}
				}
				if got := c.firstReady(js, 0, now); got != first {
					t.Fatalf("firstReady(%d) = %d, want %d", now, got, first)
				}
			},
		})
	})
}
