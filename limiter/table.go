package limiter

import (
	"encoding/binary"
	"slices"
	"strings"
)

// kernel is the engine-facing side of an algorithm over its per-key state S. eval never
// mutates; admit mutates only when it allows a positive cost; a rejected hit leaves the state
// untouched.
type kernel[S any] interface {
	// eval decides a hit on s and returns the state after admitting it (for SlidingLog, s:
	// commit builds that state in place).
	eval(s S, now, cost int64) (verdict, S)
	// commit stores a hit that eval allowed: next is eval's state.
	commit(s *S, next S, now, cost int64)
	// admit is eval then, if allowed, commit.
	admit(s *S, now, cost int64) verdict
	// force charges cost whatever the limit (a delayed admission, or a settled overrun) and
	// returns the result after the charge.
	force(s *S, now, cost int64) verdict
	// refund gives back cost units charged at time at (for concurrency caps: releases them).
	refund(s *S, now, at, cost int64)
	// idleAt is the time from which s is indistinguishable from a new key's state:
	// math.MinInt64 when it already is, math.MaxInt64 when only a mutation can make it so.
	idleAt(s S) int64
	appendState(b []byte, s S) []byte
	readState(d *decoder, s *S)
	appendParams(b []byte) []byte
	// limit is the Limit of a Result.
	limit() int64
}

// ref says where a key's state lives in a table: a slot index (≥ 0), or one of these.
type ref int32

const (
	refNew      ref = -1 // absent; it gets its own slot when charged
	refOverflow ref = -2 // absent and the table is full: it shares the overflow state
	refFull     ref = -3 // absent, the table is full and the rule has no overflow: rejected
)

// table is a keyed set of states for one algorithm; the Engine keeps one per rule and
// Sharded one per shard.
type table interface {
	// evaluate decides a hit without charging. With commit it may first drop idle keys
	// (which never changes a decision) and remembers the hit for commit.
	evaluate(k hkey, now, cost int64, commit bool) (verdict, ref)
	// commit charges the hit the last evaluate allowed, at the place ref names.
	commit(k hkey, r ref, now, cost int64)
	// force charges a hit whatever the limit and returns the result after it.
	force(k hkey, r ref, now, cost int64) verdict
	admit(k hkey, now, cost int64) verdict
	charge(k hkey, now, cost int64)
	refund(k hkey, now, at, cost int64)
	sweep(now int64) int
	len() int
	appendParams(b []byte) []byte
	appendSnapshot(b []byte) []byte
	// freeze copies the state and returns what appends its appendSnapshot later.
	freeze() func(b []byte) []byte
	restore(d *decoder)
	canDelay() bool
	// limit is the Limit of the algorithm's Results.
	limit() int64
}

// keyed is a table: a hash table of slots, each a key with its state (index.go), an idle
// heap, and one overflow state shared by new keys once maxKeys keys are held.
//
// What the table holds is a function of the hits it was given, never of the hash seed or
// slot layout: a sweep drops exactly the keys that are idle (see kernel.idleAt), and a new
// key finds the table full exactly when maxKeys keys that are not idle are held. The idle heap
// makes that check O(1) when nothing is idle, and O(log n) per key dropped or refreshed.
type keyed[S any, K kernel[S]] struct {
	k        K
	delays   bool // the algorithm can charge into debt, so the Delay action applies
	overflow bool // new keys share overflowState when full; otherwise they are rejected
	maxKeys  int

	slots []slot[S] // a power of two of them, or none (index.go)
	// Beside the slots, indexed alike and read by no decision on a held key: each used
	// slot's place in the heap (-1 until pushed), and each long key (nil until one is held).
	pos  []int32
	long []string
	n    int         // used slots
	heap []heapEntry // the used slots, a min-heap on idle

	overflowState S
	pending       S // the state after the hit evaluate last allowed, for commit
}

// heapEntry is a used slot on the idle heap.
type heapEntry struct {
	// idle is a lower bound on idleAt(state): a charge of a positive cost only raises idleAt
	// (a state not yet idle keeps its absolute idle time as time passes; one already idle
	// becomes busy past now), so it goes stale upwards and is refreshed at the top of the
	// heap; refunds, which lower idleAt, move the entry up.
	idle int64
	slot int32
}

func newKeyed[S any, K kernel[S]](k K, maxKeys int, delays, overflow bool) *keyed[S, K] {
	return &keyed[S, K]{
		k:        k,
		delays:   delays,
		overflow: overflow,
		maxKeys:  maxKeys,
	}
}

