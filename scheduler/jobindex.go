package scheduler

// jobIndex finds a queued job's arena index by its ID. It is an
// open-addressing table of arena indices (0 is empty) with linear probing,
// at most half full; an entry holds no ID, the job record does, so a
// lookup reads one 4-byte entry and then the job record that its caller
// reads anyway. Removal shifts later entries of the run back (no
// tombstones). IDs are the state machine's log indices, not chosen by
// clients, so a fixed multiplicative hash spreads them.
type jobIndex struct {
	slots []int32
	n     int
}

func idHash(id uint64) uint32 { return uint32((id * 0x9E3779B97F4A7C15) >> 32) }

// find returns the arena index of the queued job with this ID; js is the
// job arena the indices point into.
func (ix *jobIndex) find(js []qjob, id uint64) (int32, bool) {
	if len(ix.slots) == 0 {
		return 0, false
	}
	m := uint32(len(ix.slots) - 1)
	for i := idHash(id) & m; ; i = (i + 1) & m {
		x := ix.slots[i]
		if x == 0 {
			return 0, false
		}
		if js[x].id == id {
			return x, true
		}
	}
}

// add files job x, whose ID must not be filed yet.
func (ix *jobIndex) add(js []qjob, x int32) {
	if 2*(ix.n+1) > len(ix.slots) {
		old := ix.slots
		ix.slots = make([]int32, max(16, 2*len(old)))
		for _, y := range old {
			if y != 0 {
				ix.put(js, y)
			}
		}
	}
	ix.put(js, x)
	ix.n++
}

func (ix *jobIndex) put(js []qjob, x int32) {
	m := uint32(len(ix.slots) - 1)
	i := idHash(js[x].id) & m
	for ix.slots[i] != 0 {
		i = (i + 1) & m
	}
	ix.slots[i] = x
}

// remove takes out job x, which must be filed (its record still holds its ID).
func (ix *jobIndex) remove(js []qjob, x int32) {
	m := uint32(len(ix.slots) - 1)
	i := idHash(js[x].id) & m
	for ix.slots[i] != x {
		i = (i + 1) & m
	}
	for j := (i + 1) & m; ix.slots[j] != 0; j = (j + 1) & m {
		home := idHash(js[ix.slots[j]].id) & m
		// The entry at j may move back to the hole at i unless its home lies
		// cyclically in (i, j].
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			ix.slots[i] = ix.slots[j]
			i = j
		}
	}
	ix.slots[i] = 0
	ix.n--
}

// each calls fn with every arena index in the table, in table order.
func (ix *jobIndex) each(fn func(x int32)) {
	for _, x := range ix.slots {
		if x != 0 {
			fn(x)
		}
	}
}
