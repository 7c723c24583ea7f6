package fsm

// blocks hands out zero values of T from blocks of blockSize, one
// allocation where there was one per value: for the records every job gets
// a few of (transitions, charges, settled admissions), the state machine's
// most frequent allocations. A block lives while any of its values does;
// jobs are forgotten about in the order they finish (retention), so blocks
// mostly go with them, and a job that lives long (queued or running for
// days) keeps at most blockSize−1 small neighbours (a transition is its
// state, times, attempt, executor and reason) with it. Job records, which
// hold a job's input, come from blocks only in the simulator (exclusive).
type blocks[T any] struct{ free []T }

const blockSize = 64

func (b *blocks[T]) new() *T {
	if len(b.free) == 0 {
		b.free = make([]T, blockSize)
	}
	v := &b.free[0]
	b.free = b.free[1:]
	return v
}