// locate finds key's state. With sweep, a full table first drops its idle keys; without
// (read-only callers), a full table that has an idle candidate answers refNew.
func (t *keyed[S, K]) locate(k hkey, now int64, sweep bool) ref {
	if i, ok := t.find(k); ok {
		return ref(i)
	}
	if t.n < t.maxKeys {
		return refNew
	}
	if len(t.heap) > 0 && t.heap[0].idle <= now {
		if !sweep {
			return refNew
		}
		t.sweep(now)
		if t.n < t.maxKeys {
			return refNew
		}
	}
	if t.overflow {
		return refOverflow
	}
	return refFull
}

func (t *keyed[S, K]) evaluate(k hkey, now, cost int64, commit bool) (verdict, ref) {
	r := t.locate(k, now, commit)
	var s S
	switch r {
	case refNew:
	case refOverflow:
		s = t.overflowState
	case refFull:
		res, _ := t.k.eval(s, now, 0)
		res.allowed, res.remaining, res.at = false, 0, 0
		if cost > t.k.limit() {
			res.at = Never
		}
		return res, r
	default:
		s = t.slots[r].state
	}
	res, next := t.k.eval(s, now, cost)
	if commit {
		t.pending = next
	}
	return res, r
}

// place returns the state ref names, giving k a slot if it is new.
func (t *keyed[S, K]) place(k hkey, r ref) (s *S, inserted int32) {
	switch r {
	case refFull:
		return nil, -1
	case refOverflow:
		return &t.overflowState, -1
	case refNew:
		if len(k.s) > inlineKey {
			k.s = strings.Clone(k.s) // the table must not pin the caller's buffer
		}
		i := t.insert(k)
		return &t.slots[i].state, i
	}
	return &t.slots[r].state, -1
}

func (t *keyed[S, K]) commit(k hkey, r ref, now, cost int64) {
	s, i := t.place(k, r)
	if s == nil {
		return
	}
	t.k.commit(s, t.pending, now, cost)
	if i >= 0 {
		t.push(i, t.k.idleAt(*s))
	}
}

func (t *keyed[S, K]) force(k hkey, r ref, now, cost int64) verdict {
	if cost <= 0 {
		// Nothing to charge. Forcing 0 would only normalise the state, which can bring its
		// idle time forward, and the idle heap counts on charges never doing that.
		res, _ := t.evaluate(k, now, 0, false)
		return res
	}
	s, i := t.place(k, r)
	if s == nil {
		return verdict{}
	}
	res := t.k.force(s, now, cost)
	if i >= 0 {
		t.push(i, t.k.idleAt(*s))
	}
	return res
}

// admit decides and charges one hit: one lookup, one evaluation for a key already held.
func (t *keyed[S, K]) admit(k hkey, now, cost int64) verdict {
	if i, ok := t.find(k); ok {
		return t.k.admit(&t.slots[i].state, now, cost)
	}
	res, r := t.evaluate(k, now, cost, true)
	if res.allowed && cost > 0 {
		t.commit(k, r, now, cost)
	}
	return res
}

// charge forces cost onto key's state (a settled overrun); a full table without overflow
// has no state to charge.
func (t *keyed[S, K]) charge(k hkey, now, cost int64) {
	t.force(k, t.locate(k, now, true), now, cost)
}

// refund gives cost back to key's state. A key absent from the table holds nothing to refund:
// either it was idle and swept, or it was charged in the overflow state, which is not refunded
// (refunding it for a key that has since got a slot would make sweeping change decisions;
// the overflow state recovers with time instead).
func (t *keyed[S, K]) refund(k hkey, now, at, cost int64) {
	i, ok := t.find(k)
	if !ok {
		return
	}
	s := &t.slots[i].state
	t.k.refund(s, now, at, cost)
	p := t.pos[i]
	if idle := t.k.idleAt(*s); idle < t.heap[p].idle {
		t.heap[p].idle = idle
		t.up(int(p))
	}
}

// sweep drops every key whose state is indistinguishable from a new key's at now, and
// returns how many it dropped.
func (t *keyed[S, K]) sweep(now int64) int {
	dropped := 0
	for len(t.heap) > 0 {
		e := &t.heap[0]
		if e.idle > now {
			break
		}
		i := e.slot
		if idle := t.k.idleAt(t.slots[i].state); idle > now {
			e.idle = idle
			t.down(0)
			continue
		}
		t.remove(0)
		t.delete(i)
		dropped++
	}
	return dropped
}

