package scheduler

// minHeap is a binary min-heap of indices: a tier's active flows, or, in
// Place, flows and flow-heap positions by simulated tag. The order is one of
// the queue's (heapOrder); the heap itself holds no pointer back.
type minHeap []int32

type heapKind uint8

const (
	byTag      heapKind = iota // a tier's flow heap: flows by tag, since, then name; each flow keeps its place (flow.hix)
	bySimTag                   // flows by simulated tag and since, then name (Place's charged flows)
	byFrontier                 // positions in t.heap, by their flows' simulated tags (Place's frontier)
)

// heapOrder is the order a heap call keeps: a concrete switch rather than a
// closure, so that comparisons are direct calls on the dispatch path.
type heapOrder struct {
	q    *FairQueue
	p    *Placer // bySimTag and byFrontier: the placement whose simulated tags order
	ti   int32   // byFrontier: the tier whose flow heap the positions index
	kind heapKind
}

// less compares two of the heap's indices: flows by tag (byTag) or
// simulated tag, then since (the one waiting longer first), then tenant
// name. It reads the flows itself, one call per comparison as a
// hand-written heap would make.
func (o heapOrder) less(a, b int32) bool {
	q := o.q
	var c int
	var sa, sb uint64
	switch o.kind {
	case byTag:
		c = q.flows[a].tag.cmp(q.flows[b].tag)
		sa, sb = q.flows[a].since, q.flows[b].since
	case byFrontier:
		h := q.tiers[o.ti].heap
		a, b = h[a], h[b]
		fallthrough
	default:
		c = o.p.simTag(a).cmp(o.p.simTag(b))
		sa, sb = o.p.simSince(a), o.p.simSince(b)
	}
	if c != 0 {
		return c < 0
	}
	if sa != sb {
		return sa < sb
	}
	return q.flows[a].name < q.flows[b].name
}

// moved notes that index x is now at place i.
func (o heapOrder) moved(x, i int32) {
	if o.kind == byTag {
		o.q.flows[x].hix = i
	}
}

// push adds x.
func (h *minHeap) push(x int32, o heapOrder) {
	*h = append(*h, x)
	i := int32(len(*h) - 1)
	o.moved(x, i)
	h.up(i, o)
}

// pop removes and returns the least index; the heap must not be empty.
func (h *minHeap) pop(o heapOrder) int32 {
	top := (*h)[0]
	h.remove(0, o)
	return top
}

// remove takes out the index at place i.
func (h *minHeap) remove(i int32, o heapOrder) {
	s := *h
	last := int32(len(s) - 1)
	if i != last {
		s[i] = s[last]
		o.moved(s[i], i)
	}
	*h = s[:last]
	if i != last {
		h.fix(i, o)
	}
}

// fix restores the order after the index at place i changed.
func (h minHeap) fix(i int32, o heapOrder) {
	if !h.up(i, o) {
		h.down(i, o)
	}
}

// up moves the index at place i up to its place; it reports whether it
// moved. (A hole moves instead of the index, which is written once.)
func (h minHeap) up(i int32, o heapOrder) bool {
	x, from := h[i], i
	for i > 0 {
		p := (i - 1) / 2
		if !o.less(x, h[p]) {
			break
		}
		h[i] = h[p]
		o.moved(h[i], i)
		i = p
	}
	if i == from {
		return false
	}
	h[i] = x
	o.moved(x, i)
	return true
}

// down moves the index at place i down to its place.
func (h minHeap) down(i int32, o heapOrder) {
	n := int32(len(h))
	x, from := h[i], i
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		c := l
		if r := l + 1; r < n && o.less(h[r], h[l]) {
			c = r
		}
		if !o.less(h[c], x) {
			break
		}
		h[i] = h[c]
		o.moved(h[i], i)
		i = c
	}
	if i != from {
		h[i] = x
		o.moved(x, i)
	}
}

// heapify orders the whole heap.
func (h minHeap) heapify(o heapOrder) {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(int32(i), o)
	}
}
