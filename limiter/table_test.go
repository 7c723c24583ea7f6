package limiter

import (
	"fmt"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// invariants checks the key table's bookkeeping: the index and the live slots agree, the
// idle heap is a heap over exactly the live slots, and each slot's idle time is a lower bound
// on when its state really becomes idle (the sweep relies on that to skip work).
func (t *keyed[S, K]) invariants() error {
	live := 0
	for i := range t.slots {
		sl := &t.slots[i]
		if !sl.key.used() {
			continue
		}
		live++
		key := sl.key.String()
		if j, ok := t.find(hashed(key)); !ok || j != int32(i) {
			return fmt.Errorf("slot %d (%q) is not found by its key", i, key)
		}
		if int(sl.pos) >= len(t.heap) || sl.pos < 0 || t.heap[sl.pos] != int32(i) {
			return fmt.Errorf("slot %d is not at its heap position %d", i, sl.pos)
		}
		if real := t.k.idleAt(sl.state); sl.idle > real {
			return fmt.Errorf("slot %q: heap says idle at %d, really %d", key, sl.idle, real)
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
			if ok != held || (ok && tb.slots[got].key.String() != key) {
				t.Fatalf("op %d: find %q = %d,%v; held %v", i, key, got, ok, held)
			}
			if ok {
				tb.remove(int(tb.slots[got].pos))
				tb.delete(got)
				delete(hashes, key)
			} else {
				tb.push(tb.insert(hkey{key, h}), rapid.Int64Range(0, 10).Draw(t, "idle"))
				hashes[key] = h
			}
			if tb.n != len(hashes) || len(tb.heap) != tb.n {
				t.Fatalf("op %d: table holds %d, heap %d, want %d", i, tb.n, len(tb.heap), len(hashes))
			}
			for p, s := range tb.heap {
				if tb.slots[s].pos != int32(p) || !tb.slots[s].key.used() {
					t.Fatalf("op %d: heap entry %d points at slot %d, which says %d", i, p, s, tb.slots[s].pos)
				}
			}
		}
		for key, h := range hashes {
			if got, ok := tb.find(hkey{key, h}); !ok || tb.slots[got].key.String() != key {
				t.Fatalf("%q lost", key)
			}
		}
	})
}
