package sim

// evKind says what an event does.
type evKind uint8

const (
	evArrive      evKind = iota + 1 // a: tenant
	evResubmit                      // a: pending submission (a client retrying)
	evFinish                        // a: executor, id: job, b: attempt, c: executor epoch
	evRunDeadline                   // id: job, b: attempt
	evWake                          // a queued job becomes ready: dispatch
	evCrash                         // a: executor, c: crash token
	evRepair                        // a: executor, c: executor epoch
	evDetect                        // a: executor, c: epoch whose attempts were lost
	evOutage                        // a: outage
	evFailover                      // a: failover
	evFailoverEnd                   // a: failover
	evSample                        // take a time-series sample
)

// isWork reports whether an event can move a queued or running job along;
// after arrivals stop, a run ends once no such event is left.
func (k evKind) isWork() bool {
	switch k {
	case evResubmit, evFinish, evRunDeadline, evWake, evRepair, evDetect, evFailoverEnd:
		return true
	}
	return false
}

// commits reports whether handling the event commits an entry (an
// executor's report, a run timeout's tick, a requeue): while no leader is
// up such events wait for one.
func (k evKind) commits() bool {
	return k == evFinish || k == evRunDeadline || k == evDetect
}

// event is one thing that happens at a virtual time. Events at the same
// time happen in the order they were scheduled (seq), so a run is a pure
// function of its workload and seed.
type event struct {
	at   int64
	seq  uint64
	id   uint64
	a    int32
	b    int32
	c    uint32
	kind evKind
}

func (e *event) before(o *event) bool {
	if e.at != o.at {
		return e.at < o.at
	}
	return e.seq < o.seq
}

// eventHeap is the run's future: events by (at, seq).
type eventHeap struct {
	minHeap[event, *event]
	seq  uint64
	work int // events in the heap for which kind.isWork()
}

func (q *eventHeap) len() int { return len(q.h) }

func (q *eventHeap) top() *event { return &q.h[0] }

func (q *eventHeap) push(e event) {
	q.seq++
	e.seq = q.seq
	if e.kind.isWork() {
		q.work++
	}
	q.minHeap.push(e)
}

func (q *eventHeap) pop() event {
	e := q.minHeap.pop()
	if e.kind.isWork() {
		q.work--
	}
	return e
}

// expiry is a queued job's queue deadline, as the state machine set it.
type expiry struct {
	at  int64
	id  uint64
	enq uint32 // the job's enqueue count then
}

func (a *expiry) before(b *expiry) bool {
	if a.at != b.at {
		return a.at < b.at
	}
	return a.id < b.id
}

// minHeap is a binary min-heap of values ordered by their before method.
type minHeap[T any, P interface {
	*T
	before(*T) bool
}] struct{ h []T }

func (q *minHeap[T, P]) push(x T) {
	q.h = append(q.h, x)
	h := q.h
	for i := len(h) - 1; i > 0; {
		p := (i - 1) / 2
		if !P(&h[i]).before(&h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

// heapify restores the heap order after the slice was edited.
func (q *minHeap[T, P]) heapify() {
	for i := len(q.h)/2 - 1; i >= 0; i-- {
		q.down(i)
	}
}

func (q *minHeap[T, P]) pop() T {
	h := q.h
	x := h[0]
	n := len(h) - 1
	h[0] = h[n]
	q.h = h[:n]
	q.down(0)
	return x
}

func (q *minHeap[T, P]) down(i int) {
	h := q.h
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && P(&h[r]).before(&h[l]) {
			m = r
		}
		if !P(&h[m]).before(&h[i]) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}
