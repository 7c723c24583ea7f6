package fsm

// timerKind says what a timer does when it fires.
type timerKind uint8

const (
	timerQueueDeadline timerKind = iota + 1
	timerRunDeadline
	timerRetention
	// timerReady marks when a delayed job (not_before, a rate rule's delay,
	// a retry backoff) becomes ready: firing it does nothing but move the
	// clock, which lets the queue take the job into its order; it also
	// makes the leader commit a Tick then.
	timerReady
)

// timer is a due time for one job. Timers are never removed early: when one
// fires, it acts only if the job's matching deadline still equals its time,
// so a stale timer is a no-op and the heap needs no deletion.
type timer struct {
	at   int64
	job  uint64
	kind timerKind
}

// timerHeap orders timers by (at, job, kind): a total order, so firing is
// deterministic. It is a binary min-heap written for timers (container/heap
// boxes each popped value into an interface: an allocation per timer).
type timerHeap []timer

func (h timerHeap) less(a, b int) bool {
	if h[a].at != h[b].at {
		return h[a].at < h[b].at
	}
	if h[a].job != h[b].job {
		return h[a].job < h[b].job
	}
	return h[a].kind < h[b].kind
}

func (h *timerHeap) push(t timer) {
	*h = append(*h, t)
	h.up(len(*h) - 1)
}

// pop removes and returns the earliest timer; the heap must not be empty.
func (h *timerHeap) pop() timer {
	old := *h
	n := len(old) - 1
	old[0], old[n] = old[n], old[0]
	t := old[n]
	*h = old[:n]
	h.down(0)
	return t
}

// init orders a heap built by appending.
func (h timerHeap) init() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (h timerHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(i, p) {
			return
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func (h timerHeap) down(i int) {
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		m := l
		if r := l + 1; r < len(h) && h.less(r, l) {
			m = r
		}
		if !h.less(m, i) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}
