package limiter

import (
	"fmt"
	"strings"
	"testing"
	"time"
	"unsafe"

	"pgregory.net/rapid"
)

// invariants checks the key table's bookkeeping: the index and the live slots agree, the
// idle heap is a heap over exactly the live slots, and each slot's idle time is a lower bound
// on when its state really becomes idle (the sweep relies on that to skip work).
func (t *keyed[S, K]) invariants() error {
	live := 0
	for i := range t.slots {
		sl, p := &t.slots[i], t.pos[i]
		if !sl.used() {
			if t.long != nil && t.long[i] != "" {
				return fmt.Errorf("empty slot %d holds a long key", i)
			}
			continue
		}
		live++
		key := t.keyAt(int32(i))
		if j, ok := t.find(hashed(key)); !ok || j != int32(i) {
			return fmt.Errorf("slot %d (%q) is not found by its key", i, key)
		}
		if int(p) >= len(t.heap) || p < 0 || t.heap[p].slot != int32(i) {
			return fmt.Errorf("slot %d is not at its heap position %d", i, p)
		}
		if real := t.k.idleAt(sl.state); t.heap[p].idle > real {
			return fmt.Errorf("slot %q: heap says idle at %d, really %d", key, t.heap[p].idle, real)
		}
	}
	if live != t.n || live != len(t.heap) || maxLoadDen*live > maxLoadNum*len(t.slots) {
		return fmt.Errorf("%d used slots of %d, %d counted, %d in the heap", live, len(t.slots), t.n, len(t.heap))
	}
	for p := 1; p < len(t.heap); p++ {
		if t.less(p, (p-1)/2) {
			return fmt.Errorf("heap order broken at %d", p)
		}
	}
	if t.n > t.maxKeys {
		return fmt.Errorf("%d keys held, bound %d", t.n, t.maxKeys)
	}
	return nil
}

func TestKeyTableKeepsItsInvariants(t *testing.T) {
	forEachAlgorithm(t, func(t *rapid.T, sc scenario) {
		tb := sc.alg.newTable(rapid.IntRange(1, 6).Draw(t, "maxKeys"))
		check := tb.(interface{ invariants() error })
		now := epoch
		for i := range rapid.IntRange(1, 100).Draw(t, "ops") {
			now += drawGap(t, sc.unit)
			key := fmt.Sprint(rapid.IntRange(0, 9).Draw(t, "key"))
			if rapid.Bool().Draw(t, "long") {
				key = strings.Repeat("k", inlineKey) + key // held out of place
			}
			cost := drawCost(t, sc.limit)
			switch rapid.IntRange(0, 9).Draw(t, "op") {
			case 0:
				tb.charge(hashed(key), now, cost)
			case 1, 2:
				tb.refund(hashed(key), now, now-rapid.Int64Range(0, sc.unit).Draw(t, "ago"), cost)
			case 3:
				tb.sweep(now)
			default:
				tb.admit(hashed(key), now, cost)
			}
			if err := check.invariants(); err != nil {
				t.Fatalf("op %d: %v", i, err)
			}
		}
	})
}

// TestKeySlotsAgreeWithAMap drives a table's slots with few distinct hashes, so that runs
// collide, wrap around the end of the table and are shifted back on removal, and checks every
// lookup, and the heap's slot indices, against a map.
func TestKeySlotsAgreeWithAMap(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		tb := newKeyed[ConcurrencyState](Concurrency{Limit: 1}, 1<<20, false, false)
		hashes := map[string]uint64{}
		for i := range rapid.IntRange(1, 300).Draw(t, "ops") {
			key := fmt.Sprint(rapid.IntRange(0, 40).Draw(t, "key"))
			if rapid.IntRange(0, 4).Draw(t, "long") == 0 {
				key += strings.Repeat("x", inlineKey)
			}
			h, held := hashes[key]
			if !held {
				// A tag near the top wraps runs past the table's end.
				h = uint64(rapid.SampledFrom([]uint32{0, 1, 7, 0xFFFFFFFF, 0xFFFFFFFE}).Draw(t, "tag")) << 32
			}
			got, ok := tb.find(hkey{key, h})
			if ok != held || (ok && tb.keyAt(got) != key) {
				t.Fatalf("op %d: find %q = %d,%v; held %v", i, key, got, ok, held)
			}
			if ok {
				tb.remove(int(tb.pos[got]))
				tb.delete(got)
				delete(hashes, key)
			} else {
				tb.push(tb.insert(hkey{key, h}), rapid.Int64Range(0, 10).Draw(t, "idle"))
				hashes[key] = h
			}
			if tb.n != len(hashes) || len(tb.heap) != tb.n {
				t.Fatalf("op %d: table holds %d, heap %d, want %d", i, tb.n, len(tb.heap), len(hashes))
			}
			for p, e := range tb.heap {
				if tb.pos[e.slot] != int32(p) || !tb.slots[e.slot].used() {
					t.Fatalf("op %d: heap entry %d points at slot %d, which says %d", i, p, e.slot, tb.pos[e.slot])
				}
			}
		}
		for key, h := range hashes {
			if got, ok := tb.find(hkey{key, h}); !ok || tb.keyAt(got) != key {
				t.Fatalf("%q lost", key)
			}
		}
	})
}

// A decision on a held key reads one cache line: a slot whose state is at most 24 bytes is 64
// bytes, and a table of them starts on a 64-byte boundary, however large it grows.
func TestSlotsOfSmallStatesFillOneCacheLineEach(t *testing.T) {
	sizes := map[string]uintptr{
		"token bucket":    unsafe.Sizeof(slot[TokenBucketState]{}),
		"gcra":            unsafe.Sizeof(slot[GCRAState]{}),
		"leaky queue":     unsafe.Sizeof(slot[LeakyQueueState]{}),
		"fixed window":    unsafe.Sizeof(slot[FixedWindowState]{}),
		"sliding counter": unsafe.Sizeof(slot[SlidingCounterState]{}),
		"concurrency":     unsafe.Sizeof(slot[ConcurrencyState]{}),
		"quota":           unsafe.Sizeof(slot[QuotaState]{}),
	}
	for name, size := range sizes {
		if size > 64 {
			t.Errorf("a %s slot is %d bytes, more than a cache line", name, size)
		}
	}
	tb := newKeyed[TokenBucketState](TokenBucket{Rate: Rate{N: 1, Per: time.Second}, Burst: 1}, 1<<20, true, true)
	for i := range 100_000 {
		tb.charge(hashed(fmt.Sprint(i)), epoch, 1)
		if len(tb.slots) > 0 && uintptr(unsafe.Pointer(&tb.slots[0]))%64 != 0 {
			t.Fatalf("a table of %d slots starts at %p, inside a cache line", len(tb.slots), &tb.slots[0])
		}
	}
}
