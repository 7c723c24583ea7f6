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
// deterministic.
type timerHeap []timer

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(a, b int) bool {
	if h[a].at != h[b].at {
		return h[a].at < h[b].at
	}
	if h[a].job != h[b].job {
		return h[a].job < h[b].job
	}
	return h[a].kind < h[b].kind
}
func (h timerHeap) Swap(a, b int) { h[a], h[b] = h[b], h[a] }
func (h *timerHeap) Push(x any)   { *h = append(*h, x.(timer)) }
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	*h = old[:len(old)-1]
	return t
}
