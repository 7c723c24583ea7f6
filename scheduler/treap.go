package scheduler

import "math"

// The queue keeps every job in one arena (FairQueue.jobs). Ready jobs sit
// in their flow's class queue (classqueue.go, linked through the job
// records) and in their (model, tier) queue-order B-tree (btree.go);
// delayed jobs in the global delayed B-tree and in their model's delayed
// treap, here, which Position ranks them in. Treap nodes are kept in a
// compact array apart from the job records (the treaps' nodes[x] is job
// x's), so that a descent touches one small node per level.
//
// A treap node holds its order key packed into a uint64 (compared first;
// the job record is read only when two packed keys tie) and its subtree
// size, for rank queries (Position), and its parent, so that removing a
// known job needs no search: no key comparisons, so no job records read
// on ties (delete). Index 0 is nil and has size 0. Heap
// priorities are a hash of the job's ID, so a treap's shape depends only
// on the keys it holds, not on the order of the calls that built it.

// treaps holds the nodes of many treaps (each known by its root), one per
// job of the arena: nodes[x] is job x's.
type treaps struct{ nodes []tnode }

type tnode struct {
	key  uint64
	l, r int32
	p    int32 // parent (0 at the root)
	size int32
	hp   uint32
}

// jobOrder compares the jobs of the arena js in order o (ordPos reads the
// flows' since and tenant names); the trees take it on every call, so that
// they hold no pointer back to the queue.
type jobOrder struct {
	o     int
	js    []qjob
	flows []flow
}

// Orders a tree can be kept in.
const (
	ordFlow  = iota // priority (higher first), then Seq
	ordPos          // position key (sq, sf), flow since and name, priority, Seq
	ordReady        // Ready, then Seq
)

// pack packs the leading part of job x's order-k key into a uint64
// whose order agrees with the full order: a smaller packed key means an
// earlier job, an equal one means "compare in full".
func (k *jobOrder) pack(x int32) uint64 {
	j := &k.js[x]
	switch k.o {
	case ordFlow:
		return uint64(9-prioOf(j.prio))<<60 | min(j.seq, 1<<60-1)
	case ordPos:
		// sq ≥ 0 (virtual times start at 0 and only grow); 16 bits of the
		// fraction; past 2^47 cost units all keys tie and compare in full.
		return uint64(min(max(j.sq, 0), 1<<47-1))<<16 | uint64(j.sf>>16)
	}
	return uint64(j.ready) ^ 1<<63
}

// sqOf is the whole part of a position key, from the packed key.
func sqOf(key uint64) int64 {
	if sq := int64(key >> 16); sq < 1<<47-1 {
		return sq
	}
	return math.MaxInt64
}

// less compares the treap nodes of jobs a and b.
func (t *treaps) less(k *jobOrder, a, b int32) bool {
	return k.before(t.nodes[a].key, a, t.nodes[b].key, b)
}

// less is the full order: jobs a before b.
func (k *jobOrder) less(a, b int32) bool {
	x, y := &k.js[a], &k.js[b]
	switch k.o {
	case ordFlow:
		return flowBefore(x, y)
	case ordPos:
		if x.sq != y.sq {
			return x.sq < y.sq
		}
		if x.sf != y.sf {
			return x.sf < y.sf
		}
		if x.flow != y.flow {
			if sx, sy := k.flows[x.flow].since, k.flows[y.flow].since; sx != sy {
				return sx < sy
			}
			return k.flows[x.flow].name < k.flows[y.flow].name
		}
		if px, py := prioOf(x.prio), prioOf(y.prio); px != py {
			return px > py
		}
	case ordReady:
		if x.ready != y.ready {
			return x.ready < y.ready
		}
	}
	// Seq is unique per the Job contract; the ID keeps keys unique even if a
	// caller breaks it, since a tree must never hold two equal keys.
	if x.seq != y.seq {
		return x.seq < y.seq
	}
	return x.id < y.id
}

