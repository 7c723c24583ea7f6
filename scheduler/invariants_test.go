package scheduler

import (
	"fmt"
	"testing"

	"pgregory.net/rapid"
)

// checkInvariants verifies the queue's internal bookkeeping; tests call it
// after every operation, so a broken tree or counter shows at once.
func checkInvariants(q *FairQueue) error {
	seen := 0
	ready := make(map[int32]int32)
	cost := make(map[int32][10]int64)
	filed := 0
	for _, x := range q.byID.slots {
		if x != 0 {
			filed++
		}
	}
	if filed != q.byID.n || filed != q.n || 2*filed > len(q.byID.slots) {
		return fmt.Errorf("the ID index files %d jobs (counts %d) in %d slots, n = %d", filed, q.byID.n, len(q.byID.slots), q.n)
	}
	var ierr error
	q.byID.each(func(x int32) {
		if y, ok := q.byID.find(q.jobs, q.jobs[x].id); !ok || y != x {
			ierr = fmt.Errorf("job %d at %d is found at %d (%v)", q.jobs[x].id, x, y, ok)
		}
	})
	if ierr != nil {
		return ierr
	}
	for _, x := range q.byID.slots {
		if x == 0 {
			continue
		}
		j := &q.jobs[x]
		id := j.id
		if j.promoted != (j.ready <= q.watermark) {
			return fmt.Errorf("job %d: promoted=%v but ready %d, clock %d", id, j.promoted, j.ready, q.watermark)
		}
		if j.promoted {
			ready[j.flow]++
			c := cost[j.flow]
			c[prioOf(j.prio)] += costOf(j.cost)
			cost[j.flow] = c
		}
		seen++
	}
	if seen != q.n {
		return fmt.Errorf("n = %d, the ID index has %d", q.n, seen)
	}
	check := func(o int, root int32, what string) (int, error) {
		n := 0
		var prev int32
		var err error
		var walk func(x int32) int32
		walk = func(x int32) int32 {
			if x == 0 || err != nil {
				return 0
			}
			nd := &q.tr.nodes[x]
			l, r := nd.l, nd.r
			if nd.key != q.order(o).pack(x) || nd.hp != treapPrio(q.jobs[x].id) {
				err = fmt.Errorf("%s: stale node key at %d", what, q.jobs[x].id)
			}
			for _, c := range []int32{l, r} {
				if c != 0 && q.tr.above(q.jobs, c, x) {
					err = fmt.Errorf("%s: heap order broken at %d", what, q.jobs[x].id)
				}
				if c != 0 && q.tr.nodes[c].p != x {
					err = fmt.Errorf("%s: %d's parent is %d, want %d", what, c, q.tr.nodes[c].p, x)
				}
			}
			ls := walk(l)
			if prev != 0 && (!q.tr.less(q.order(o), prev, x) || !q.order(o).less(prev, x)) {
				err = fmt.Errorf("%s: order broken at %d", what, q.jobs[x].id)
			}
			prev = x
			n++
			size := ls + walk(r) + 1
			if nd.size != size {
				err = fmt.Errorf("%s: size wrong at %d", what, q.jobs[x].id)
			}
			return size
		}
		if root != 0 && q.tr.nodes[root].p != 0 {
			return 0, fmt.Errorf("%s: the root %d has parent %d", what, root, q.tr.nodes[root].p)
		}
		walk(root)
		return n, err
	}
	total := 0
	for fi := range q.flows {
		f := &q.flows[fi]
		if f.ready != ready[int32(fi)] || f.costAt != cost[int32(fi)] {
			return fmt.Errorf("flow %s: ready %d/%d or cost sums wrong", f.name, f.ready, ready[int32(fi)])
		}
		active := f.ready > 0 && q.tenants[f.tenant].underCap()
		if active != (f.hix >= 0) {
			return fmt.Errorf("flow %s: active=%v, heap index %d", f.name, active, f.hix)
		}
		var keys []int32
		if len(f.cids) != len(f.classes) {
			return fmt.Errorf("flow %s: %d class ids for %d queues", f.name, len(f.cids), len(f.classes))
		}
		for ci := range f.classes {
			c := &f.classes[ci]
			if f.cids[ci] != c.class {
				return fmt.Errorf("flow %s: class id %d for queue of class %d", f.name, f.cids[ci], c.class)
			}
			var list []int32
			for x := c.first(); x != 0; x = c.next(q.jobs, x) {
				list = append(list, x)
				if len(list) > q.n {
					return fmt.Errorf("flow %s: class queue loops", f.name)
				}
			}
			if len(list) == 0 || int(c.n) != len(list) {
				return fmt.Errorf("flow %s: class queue holds %d, counts %d", f.name, len(list), c.n)
			}
			for i, x := range list {
				if q.jobs[x].class != c.class || !q.jobs[x].promoted {
					return fmt.Errorf("flow %s: job %d in the wrong queue", f.name, q.jobs[x].id)
				}
				if i > 0 && !q.order(ordFlow).less(list[i-1], x) {
					return fmt.Errorf("flow %s: class queue out of order at %d", f.name, q.jobs[x].id)
				}
				if c.prev(q.jobs, x) != map[bool]int32{true: 0, false: list[max(i-1, 0)]}[i == 0] {
					return fmt.Errorf("flow %s: broken back link at %d", f.name, q.jobs[x].id)
				}
			}
			h := list[0]
			if c.head != h || c.hReady != q.jobs[h].ready || c.hSeq != q.jobs[h].seq || c.hID != q.jobs[h].id || int(c.hPrio) != prioOf(q.jobs[h].prio) {
				return fmt.Errorf("flow %s: cached class head is stale", f.name)
			}
			total += len(list)
			keys = append(keys, list...)
		}
		// A class queue's position keys follow its order.
		for i := 1; i < len(keys); i++ {
			a, b := keys[i-1], keys[i]
			if q.jobs[a].class == q.jobs[b].class && keyBefore(q.jobs[b].sq, q.jobs[b].sf, q.jobs[a].sq, q.jobs[a].sf) {
				return fmt.Errorf("flow %s: job %d is before %d in its class but keyed after it", f.name, q.jobs[a].id, q.jobs[b].id)
			}
		}
	}
	for ti := range q.tiers {
		t := &q.tiers[ti]
		var w int64
		for fi := range q.flows {
			if q.flows[fi].tier == int32(ti) && q.flows[fi].ready > 0 {
				w += q.flows[fi].weight
			}
		}
		if w != t.backlog {
			return fmt.Errorf("tier %s: backlog %d, want %d", t.name, t.backlog, w)
		}
		for i, fi := range t.heap {
			if q.flows[fi].hix != int32(i) {
				return fmt.Errorf("tier %s: heap index mismatch", t.name)
			}
			if i > 0 && q.flowOrder().less(fi, t.heap[(i-1)/2]) {
				return fmt.Errorf("tier %s: heap order broken", t.name)
			}
		}
	}
	posTotal, delayedTotal := 0, 0
	for mi := range q.models {
		m := &q.models[mi]
		n := 0
		for _, tt := range m.trees {
			c, err := q.checkBTree(ordPos, tt.root)
			if err != nil {
				return err
			}
			n += c
		}
		if int64(n) != m.ready {
			return fmt.Errorf("model %s: %d ready in trees, counter %d", m.name, n, m.ready)
		}
		posTotal += n
		d, err := check(ordReady, m.delayed, "model delayed tree")
		if err != nil {
			return err
		}
		if int64(n+d) != m.queued {
			return fmt.Errorf("model %s: queued %d, trees hold %d", m.name, m.queued, n+d)
		}
		delayedTotal += d
	}
	d, err := q.checkBTree(ordReady, q.delayed)
	if err != nil {
		return err
	}
	if total != posTotal || d != delayedTotal || total+d != q.n {
		return fmt.Errorf("ready %d/%d, delayed %d/%d, n %d", total, posTotal, d, delayedTotal, q.n)
	}
	return nil
}

