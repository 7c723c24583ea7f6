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
// (packKey); leaves are linked in order for iteration. An inner node holds
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

// bLess orders two entries (packed key, job) in order o.
func (q *FairQueue) bLess(o int, ka uint64, a int32, kb uint64, b int32) bool {
	if ka != kb {
		return ka < kb
	}
	return q.fullLess(o, a, b)
}

// bBelow counts node n's entries that come before (key, x): where x goes.
func (q *FairQueue) bBelow(o int, n int32, key uint64, x int32) int32 {
	nd := &q.bn[n]
	lo, hi := int32(0), nd.n
	for lo < hi {
		m := int32(uint32(lo+hi) >> 1)
		if q.bLess(o, nd.key[m], nd.job[m], key, x) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

func (q *FairQueue) bAlloc(leaf bool) int32 {
	if k := len(q.bnFree); k > 0 {
		n := q.bnFree[k-1]
		q.bnFree = q.bnFree[:k-1]
		q.bn[n].leaf = leaf // bRelease cleared it
		return n
	}
	q.bn = append(q.bn, bnode{leaf: leaf})
	return int32(len(q.bn) - 1)
}

func (q *FairQueue) bRelease(n int32) {
	q.bn[n] = bnode{}
	q.bnFree = append(q.bnFree, n)
}

// bCount is the number of jobs under node n.
func (q *FairQueue) bCount(n int32) int32 {
	if n == 0 {
		return 0
	}
	nd := &q.bn[n]
	if nd.leaf {
		return nd.n
	}
	var c int32
	for _, k := range nd.cnt[:nd.n] {
		c += k
	}
	return c
}

// bSlot is child c's index in its parent p.
func (q *FairQueue) bSlot(p, c int32) int32 {
	return int32(slices.Index(q.bn[p].child[:q.bn[p].n], c))
}

// bJobSlot is job x's index in its leaf l.
func (q *FairQueue) bJobSlot(l, x int32) int32 {
	return int32(slices.Index(q.bn[l].job[:q.bn[l].n], x))
}

// bInsert adds job x to the order-o tree whose root is *root.
func (q *FairQueue) bInsert(o int, root *int32, x int32) {
	key := q.packKey(o, x)
	if *root == 0 {
		l := q.bAlloc(true)
		q.bn[l].n, q.bn[l].key[0], q.bn[l].job[0] = 1, key, x
		q.jobs[x].leaf = l
		*root = l
		return
	}
	s := q.bIns(o, *root, key, x)
	if s == 0 {
		return
	}
	// The root split: a new root above the two halves.
	old := *root
	r := q.bAlloc(false)
	nd := &q.bn[r]
	nd.n = 2
	for i, c := range [2]int32{old, s} {
		nd.child[i], nd.cnt[i] = c, q.bCount(c)
		nd.key[i], nd.job[i] = q.bn[c].key[0], q.bn[c].job[0]
		q.bn[c].parent = r
	}
	*root = r
}

// bIns inserts (key, x) under node n; if n had to split, it returns the new
// right half (its parent still to be linked), else 0.
func (q *FairQueue) bIns(o int, n int32, key uint64, x int32) int32 {
	if q.bn[n].leaf {
		at := q.bBelow(o, n, key, x)
		if q.bn[n].n < bMax {
			q.bPut(n, at, key, x, 0, 0)
			q.jobs[x].leaf = n
			return 0
		}
		r := q.bSplit(n)
		if h := q.bn[n].n; at > h {
			n, at = r, at-h
		}
		q.bPut(n, at, key, x, 0, 0)
		q.jobs[x].leaf = n
		return r
	}
	i := max(q.bBelow(o, n, key, x)-1, 0)
	nd := &q.bn[n]
	if i == 0 && q.bLess(o, key, x, nd.key[0], nd.job[0]) {
		nd.key[0], nd.job[0] = key, x // x becomes the first under child 0
	}
	c := nd.child[i]
	s := q.bIns(o, c, key, x)
	nd = &q.bn[n] // bIns may have grown the arena
	if s == 0 {
		nd.cnt[i]++
		return 0
	}
	nd.cnt[i] = q.bCount(c)
	sk, sj, sc := q.bn[s].key[0], q.bn[s].job[0], q.bCount(s)
	at := i + 1
	if nd.n < bMax {
		q.bPut(n, at, sk, sj, s, sc)
		return 0
	}
	r := q.bSplit(n)
	if h := q.bn[n].n; at > h {
		n, at = r, at-h
	}
	q.bPut(n, at, sk, sj, s, sc)
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

// bPut inserts an entry at index at of node n (child and count are
// ignored in a leaf).
func (q *FairQueue) bPut(n, at int32, key uint64, job, child, cnt int32) {
	nd := &q.bn[n]
	nd.open(at, 1)
	nd.key[at], nd.job[at] = key, job
	if !nd.leaf {
		nd.child[at], nd.cnt[at] = child, cnt
		q.bn[child].parent = n
	}
}

// bSplit moves the upper half of full node n into a new node and returns
// it; its parent is left to the caller.
func (q *FairQueue) bSplit(n int32) int32 {
	r := q.bAlloc(q.bn[n].leaf)
	nd, rd := &q.bn[n], &q.bn[r]
	h := nd.n / 2
	q.bMove(rd, r, 0, nd, h, nd.n-h)
	rd.n, nd.n = nd.n-h, h
	rd.parent = nd.parent
	if nd.leaf {
		rd.next, nd.next = nd.next, r
	}
	return r
}

// bMove copies k entries from src (from index from) to dst (node d, at
// index at; dst must have room), repointing the moved jobs or children to
// d, and clears them in src. It does not change either node's n.
func (q *FairQueue) bMove(dst *bnode, d, at int32, src *bnode, from, k int32) {
	copy(dst.key[at:at+k], src.key[from:from+k])
	copy(dst.job[at:at+k], src.job[from:from+k])
	clear(src.key[from : from+k])
	if dst.leaf {
		for _, x := range dst.job[at : at+k] {
			q.jobs[x].leaf = d
		}
	} else {
		copy(dst.child[at:at+k], src.child[from:from+k])
		copy(dst.cnt[at:at+k], src.cnt[from:from+k])
		for _, c := range dst.child[at : at+k] {
			q.bn[c].parent = d
		}
		clear(src.child[from : from+k])
		clear(src.cnt[from : from+k])
	}
	clear(src.job[from : from+k])
}

// bDelete removes job x from the tree whose root is *root.
func (q *FairQueue) bDelete(root *int32, x int32) {
	l := q.jobs[x].leaf
	q.jobs[x].leaf = 0
	at := q.bJobSlot(l, x)
	q.bn[l].close(at, 1)
	if q.bn[l].n == 0 { // only a root leaf empties
		q.bRelease(l)
		*root = 0
		return
	}
	// Counts above go down by one; a new first entry is copied up while
	// the node is its parent's first child.
	first := at == 0
	for c, p := l, q.bn[l].parent; p != 0; c, p = p, q.bn[p].parent {
		s := q.bSlot(p, c)
		pd := &q.bn[p]
		pd.cnt[s]--
		if first {
			pd.key[s], pd.job[s] = q.bn[c].key[0], q.bn[c].job[0]
			first = s == 0
		}
	}
	if q.bn[l].n < bMin && l != *root {
		q.bRebalance(root, l)
	}
}

// bRebalance refills node c, below bMin entries, from a sibling: it merges
// the two when they fit in one node, else evens them out.
func (q *FairQueue) bRebalance(root *int32, c int32) {
	for {
		p := q.bn[c].parent
		s := q.bSlot(p, c)
		sa := s - 1
		if s == 0 {
			sa = 0
		}
		pd := &q.bn[p]
		a, b := pd.child[sa], pd.child[sa+1]
		ad, bd := &q.bn[a], &q.bn[b]
		if ad.n+bd.n > bMax {
			// Even them out; a's first entry stays, b's may change.
			if ad.n > bd.n {
				k := (ad.n - bd.n) / 2
				bd.open(0, k)
				q.bMove(bd, b, 0, ad, ad.n-k, k)
				ad.n -= k
			} else {
				k := (bd.n - ad.n) / 2
				q.bMove(ad, a, ad.n, bd, 0, k)
				ad.n += k
				bd.close(0, k)
			}
			pd.cnt[sa], pd.cnt[sa+1] = q.bCount(a), q.bCount(b)
			pd.key[sa+1], pd.job[sa+1] = bd.key[0], bd.job[0]
			return
		}
		// Merge b into a.
		q.bMove(ad, a, ad.n, bd, 0, bd.n)
		ad.n += bd.n
		if ad.leaf {
			ad.next = bd.next
		}
		pd.cnt[sa] += pd.cnt[sa+1]
		pd.close(sa+1, 1)
		q.bRelease(b)
		if p == *root {
			if pd.n == 1 { // the root has one child left: it becomes the root
				*root = a
				q.bn[a].parent = 0
				q.bRelease(p)
			}
			return
		}
		if pd.n >= bMin {
			return
		}
		c = p
	}
}

// bSize is the number of jobs in the tree.
func (q *FairQueue) bSize(root int32) int { return int(q.bCount(root)) }

// bFirstLeaf is the tree's first leaf, 0 if it is empty.
func (q *FairQueue) bFirstLeaf(root int32) int32 {
	n := root
	for n != 0 && !q.bn[n].leaf {
		n = q.bn[n].child[0]
	}
	return n
}

// bFirst is the first job of the tree, 0 if it is empty.
func (q *FairQueue) bFirst(root int32) int32 {
	return q.bn[q.bFirstLeaf(root)].job[0]
}

// bRank counts the jobs of x's tree before x: no comparisons, one node per
// level.
func (q *FairQueue) bRank(x int32) int {
	l := q.jobs[x].leaf
	r := q.bJobSlot(l, x)
	for c, p := l, q.bn[l].parent; p != 0; c, p = p, q.bn[p].parent {
		pd := &q.bn[p]
		for _, k := range pd.cnt[:q.bSlot(p, c)] {
			r += k
		}
	}
	return int(r)
}

// bCountWhile counts the jobs of the tree whose packed keys satisfy pred,
// which must hold for a prefix of the tree's order.
func (q *FairQueue) bCountWhile(root int32, pred func(key uint64) bool) int {
	cnt := int32(0)
	for n := root; n != 0; {
		nd := &q.bn[n]
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

func (q *FairQueue) bJob(c bCursor) int32 { return q.bn[c.leaf].job[c.at] }

func (q *FairQueue) bNext(c bCursor) bCursor {
	if c.at++; c.at == q.bn[c.leaf].n {
		c = bCursor{leaf: q.bn[c.leaf].next}
	}
	return c
}

// bSeek is the cursor at the first job of the tree for which pred holds;
// pred must fail for a prefix of the tree's order and hold after it.
func (q *FairQueue) bSeek(root int32, pred func(x int32) bool) bCursor {
	if root == 0 {
		return bCursor{}
	}
	n := root
	for {
		nd := &q.bn[n]
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

// bAscend calls fn for the tree's jobs in order until fn says stop.
func (q *FairQueue) bAscend(root int32, fn func(int32) bool) {
	for c := (bCursor{leaf: q.bFirstLeaf(root)}); c.leaf != 0; c = q.bNext(c) {
		if !fn(q.bJob(c)) {
			return
		}
	}
}
