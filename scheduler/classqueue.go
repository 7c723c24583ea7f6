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
	sEpoch uint64 // Place scratch: the last job placed from this queue
	sAfter int32

	class int32
	n     int32
	mask  uint16    // bit p: level p is not empty
	lv    [10]level // by priority
}

type level struct{ h, t int32 }

func (q *FairQueue) cqPush(c *classQueue, x int32) {
	js := q.jobs
	p := prioOf(js[x].prio)
	lv := &c.lv[p]
	t := lv.t
	for t != 0 && q.fullLess(ordFlow, x, t) {
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
	if c.head == 0 || q.fullLess(ordFlow, x, c.head) {
		q.setHead(c, x)
	}
}

func (q *FairQueue) cqRemove(c *classQueue, x int32) {
	js := q.jobs
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
		q.setHead(c, q.cqFirst(c))
	}
}

func (q *FairQueue) cqFirst(c *classQueue) int32 {
	if c.mask == 0 {
		return 0
	}
	return c.lv[bits.Len16(c.mask)-1].h
}

// cqNext is the job after x in the queue's order, or 0.
func (q *FairQueue) cqNext(c *classQueue, x int32) int32 {
	if r := q.jobs[x].next; r != 0 {
		return r
	}
	if below := c.mask & (1<<prioOf(q.jobs[x].prio) - 1); below != 0 {
		return c.lv[bits.Len16(below)-1].h
	}
	return 0
}

// cqPrev is the job before x in the queue's order, or 0.
func (q *FairQueue) cqPrev(c *classQueue, x int32) int32 {
	if l := q.jobs[x].prev; l != 0 {
		return l
	}
	if above := c.mask &^ (1<<(prioOf(q.jobs[x].prio)+1) - 1); above != 0 {
		return c.lv[bits.TrailingZeros16(above)].t
	}
	return 0
}

// readyScan bounds the search for a ready job past unready ones: a ready
// queue's jobs are ready by the state machine's clock, so only a Place
// called with a time behind that clock meets unready ones, and those are
// the latest arrivals.
const readyScan = 64

// cqFirstReady is the first job after `after` (0: from the head) that is
// ready at now, or 0.
func (q *FairQueue) cqFirstReady(c *classQueue, after int32, now int64) int32 {
	x := c.head
	if after != 0 {
		x = q.cqNext(c, after)
	}
	for i := 0; x != 0 && i < readyScan; i++ {
		if q.jobs[x].ready <= now {
			return x
		}
		x = q.cqNext(c, x)
	}
	return 0
}

func (q *FairQueue) setHead(c *classQueue, x int32) {
	if x == 0 {
		c.head = 0
		return
	}
	j := &q.jobs[x]
	c.head, c.hPrio, c.hSeq, c.hID, c.hReady = x, int32(prioOf(j.prio)), j.seq, j.id, j.ready
}
