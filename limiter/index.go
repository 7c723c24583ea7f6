package limiter

import "hash/maphash"

// keySeed seeds the hash of every key table in the process: random per process, so that keys
// cannot be crafted to collide. A table's layout never changes a decision (see keyed), so
// replicas need not share it.
var keySeed = maphash.MakeSeed()

// keyHash is the hash a table files key under.
func keyHash(key string) uint64 { return maphash.String(keySeed, key) }

// hkey is a key with its keyHash: hashed once per decision, by the caller of a table.
type hkey struct {
	s string
	h uint64
}

func hashed(key string) hkey { return hkey{key, keyHash(key)} }

// inlineKey is the longest key a slot holds in place (tenant ids, IP addresses, short API
// keys), so that finding a key and its state touches one slot and nothing else.
const inlineKey = 32

// slot is a key and its state: what a decision on a held key reads and writes, and nothing
// else (the idle heap and long keys are kept beside the slots). With a state of at most 24
// bytes (every algorithm's but the sliding log's) a slot is 64 bytes and holds no pointer, so
// a table of a power of two of them starts on a cache line and a slot never straddles two:
// a decision on a key not in cache waits on one line.
type slot[S any] struct {
	tag   uint32          // the upper half of the key's hash, which picks its home slot
	n     uint32          // length of the key plus one; 0 marks an empty slot
	key   [inlineKey]byte // the key when at most inlineKey bytes; a longer one is in keyed.long
	state S
}

func (s *slot[S]) used() bool { return s.n != 0 }

// keyAt returns the key held in slot i.
func (t *keyed[S, K]) keyAt(i int32) string {
	sl := &t.slots[i]
	if int(sl.n)-1 > inlineKey {
		return t.long[i]
	}
	return string(sl.key[:sl.n-1])
}

// The slots of a keyed table are an open-addressing hash table with linear probing: a key
// lives in the first slot at or after its home (tag & mask) in a run of used slots. It is at
// most maxLoadNum/maxLoadDen full, and removal shifts later slots of the run back, so there
// are no tombstones. Moving a slot moves its heap entry's target and its long key with it.
const maxLoadNum, maxLoadDen = 3, 4

// find returns the slot holding k.
func (t *keyed[S, K]) find(k hkey) (int32, bool) {
	if len(t.slots) == 0 {
		return 0, false
	}
	tag, m, n := uint32(k.h>>32), uint32(len(t.slots)-1), uint32(len(k.s))+1
	for i := tag & m; ; i = (i + 1) & m {
		sl := &t.slots[i]
		if !sl.used() {
			return 0, false
		}
		if sl.tag != tag || sl.n != n {
			continue
		}
		if len(k.s) <= inlineKey {
			if string(sl.key[:len(k.s)]) == k.s {
				return int32(i), true
			}
		} else if t.long[i] == k.s {
			return int32(i), true
		}
	}
}

// insert gives k (not held) a slot holding a new key's state, and returns it; the caller
// pushes it on the idle heap. A long key's string is kept: the caller must own it.
func (t *keyed[S, K]) insert(k hkey) int32 {
	if maxLoadDen*(t.n+1) > maxLoadNum*len(t.slots) {
		t.resize(max(16, 2*len(t.slots)))
	}
	tag := uint32(k.h >> 32)
	i := t.vacancy(tag)
	sl := &t.slots[i]
	*sl = slot[S]{tag: tag, n: uint32(len(k.s)) + 1}
	if len(k.s) <= inlineKey {
		copy(sl.key[:], k.s)
	} else {
		if t.long == nil {
			t.long = make([]string, len(t.slots))
		}
		t.long[i] = k.s
	}
	t.pos[i] = -1
	t.n++
	return i
}

// vacancy returns the first empty slot of tag's run.
func (t *keyed[S, K]) vacancy(tag uint32) int32 {
	m := uint32(len(t.slots) - 1)
	i := tag & m
	for t.slots[i].used() {
		i = (i + 1) & m
	}
	return int32(i)
}

// resize rehashes the slots into a table of size slots (a power of two).
func (t *keyed[S, K]) resize(size int) {
	old, oldPos, oldLong := t.slots, t.pos, t.long
	t.slots, t.pos = make([]slot[S], size), make([]int32, size)
	if oldLong != nil {
		t.long = make([]string, size)
	}
	for i := range old {
		if old[i].used() {
			j := t.vacancy(old[i].tag)
			t.slots[j], t.pos[j] = old[i], oldPos[i]
			if oldLong != nil {
				t.long[j] = oldLong[i]
			}
			if p := oldPos[i]; p >= 0 {
				t.heap[p].slot = j
			}
		}
	}
}

// move moves the used slot j into the empty slot i, with its heap entry and long key.
func (t *keyed[S, K]) move(i, j int32) {
	t.slots[i], t.pos[i] = t.slots[j], t.pos[j]
	if t.long != nil {
		t.long[i] = t.long[j]
	}
	if p := t.pos[i]; p >= 0 {
		t.heap[p].slot = i
	}
}

// delete empties slot i, which is off the heap, shifting back the slots after it in its run.
func (t *keyed[S, K]) delete(i int32) {
	m := int32(len(t.slots) - 1)
	for j := (i + 1) & m; t.slots[j].used(); j = (j + 1) & m {
		home := int32(t.slots[j].tag) & m
		// Slot j may move back to the hole at i unless its home lies cyclically in (i, j].
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			t.move(i, j)
			i = j
		}
	}
	t.slots[i] = slot[S]{}
	if t.long != nil {
		t.long[i] = ""
	}
	t.n--
}
