package scheduler

import "container/list"

// FIFO dispatches jobs in arrival order (Seq), skipping jobs that are not
// ready yet or fit no free slot. It guarantees that among jobs that fit the
// same slots and are ready, the earlier arrival starts first.
type FIFO struct {
	order *list.List // of Job, ascending Seq
	byID  map[uint64]*list.Element
}

// NewFIFO returns an empty FIFO queue.
func NewFIFO() *FIFO {
	return &FIFO{order: list.New(), byID: make(map[uint64]*list.Element)}
}

// Enqueue adds j, keeping arrival order even if Seq arrives out of order.
func (q *FIFO) Enqueue(j Job) {
	if _, ok := q.byID[j.ID]; ok {
		return
	}
	e := q.order.Back()
	for e != nil && e.Value.(Job).Seq > j.Seq {
		e = e.Prev()
	}
	if e == nil {
		q.byID[j.ID] = q.order.PushFront(j)
	} else {
		q.byID[j.ID] = q.order.InsertAfter(j, e)
	}
}

// Remove takes the job with the given id out of the queue.
func (q *FIFO) Remove(id uint64) bool {
	e, ok := q.byID[id]
	if !ok {
		return false
	}
	q.order.Remove(e)
	delete(q.byID, id)
	return true
}

// Place assigns ready jobs in arrival order to the first free slot they fit.
func (q *FIFO) Place(now int64, slots []Slot) []Placement {
	if len(slots) == 0 {
		return nil
	}
	used := make([]bool, len(slots))
	free := len(slots)
	var out []Placement
	for e := q.order.Front(); e != nil && free > 0; e = e.Next() {
		j := e.Value.(Job)
		if j.Ready > now {
			continue
		}
		for i := range slots {
			if !used[i] && Fits(j, slots[i]) {
				used[i] = true
				free--
				out = append(out, Placement{JobID: j.ID, Executor: slots[i].Executor})
				break
			}
		}
	}
	return out
}

// Position counts the jobs ahead of id, plus one.
func (q *FIFO) Position(id uint64) (int, bool) {
	if _, ok := q.byID[id]; !ok {
		return 0, false
	}
	n := 1
	for e := q.order.Front(); e != nil; e = e.Next() {
		if e.Value.(Job).ID == id {
			return n, true
		}
		n++
	}
	return 0, false
}

// Len is the number of queued jobs.
func (q *FIFO) Len() int { return q.order.Len() }

// Ascend visits queued jobs in arrival order.
func (q *FIFO) Ascend(fn func(Job) bool) {
	for e := q.order.Front(); e != nil; e = e.Next() {
		if !fn(e.Value.(Job)) {
			return
		}
	}
}
