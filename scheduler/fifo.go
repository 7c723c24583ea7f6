package scheduler

import "container/list"

// FIFO dispatches jobs in arrival order (Seq), skipping jobs that are not
// ready yet or fit no free slot. It guarantees that among jobs that fit the
// same slots and are ready, the earlier arrival starts first. It knows
// nothing of tenants: Start is Remove, and Stopped and Advance do nothing.
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

// Start is Remove: FIFO charges no one.
func (q *FIFO) Start(id uint64, _ int64) bool { return q.Remove(id) }

// Stopped does nothing: FIFO has no caps.
func (q *FIFO) Stopped(string) {}

// Advance does nothing: FIFO checks Ready at Place.
func (q *FIFO) Advance(int64) {}

// Place assigns ready jobs in arrival order to the first slot they fit.
func (q *FIFO) Place(now int64, slots []Slot) []Placement {
	return q.PlaceInto(nil, now, slots)
}

// PlaceInto is Place appending to dst.
func (q *FIFO) PlaceInto(dst []Placement, now int64, slots []Slot) []Placement {
	if len(slots) == 0 {
		return dst
	}
	free := make([]Slot, len(slots)) // GPUs and Jobs left
	left := 0
	for i, s := range slots {
		s.Jobs = max(s.Jobs, 1)
		free[i] = s
		left += int(s.Jobs)
	}
	for e := q.order.Front(); e != nil && left > 0; e = e.Next() {
		j := e.Value.(Job)
		if j.Ready > now {
			continue
		}
		for i := range free {
			if free[i].Jobs > 0 && Fits(j, free[i]) {
				free[i].Jobs--
				free[i].GPUs -= max(j.GPUs, 0)
				left--
				dst = append(dst, Placement{JobID: j.ID, Executor: slots[i].Executor, Slot: i})
				break
			}
		}
	}
	return dst
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

// AppendBinary encodes the queued jobs in arrival order.
func (q *FIFO) AppendBinary(b []byte) ([]byte, error) {
	b = append(b, fifoMagic...)
	b = appendUvarint(b, uint64(q.order.Len()))
	for e := q.order.Front(); e != nil; e = e.Next() {
		b = appendJob(b, e.Value.(Job))
	}
	return b, nil
}

// UnmarshalBinary replaces the queue with the jobs encoded by AppendBinary.
func (q *FIFO) UnmarshalBinary(data []byte) error {
	d := decoder{b: data}
	d.magic(fifoMagic)
	n := d.count()
	jobs := make([]Job, 0, min(n, len(data)))
	for i := 0; i < n && d.err == nil; i++ {
		jobs = append(jobs, d.job())
	}
	if err := d.finish(); err != nil {
		return err
	}
	*q = *NewFIFO()
	for _, j := range jobs {
		q.Enqueue(j)
	}
	return nil
}