// checkBTree verifies a B-tree of order o and returns its number of jobs:
// parents, fill, equal leaf depth, keys, order, counts, first entries,
// leaf links and the jobs' leaf pointers.
func (q *FairQueue) checkBTree(o int, root int32) (int, error) {
	if root == 0 {
		return 0, nil
	}
	if q.bt.bn[root].parent != 0 {
		return 0, fmt.Errorf("B-tree root %d has parent %d", root, q.bt.bn[root].parent)
	}
	var prev, prevLeaf int32
	leafDepth := -1
	var walk func(n int32, depth int) (int32, error)
	walk = func(n int32, depth int) (int32, error) {
		nd := &q.bt.bn[n]
		if nd.n < 1 || nd.n > bMax || n != root && nd.n < bMin || n == root && !nd.leaf && nd.n < 2 {
			return 0, fmt.Errorf("B-tree node %d holds %d entries", n, nd.n)
		}
		for i := nd.n; i < bMax; i++ {
			if nd.key[i] != 0 || nd.job[i] != 0 || nd.child[i] != 0 || nd.cnt[i] != 0 {
				return 0, fmt.Errorf("B-tree node %d: entry %d past its end is not clear", n, i)
			}
		}
		if !nd.leaf {
			var total int32
			for i := range nd.n {
				c := nd.child[i]
				if q.bt.bn[c].parent != n {
					return 0, fmt.Errorf("B-tree node %d's parent is %d, want %d", c, q.bt.bn[c].parent, n)
				}
				if nd.key[i] != q.bt.bn[c].key[0] || nd.job[i] != q.bt.bn[c].job[0] {
					return 0, fmt.Errorf("B-tree node %d: entry %d is not its child's first", n, i)
				}
				k, err := walk(c, depth+1)
				if err != nil {
					return 0, err
				}
				if k != nd.cnt[i] {
					return 0, fmt.Errorf("B-tree node %d: child %d counted %d, holds %d", n, i, nd.cnt[i], k)
				}
				total += k
			}
			return total, nil
		}
		if leafDepth < 0 {
			leafDepth = depth
		} else if depth != leafDepth {
			return 0, fmt.Errorf("B-tree leaf %d at depth %d, another at %d", n, depth, leafDepth)
		}
		if prevLeaf != 0 && q.bt.bn[prevLeaf].next != n {
			return 0, fmt.Errorf("B-tree leaf %d: the leaf before it links to %d", n, q.bt.bn[prevLeaf].next)
		}
		prevLeaf = n
		for i, x := range nd.job[:nd.n] {
			if q.jobs[x].leaf != n {
				return 0, fmt.Errorf("B-tree: job %d's leaf is %d, it sits in %d", q.jobs[x].id, q.jobs[x].leaf, n)
			}
			if nd.key[i] != q.order(o).pack(x) {
				return 0, fmt.Errorf("B-tree: stale key of job %d", q.jobs[x].id)
			}
			if prev != 0 && (!q.order(o).before(q.order(o).pack(prev), prev, nd.key[i], x) || !q.order(o).less(prev, x)) {
				return 0, fmt.Errorf("B-tree: order broken at job %d", q.jobs[x].id)
			}
			prev = x
		}
		return nd.n, nil
	}
	n, err := walk(root, 1)
	if err == nil && q.bt.bn[prevLeaf].next != 0 {
		err = fmt.Errorf("B-tree: the last leaf %d links to %d", prevLeaf, q.bt.bn[prevLeaf].next)
	}
	return int(n), err
}

