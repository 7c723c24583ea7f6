package limiter

import (
	"fmt"
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
		if sl.pos < 0 {
			continue
		}
		live++
		if j, ok := t.index[sl.key]; !ok || j != int32(i) {
			return fmt.Errorf("slot %d (%q) is not indexed", i, sl.key)
		}
		if int(sl.pos) >= len(t.heap) || t.heap[sl.pos] != int32(i) {
			return fmt.Errorf("slot %d is not at its heap position %d", i, sl.pos)
		}
		if real := t.k.idleAt(sl.state); sl.idle > real {
			return fmt.Errorf("slot %q: heap says idle at %d, really %d", sl.key, sl.idle, real)
		}
	}
	if live != len(t.index) || live != len(t.heap) || live+len(t.free) != len(t.slots) {
		return fmt.Errorf("%d live slots, %d indexed, %d in the heap, %d free of %d", live, len(t.index), len(t.heap), len(t.free), len(t.slots))
	}
	for p := 1; p < len(t.heap); p++ {
		if t.less(p, (p-1)/2) {
			return fmt.Errorf("heap order broken at %d", p)
		}
	}
	if len(t.index) > t.maxKeys {
		return fmt.Errorf("%d keys held, bound %d", len(t.index), t.maxKeys)
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
			cost := drawCost(t, sc.limit)
			switch rapid.IntRange(0, 9).Draw(t, "op") {
			case 0:
				tb.charge(key, now, cost)
			case 1, 2:
				tb.refund(key, now, now-rapid.Int64Range(0, sc.unit).Draw(t, "ago"), cost)
			case 3:
				tb.sweep(now)
			default:
				tb.admit(key, now, cost)
			}
			if err := check.invariants(); err != nil {
				t.Fatalf("op %d: %v", i, err)
			}
		}
	})
}
