package scheduler

import "math/bits"

// classQueue holds one flow's ready jobs of one resource class (model,
// GPUs, memory) in ordFlow order: a list per priority level, each in Seq
// order, linked through the job records (qjob.prev, qjob.next): removing
// a class head reads the record it has to read anyway and its successor's,
// which becomes the head.
// Every operation Place and Start need is O(1): the head, the job after a
// given one, removing any job; appending is O(1) when the job's Seq is the
// level's largest, which is how jobs arrive (a job made ready by Advance
// out of Seq order walks back from the tail). The head's order key and
// Ready are copied here so that Place compares class heads without
// loading their job records.
type classQueue struct {
	// Read by Place for every class of a flow it visits: first, together.
	head   int32 // first job: highest level's first
	hPrio  int32 // the head's ordFlow key and Ready
	hSeq   uint64
	hID    uint64
	hReady int64

	class int32
	n     int32
	mask  uint16    // bit p: level p is not empty
	lv    [10]level // by priority
}

type level struct{ h, t int32 }

// push adds job x (of the arena js).
func (c *classQueue) push(js []qjob, x int32) {
	p := prioOf(js[x].prio)
	lv := &c.lv[p]
	t := lv.t
	for t != 0 && flowBefore(&js[x], &js[t]) {
		t = js[t].prev
	}
	js[x].prev = t
	if t == 0 {
		js[x].next = lv.h
		lv.h = x
	} else {
		js[x].next = js[t].next
		js[t].next = x
	}
	if js[x].next != 0 {
		js[js[x].next].prev = x
	} else {
		lv.t = x
	}
	c.mask |= 1 << p
	c.n++
	if c.head == 0 || flowBefore(&js[x], &js[c.head]) {
		c.setHead(js, x)
	}
}

// remove takes out job x.
func (c *classQueue) remove(js []qjob, x int32) {
	p := prioOf(js[x].prio)
	lv := &c.lv[p]
	l, r := js[x].prev, js[x].next
	js[x].prev, js[x].next = 0, 0
	if l != 0 {
		js[l].next = r
	} else {
		lv.h = r
	}
	if r != 0 {
		js[r].prev = l
	} else {
		lv.t = l
	}
	if lv.h == 0 {
		c.mask &^= 1 << p
	}
	c.n--
	if c.head == x {
		c.setHead(js, c.first())
	}
}

// first is the queue's first job, or 0.
func (c *classQueue) first() int32 {
	if c.mask == 0 {
		return 0
	}
	return c.lv[bits.Len16(c.mask)-1].h
}

// next is the job after x in the queue's order, or 0.
func (c *classQueue) next(js []qjob, x int32) int32 {
	if r := js[x].next; r != 0 {
		return r
	}
	if below := c.mask & (1<<prioOf(js[x].prio) - 1); below != 0 {
		return c.lv[bits.Len16(below)-1].h
	}
	return 0
}

// prev is the job before x in the queue's order, or 0.
func (c *classQueue) prev(js []qjob, x int32) int32 {
	if l := js[x].prev; l != 0 {
		return l
	}
	if above := c.mask &^ (1<<(prioOf(js[x].prio)+1) - 1); above != 0 {
		return c.lv[bits.TrailingZeros16(above)].t
	}
	return 0
}

// readyScan bounds the search for a ready job past unready ones: a ready
// queue's jobs are ready by the state machine's clock, so only a Place
// called with a time behind that clock meets unready ones, and those are
// the latest arrivals.
const readyScan = 64

// firstReady is the first job after `after` (0: from the head) that is
// ready at now, or 0.
func (c *classQueue) firstReady(js []qjob, after int32, now int64) int32 {
	x := c.head
	if after != 0 {
		x = c.next(js, after)
	}
	for i := 0; x != 0 && i < readyScan; i++ {
		if js[x].ready <= now {
			return x
		}
		x = c.next(js, x)
	}
	return 0
}

func (c *classQueue) setHead(js []qjob, x int32) {
	if x == 0 {
		c.head = 0
		return
	}
	j := &js[x]
	c.head, c.hPrio, c.hSeq, c.hID, c.hReady = x, int32(prioOf(j.prio)), j.seq, j.id, j.ready
}

// flowBefore is the order of a flow's ready jobs (ordFlow): higher priority
// first, then Seq, then ID (which keeps keys unique even if a caller gives
// two jobs one Seq).
func flowBefore(x, y *qjob) bool {
	if px, py := prioOf(x.prio), prioOf(y.prio); px != py {
		return px > py
	}
	if x.seq != y.seq {
		return x.seq < y.seq
	}
	return x.id < y.id
}
