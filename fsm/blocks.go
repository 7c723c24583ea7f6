package fsm

// blocks hands out zero values of T from blocks of blockSize, one
// allocation where there was one per value: for the records every job gets
// (its record, transitions, charge, settled admission), the state
// machine's most frequent allocations. Only in the simulator's exclusive
// state: a block lives while any of its values does, so on a server one
// job that lives for days would keep its neighbours' records (and their
// inputs) with it, and a block is rounded up to a size class, which a
// server's memory per queued job would pay for.
type blocks[T any] struct{ free []T }

const blockSize = 64

// new is a zero T: from a block when on, else on its own.
func (b *blocks[T]) new(on bool) *T {
	if !on {
		return new(T)
	}
	if len(b.free) == 0 {
		b.free = make([]T, blockSize)
	}
	v := &b.free[0]
	b.free = b.free[1:]
	return v
}