// fataler is what both *testing.T and *rapid.T offer.
type fataler interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

func mustInvariants(t fataler, q *FairQueue) {
	t.Helper()
	if err := checkInvariants(q); err != nil {
		t.Fatal(err)
	}
}

// mustFind is find for a job the test knows is queued (0 if it is not).
func (q *FairQueue) mustFind(id uint64) int32 {
	x, _ := q.byID.find(q.jobs, id)
	return x
}

// TestIDIndexAgreesWithAMap enqueues and removes jobs with IDs from a small
// range, so that the ID index's runs collide, wrap around and are shifted
// back on removal, and checks every membership against a map.
func TestIDIndexAgreesWithAMap(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		q := NewFairQueue(Config{})
		in := map[uint64]bool{}
		for i := range rapid.IntRange(1, 200).Draw(t, "ops") {
			id := rapid.Uint64Range(1, 48).Draw(t, "id") * rapid.SampledFrom([]uint64{1, 1 << 32, 1<<63 - 1}).Draw(t, "scale")
			if in[id] {
				if !q.Remove(id) {
					t.Fatalf("op %d: Remove(%d) of a queued job", i, id)
				}
				delete(in, id)
			} else {
				q.Enqueue(Job{ID: id, Seq: uint64(i), Tenant: "t", Model: "m", GPUs: 1})
				in[id] = true
			}
			for id := range in {
				if _, ok := q.byID.find(q.jobs, id); !ok {
					t.Fatalf("op %d: job %d lost", i, id)
				}
			}
			mustInvariants(t, q)
		}
	})
}
