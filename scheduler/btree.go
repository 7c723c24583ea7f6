package scheduler

import "slices"

// Counted B+-trees for the queue orders that hold many jobs: each (model,
// tier) queue-order tree of ready jobs (ordPos) and the global tree of
// delayed jobs (ordReady).
//
// Why not a binary tree: dispatching a job removes it from its queue-order
// tree, and at a million queued jobs every level of a binary tree (about
// 19 of them) is a cache miss. A node here holds up to bMax entries side
// by side, so a tree of a million jobs is four levels deep, and removing a
// known job touches its leaf and one node per level above it.
//
// A leaf holds jobs (arena indices) in order with their packed keys
// (jobOrder.pack); leaves are linked in order for iteration. An inner node holds
// its children, the number of jobs under each (for rank queries: Position),
// and each child's first job with its packed key, which is what a descent
// compares (the job record is read only when packed keys tie). Each node
// knows its parent and each job its leaf (qjob.leaf), so removing a job
// needs no search and no key comparisons. Every node but the root holds at
// least bMin entries; a node that falls below borrows from or merges with
// a sibling, so the depth stays logarithmic whatever the order of
// arrivals and removals.
//
// Shapes depend on the order of operations; nothing observable depends
// on shapes (order, ranks and iteration depend only on the keys).

const (
	bMax = 32
	bMin = bMax / 4
)

// bforest holds the nodes of many B-trees, each known by its root.
type bforest struct {
	bn   []bnode // bn[0] is nil
	free []int32
}

type bnode struct {
	n      int32
	parent int32 // 0 at the root
	leaf   bool
	next   int32        // leaves: the next leaf in order, 0 at the end
	key    [bMax]uint64 // packed key of job[i]
	job    [bMax]int32  // leaf: the jobs; inner: the first job under child[i]
	child  [bMax]int32  // inner only
	cnt    [bMax]int32  // inner only: jobs under child[i]
}

// before orders two entries (packed key, job) in k's order.
func (k *jobOrder) before(ka uint64, a int32, kb uint64, b int32) bool {
	if ka != kb {
		return ka < kb
	}
	return k.less(a, b)
}

