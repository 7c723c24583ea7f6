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

// slotKey is a slot's key: in place when short, else in long.
type slotKey struct {
	n    int32  // length of the key plus one; 0 marks an empty slot
	tag  uint32 // the upper half of the key's hash, which picks its home slot
	b    [inlineKey]byte
	long string
}

func makeSlotKey(key string, h uint64) slotKey {
	k := slotKey{n: int32(len(key)) + 1, tag: uint32(h >> 32)}
	if len(key) <= inlineKey {
		copy(k.b[:], key)
	} else {
		k.long = key
	}
	return k
}

func (k *slotKey) used() bool { return k.n != 0 }

func (k *slotKey) equal(key string) bool {
	if int(k.n) != len(key)+1 {
		return false
	}
	if len(key) <= inlineKey {
		return string(k.b[:len(key)]) == key
	}
	return k.long == key
}

func (k *slotKey) String() string {
	if k.n-1 <= inlineKey {
		return string(k.b[:k.n-1])
	}
	return k.long
}

// The slots of a keyed table are an open-addressing hash table with linear probing: a key
// lives in the first slot at or after its home (tag & mask) in a run of used slots. It is at
// most maxLoadNum/maxLoadDen full, and removal shifts later slots of the run back, so there
// are no tombstones. Moving a slot moves its heap entry's target with it.
const maxLoadNum, maxLoadDen = 3, 4

// find returns the slot holding k.
func (t *keyed[S, K]) find(k hkey) (int32, bool) {
	if len(t.slots) == 0 {
		return 0, false
	}
	tag, m := uint32(k.h>>32), uint32(len(t.slots)-1)
	for i := tag & m; ; i = (i + 1) & m {
		sk := &t.slots[i].key
		if !sk.used() {
			return 0, false
		}
		if sk.tag == tag && sk.equal(k.s) {
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
	i := t.vacancy(uint32(k.h >> 32))
	t.slots[i] = slot[S]{key: makeSlotKey(k.s, k.h), pos: -1}
	t.n++
	return i
}

// vacancy returns the first empty slot of tag's run.
func (t *keyed[S, K]) vacancy(tag uint32) int32 {
	m := uint32(len(t.slots) - 1)
	i := tag & m
	for t.slots[i].key.used() {
		i = (i + 1) & m
	}
	return int32(i)
}

// resize rehashes the slots into a table of size slots (a power of two).
func (t *keyed[S, K]) resize(size int) {
	old := t.slots
	t.slots = make([]slot[S], size)
	for i := range old {
		if old[i].key.used() {
			t.put(t.vacancy(old[i].key.tag), &old[i])
		}
	}
}

// put moves the used slot *from into the empty slot i, and its heap entry with it.
func (t *keyed[S, K]) put(i int32, from *slot[S]) {
	t.slots[i] = *from
	if p := from.pos; p >= 0 {
		t.heap[p] = i
	}
}

// delete empties slot i, which is off the heap, shifting back the slots after it in its run.
func (t *keyed[S, K]) delete(i int32) {
	m := int32(len(t.slots) - 1)
	for j := (i + 1) & m; t.slots[j].key.used(); j = (j + 1) & m {
		home := int32(t.slots[j].key.tag) & m
		// Slot j may move back to the hole at i unless its home lies cyclically in (i, j].
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			t.put(i, &t.slots[j])
			i = j
		}
	}
	t.slots[i] = slot[S]{pos: -1}
	t.n--
}
