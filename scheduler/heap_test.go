package scheduler

import (
	"fmt"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// TestMinHeapProperties: a tier's flow heap, under random pushes, pops,
// removals at a flow's kept place and tag changes, pops in tag order (ties
// by name), and each flow's hix is where it is.
func TestMinHeapProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		// Flows 0..63 by tag (the key), then name (f00, f01, ...: index order).
		q := &FairQueue{records: records{flows: make([]flow, 64)}}
		for i := range q.flows {
			q.flows[i].name = fmt.Sprintf("f%02d", i)
		}
		key := map[int32]int{} // the members and their keys
		setKey := func(x int32, k int) { key[x], q.flows[x].tag = k, vtime{q: int64(k), d: 1} }
		less := func(a, b int32) bool {
			if key[a] != key[b] {
				return key[a] < key[b]
			}
			return a < b
		}
		o := q.flowOrder()
		var h minHeap
		next := int32(0)
		check := func() {
			if len(h) != len(key) {
				t.Fatalf("heap holds %d, want %d", len(h), len(key))
			}
			for i, x := range h {
				if q.flows[x].hix != int32(i) {
					t.Fatalf("flow %d is at %d, its hix says %d", x, i, q.flows[x].hix)
				}
				if i > 0 && less(x, h[(i-1)/2]) {
					t.Fatalf("flow %d at %d is less than its parent", x, i)
				}
			}
		}
		t.Repeat(map[string]func(*rapid.T){
			"push": func(t *rapid.T) {
				if next == int32(len(q.flows)) {
					t.Skip("no flow left")
				}
				setKey(next, rapid.IntRange(0, 20).Draw(t, "key"))
				h.push(next, o)
				next++
				check()
			},
			"pop": func(t *rapid.T) {
				if len(h) == 0 {
					t.Skip("empty")
				}
				want := slices.MinFunc(slices.Collect(func(yield func(int32) bool) {
					for x := range key {
						if !yield(x) {
							return
						}
					}
				}), func(a, b int32) int {
					if less(a, b) {
						return -1
					}
					return 1
				})
				if got := h.pop(o); got != want {
					t.Fatalf("popped %d, want %d", got, want)
				}
				delete(key, want)
				check()
			},
			"remove": func(t *rapid.T) {
				if len(h) == 0 {
					t.Skip("empty")
				}
				x := h[rapid.IntRange(0, len(h)-1).Draw(t, "at")]
				h.remove(q.flows[x].hix, o)
				delete(key, x)
				check()
			},
			"rekey": func(t *rapid.T) {
				if len(h) == 0 {
					t.Skip("empty")
				}
				x := h[rapid.IntRange(0, len(h)-1).Draw(t, "at")]
				setKey(x, rapid.IntRange(0, 20).Draw(t, "key"))
				h.fix(q.flows[x].hix, o)
				check()
			},
			"heapify": func(t *rapid.T) {
				for _, x := range h {
					setKey(x, rapid.IntRange(0, 20).Draw(t, "key"))
				}
				h.heapify(o)
				check()
			},
		})
	})
}