// below counts node n's entries that come before (key, x): where x goes.
func (f *bforest) below(k *jobOrder, n int32, key uint64, x int32) int32 {
	nd := &f.bn[n]
	lo, hi := int32(0), nd.n
	for lo < hi {
		m := int32(uint32(lo+hi) >> 1)
		if k.before(nd.key[m], nd.job[m], key, x) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

func (f *bforest) alloc(leaf bool) int32 {
	if k := len(f.free); k > 0 {
		n := f.free[k-1]
		f.free = f.free[:k-1]
		f.bn[n].leaf = leaf // bRelease cleared it
		return n
	}
	f.bn = append(f.bn, bnode{leaf: leaf})
	return int32(len(f.bn) - 1)
}

func (f *bforest) release(n int32) {
	f.bn[n] = bnode{}
	f.free = append(f.free, n)
}

// count is the number of jobs under node n.
func (f *bforest) count(n int32) int32 {
	if n == 0 {
		return 0
	}
	nd := &f.bn[n]
	if nd.leaf {
		return nd.n
	}
	var c int32
	for _, k := range nd.cnt[:nd.n] {
		c += k
	}
	return c
}

// slot is child c's index in its parent p.
func (f *bforest) slot(p, c int32) int32 {
	return int32(slices.Index(f.bn[p].child[:f.bn[p].n], c))
}

// jobSlot is job x's index in its leaf l.
func (f *bforest) jobSlot(l, x int32) int32 {
	return int32(slices.Index(f.bn[l].job[:f.bn[l].n], x))
}

// insert adds job x to the tree, in order k, whose root is *root.
func (f *bforest) insert(k *jobOrder, root *int32, x int32) {
	key := k.pack(x)
	if *root == 0 {
		l := f.alloc(true)
		f.bn[l].n, f.bn[l].key[0], f.bn[l].job[0] = 1, key, x
		k.js[x].leaf = l
		*root = l
		return
	}
	s := f.ins(k, *root, key, x)
	if s == 0 {
		return
	}
	// The root split: a new root above the two halves.
	old := *root
	r := f.alloc(false)
	nd := &f.bn[r]
	nd.n = 2
	for i, c := range [2]int32{old, s} {
		nd.child[i], nd.cnt[i] = c, f.count(c)
		nd.key[i], nd.job[i] = f.bn[c].key[0], f.bn[c].job[0]
		f.bn[c].parent = r
	}
	*root = r
}

// ins inserts (key, x) under node n; if n had to split, it returns the new
// right half (its parent still to be linked), else 0.
func (f *bforest) ins(k *jobOrder, n int32, key uint64, x int32) int32 {
	if f.bn[n].leaf {
		at := f.below(k, n, key, x)
		if f.bn[n].n < bMax {
			f.put(n, at, key, x, 0, 0)
			k.js[x].leaf = n
			return 0
		}
		r := f.split(k.js, n)
		if h := f.bn[n].n; at > h {
			n, at = r, at-h
		}
		f.put(n, at, key, x, 0, 0)
		k.js[x].leaf = n
		return r
	}
	i := max(f.below(k, n, key, x)-1, 0)
	nd := &f.bn[n]
	if i == 0 && k.before(key, x, nd.key[0], nd.job[0]) {
		nd.key[0], nd.job[0] = key, x // x becomes the first under child 0
	}
	c := nd.child[i]
	s := f.ins(k, c, key, x)
	nd = &f.bn[n] // ins may have grown the arena
	if s == 0 {
		nd.cnt[i]++
		return 0
	}
	nd.cnt[i] = f.count(c)
	sk, sj, sc := f.bn[s].key[0], f.bn[s].job[0], f.count(s)
	at := i + 1
	if nd.n < bMax {
		f.put(n, at, sk, sj, s, sc)
		return 0
	}
	r := f.split(k.js, n)
	if h := f.bn[n].n; at > h {
		n, at = r, at-h
	}
	f.put(n, at, sk, sj, s, sc)
	return r
}

// open makes room for k entries at index at (their old values stay until
// the caller writes them).
func (nd *bnode) open(at, k int32) {
	m := nd.n
	copy(nd.key[at+k:m+k], nd.key[at:m])
	copy(nd.job[at+k:m+k], nd.job[at:m])
	if !nd.leaf {
		copy(nd.child[at+k:m+k], nd.child[at:m])
		copy(nd.cnt[at+k:m+k], nd.cnt[at:m])
	}
	nd.n += k
}

// close removes the k entries from index at and clears the freed tail.
func (nd *bnode) close(at, k int32) {
	m := nd.n
	copy(nd.key[at:m-k], nd.key[at+k:m])
	copy(nd.job[at:m-k], nd.job[at+k:m])
	clear(nd.key[m-k : m])
	clear(nd.job[m-k : m])
	if !nd.leaf {
		copy(nd.child[at:m-k], nd.child[at+k:m])
		copy(nd.cnt[at:m-k], nd.cnt[at+k:m])
		clear(nd.child[m-k : m])
		clear(nd.cnt[m-k : m])
	}
	nd.n -= k
}

// put inserts an entry at index at of node n (child and count are
// ignored in a leaf).
func (f *bforest) put(n, at int32, key uint64, job, child, cnt int32) {
	nd := &f.bn[n]
	nd.open(at, 1)
	nd.key[at], nd.job[at] = key, job
	if !nd.leaf {
		nd.child[at], nd.cnt[at] = child, cnt
		f.bn[child].parent = n
	}
}

// split moves the upper half of full node n into a new node and returns
// it; its parent is left to the caller.
func (f *bforest) split(js []qjob, n int32) int32 {
	r := f.alloc(f.bn[n].leaf)
	nd, rd := &f.bn[n], &f.bn[r]
	h := nd.n / 2
	f.move(js, rd, r, 0, nd, h, nd.n-h)
	rd.n, nd.n = nd.n-h, h
	rd.parent = nd.parent
	if nd.leaf {
		rd.next, nd.next = nd.next, r
	}
	return r
}

// move copies k entries from src (from index from) to dst (node d, at
// index at; dst must have room), repointing the moved jobs or children to
// d, and clears them in src. It does not change either node's n.
func (f *bforest) move(js []qjob, dst *bnode, d, at int32, src *bnode, from, k int32) {
	copy(dst.key[at:at+k], src.key[from:from+k])
	copy(dst.job[at:at+k], src.job[from:from+k])
	clear(src.key[from : from+k])
	if dst.leaf {
		for _, x := range dst.job[at : at+k] {
			js[x].leaf = d
		}
	} else {
		copy(dst.child[at:at+k], src.child[from:from+k])
		copy(dst.cnt[at:at+k], src.cnt[from:from+k])
		for _, c := range dst.child[at : at+k] {
			f.bn[c].parent = d
		}
		clear(src.child[from : from+k])
		clear(src.cnt[from : from+k])
	}
	clear(src.job[from : from+k])
}

// delete removes job x from the tree whose root is *root.
func (f *bforest) delete(js []qjob, root *int32, x int32) {
	l := js[x].leaf
	js[x].leaf = 0
	at := f.jobSlot(l, x)
	f.bn[l].close(at, 1)
	if f.bn[l].n == 0 { // only a root leaf empties
		f.release(l)
		*root = 0
		return
	}
	// Counts above go down by one; a new first entry is copied up while
	// the node is its parent's first child.
	first := at == 0
	for c, p := l, f.bn[l].parent; p != 0; c, p = p, f.bn[p].parent {
		s := f.slot(p, c)
		pd := &f.bn[p]
		pd.cnt[s]--
		if first {
			pd.key[s], pd.job[s] = f.bn[c].key[0], f.bn[c].job[0]
			first = s == 0
		}
	}
	if f.bn[l].n < bMin && l != *root {
		f.rebalance(js, root, l)
	}
}

// rebalance refills node c, below bMin entries, from a sibling: it merges
// the two when they fit in one node, else evens them out.
func (f *bforest) rebalance(js []qjob, root *int32, c int32) {
	for {
		p := f.bn[c].parent
		s := f.slot(p, c)
		sa := s - 1
		if s == 0 {
			sa = 0
		}
		pd := &f.bn[p]
		a, b := pd.child[sa], pd.child[sa+1]
		ad, bd := &f.bn[a], &f.bn[b]
		if ad.n+bd.n > bMax {
			// Even them out; a's first entry stays, b's may change.
			if ad.n > bd.n {
				k := (ad.n - bd.n) / 2
				bd.open(0, k)
				f.move(js, bd, b, 0, ad, ad.n-k, k)
				ad.n -= k
			} else {
				k := (bd.n - ad.n) / 2
				f.move(js, ad, a, ad.n, bd, 0, k)
				ad.n += k
				bd.close(0, k)
			}
			pd.cnt[sa], pd.cnt[sa+1] = f.count(a), f.count(b)
			pd.key[sa+1], pd.job[sa+1] = bd.key[0], bd.job[0]
			return
		}
		// Merge b into a.
		f.move(js, ad, a, ad.n, bd, 0, bd.n)
		ad.n += bd.n
		if ad.leaf {
			ad.next = bd.next
		}
		pd.cnt[sa] += pd.cnt[sa+1]
		pd.close(sa+1, 1)
		f.release(b)
		if p == *root {
			if pd.n == 1 { // the root has one child left: it becomes the root
				*root = a
				f.bn[a].parent = 0
				f.release(p)
			}
			return
		}
		if pd.n >= bMin {
			return
		}
		c = p
	}
}

// size is the number of jobs in the tree.
func (f *bforest) size(root int32) int { return int(f.count(root)) }

// firstLeaf is the tree's first leaf, 0 if it is empty.
func (f *bforest) firstLeaf(root int32) int32 {
	n := root
	for n != 0 && !f.bn[n].leaf {
		n = f.bn[n].child[0]
	}
	return n
}

// first is the first job of the tree, 0 if it is empty.
func (f *bforest) first(root int32) int32 {
	return f.bn[f.firstLeaf(root)].job[0]
}

// rank counts the jobs of x's tree before x: no comparisons, one node per
// level.
func (f *bforest) rank(js []qjob, x int32) int {
	l := js[x].leaf
	r := f.jobSlot(l, x)
	for c, p := l, f.bn[l].parent; p != 0; c, p = p, f.bn[p].parent {
		pd := &f.bn[p]
		for _, k := range pd.cnt[:f.slot(p, c)] {
			r += k
		}
	}
	return int(r)
}

// countWhile counts the jobs of the tree whose packed keys satisfy pred,
// which must hold for a prefix of the tree's order.
func (f *bforest) countWhile(root int32, pred func(key uint64) bool) int {
	cnt := int32(0)
	for n := root; n != 0; {
		nd := &f.bn[n]
		k := nd.n // entries whose (first) key satisfies pred: a prefix
		for i := range nd.n {
			if !pred(nd.key[i]) {
				k = i
				break
			}
		}
		if nd.leaf {
			return int(cnt + k)
		}
		if k == 0 {
			break
		}
		for _, c := range nd.cnt[:k-1] {
			cnt += c
		}
		n = nd.child[k-1]
	}
	return int(cnt)
}

// bCursor is a place in a tree's leaves; leaf 0 is past the end.
type bCursor struct{ leaf, at int32 }

func (f *bforest) job(c bCursor) int32 { return f.bn[c.leaf].job[c.at] }

func (f *bforest) next(c bCursor) bCursor {
	if c.at++; c.at == f.bn[c.leaf].n {
		c = bCursor{leaf: f.bn[c.leaf].next}
	}
	return c
}

// seek is the cursor at the first job of the tree for which pred holds;
// pred must fail for a prefix of the tree's order and hold after it.
func (f *bforest) seek(root int32, pred func(x int32) bool) bCursor {
	if root == 0 {
		return bCursor{}
	}
	n := root
	for {
		nd := &f.bn[n]
		lo, hi := int32(0), nd.n // first entry whose (first) job satisfies pred
		for lo < hi {
			m := int32(uint32(lo+hi) >> 1)
			if pred(nd.job[m]) {
				hi = m
			} else {
				lo = m + 1
			}
		}
		if nd.leaf {
			if lo == nd.n {
				return bCursor{leaf: nd.next}
			}
			return bCursor{leaf: n, at: lo}
		}
		n = nd.child[max(lo-1, 0)]
	}
}

// ascend calls fn for the tree's jobs in order until fn says stop.
func (f *bforest) ascend(root int32, fn func(int32) bool) {
	for c := (bCursor{leaf: f.firstLeaf(root)}); c.leaf != 0; c = f.next(c) {
		if !fn(f.job(c)) {
			return
		}
	}
}