// above is the heap order: node a above b.
func (t *treaps) above(js []qjob, a, b int32) bool {
	x, y := &t.nodes[a], &t.nodes[b]
	if x.hp != y.hp {
		return x.hp > y.hp
	}
	return js[a].id < js[b].id
}

func treapPrio(id uint64) uint32 {
	x := id + 0x9E3779B97F4A7C15
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
	x = (x ^ (x >> 27)) * 0x94D049BB133111EB
	return uint32((x ^ (x >> 31)) >> 32)
}

// pull recomputes n's subtree size from its children's.
func (t *treaps) pull(n int32) {
	ns := t.nodes
	x := &ns[n]
	x.size = 1 + ns[x.l].size + ns[x.r].size
}

// insert adds x to the tree rooted at n, in order k, and returns the new root.
func (t *treaps) insert(k *jobOrder, n, x int32) int32 {
	t.nodes[x] = tnode{key: k.pack(x), size: 1, hp: treapPrio(k.js[x].id)}
	root := t.ins(k, n, x)
	t.nodes[root].p = 0
	return root
}

// ins adds x below n and returns the subtree's new root, whose parent
// the caller sets.
func (t *treaps) ins(k *jobOrder, n, x int32) int32 {
	if n == 0 {
		return x
	}
	ns := t.nodes
	if t.less(k, x, n) {
		c := t.ins(k, ns[n].l, x)
		ns[n].l, ns[c].p = c, n
		if t.above(k.js, c, n) {
			t.rotate(n, c, &ns[n].l, &ns[c].r)
			return c
		}
	} else {
		c := t.ins(k, ns[n].r, x)
		ns[n].r, ns[c].p = c, n
		if t.above(k.js, c, n) {
			t.rotate(n, c, &ns[n].r, &ns[c].l)
			return c
		}
	}
	t.pull(n)
	return n
}

// rotate lifts child c over its parent n: inner is c's subtree on n's
// side (it moves under n, into n's link *toC) and *cSide is c's link that
// takes n.
func (t *treaps) rotate(n, c int32, toC, cSide *int32) {
	ns := t.nodes
	inner := *cSide
	*toC = inner
	if inner != 0 {
		ns[inner].p = n
	}
	*cSide = n
	ns[n].p = c
	t.pull(n)
	t.pull(c)
}

// delete removes x, which must be in the tree rooted at root, and returns
// the new root. Through x's parent: its children are joined in its place
// and the sizes above it go down by one.
func (t *treaps) delete(js []qjob, root, x int32) int32 {
	ns := t.nodes
	p := ns[x].p
	c := t.join(js, ns[x].l, ns[x].r)
	if c != 0 {
		ns[c].p = p
	}
	if x == root {
		return c
	}
	if ns[p].l == x {
		ns[p].l = c
	} else {
		ns[p].r = c
	}
	for ; p != 0; p = ns[p].p {
		ns[p].size--
	}
	return root
}

// join joins two trees where every key of a is below every key of b; the
// caller sets the parent of the root it returns.
func (t *treaps) join(js []qjob, a, b int32) int32 {
	if a == 0 {
		return b
	}
	if b == 0 {
		return a
	}
	ns := t.nodes
	if t.above(js, a, b) {
		c := t.join(js, ns[a].r, b)
		ns[a].r, ns[c].p = c, a
		t.pull(a)
		return a
	}
	c := t.join(js, a, ns[b].l)
	ns[b].l, ns[c].p = c, b
	t.pull(b)
	return b
}

// rank counts the nodes of the tree below x in order k.
func (t *treaps) rank(k *jobOrder, n, x int32) int {
	ns := t.nodes
	c := 0
	for n != 0 {
		if t.less(k, n, x) {
			c += int(ns[ns[n].l].size) + 1
			n = ns[n].r
		} else {
			n = ns[n].l
		}
	}
	return c
}