func (t *keyed[S, K]) push(i int32, idle int64) {
	t.pos[i] = int32(len(t.heap))
	t.heap = append(t.heap, heapEntry{idle, i})
	t.up(len(t.heap) - 1)
}

func (t *keyed[S, K]) remove(p int) {
	last := len(t.heap) - 1
	t.swap(p, last)
	t.heap = t.heap[:last]
	if p < last {
		t.down(p)
		t.up(p)
	}
}

func (t *keyed[S, K]) less(a, b int) bool {
	return t.heap[a].idle < t.heap[b].idle
}

func (t *keyed[S, K]) swap(a, b int) {
	h := t.heap
	h[a], h[b] = h[b], h[a]
	t.pos[h[a].slot] = int32(a)
	t.pos[h[b].slot] = int32(b)
}

func (t *keyed[S, K]) up(p int) {
	for p > 0 {
		parent := (p - 1) / 2
		if !t.less(p, parent) {
			return
		}
		t.swap(p, parent)
		p = parent
	}
}

func (t *keyed[S, K]) down(p int) {
	n := len(t.heap)
	for {
		c := 2*p + 1
		if c >= n {
			return
		}
		if c+1 < n && t.less(c+1, c) {
			c++
		}
		if !t.less(c, p) {
			return
		}
		t.swap(p, c)
		p = c
	}
}

func (t *keyed[S, K]) len() int                     { return t.n }
func (t *keyed[S, K]) appendParams(b []byte) []byte { return t.k.appendParams(b) }
func (t *keyed[S, K]) canDelay() bool               { return t.delays }
func (t *keyed[S, K]) limit() int64                 { return t.k.limit() }

// appendSnapshot writes the overflow state, then every held key in byte order with its state.
func (t *keyed[S, K]) appendSnapshot(b []byte) []byte {
	b = t.k.appendState(b, t.overflowState)
	type held struct {
		key  string
		slot int32
	}
	order := make([]held, 0, t.n)
	for i := range t.slots {
		if t.slots[i].used() {
			order = append(order, held{t.keyAt(int32(i)), int32(i)})
		}
	}
	slices.SortFunc(order, func(x, y held) int { return strings.Compare(x.key, y.key) })
	b = binary.AppendUvarint(b, uint64(len(order)))
	for _, h := range order {
		b = appendString(b, h.key)
		b = t.k.appendState(b, t.slots[h.slot].state)
	}
	return b
}

// freeze copies the held slots (and their long keys) into a table of their own, packed:
// appendSnapshot reads nothing else, and sorts the keys anyway.
func (t *keyed[S, K]) freeze() func(b []byte) []byte {
	f := &keyed[S, K]{k: t.k, overflowState: t.overflowState, n: t.n, slots: make([]slot[S], 0, t.n)}
	if t.long != nil {
		f.long = make([]string, 0, t.n)
	}
	for i := range t.slots {
		if t.slots[i].used() {
			f.slots = append(f.slots, t.slots[i])
			if t.long != nil {
				f.long = append(f.long, t.long[i])
			}
		}
	}
	// A state that holds memory of its own (a sliding log's ring) is copied too: the
	// table changes it in place.
	if c, ok := any(t.k).(interface{ cloneState(S) S }); ok {
		f.overflowState = c.cloneState(f.overflowState)
		for i := range f.slots {
			f.slots[i].state = c.cloneState(f.slots[i].state)
		}
	}
	return f.appendSnapshot
}

// restore reads what appendSnapshot wrote into this empty table. Keys must be in strictly
// increasing order, so that a snapshot has exactly one encoding.
func (t *keyed[S, K]) restore(d *decoder) {
	t.k.readState(d, &t.overflowState)
	n := d.count(t.maxKeys, 2)
	t.slots, t.pos, t.long, t.n = nil, nil, nil, 0
	if n > 0 {
		size := 16
		for maxLoadDen*n > maxLoadNum*size {
			size *= 2
		}
		t.slots, t.pos = make([]slot[S], size), make([]int32, size)
	}
	t.heap = make([]heapEntry, 0, n)
	prev := ""
	for i := 0; i < n && d.err == nil; i++ {
		key := d.string()
		d.check(i == 0 || key > prev, "keys out of order at %q", key)
		var s S
		t.k.readState(d, &s)
		j := t.insert(hashed(key))
		t.slots[j].state = s
		t.push(j, t.k.idleAt(s))
		prev = key
	}
}
