package limiter

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pgregory.net/rapid"
)

func TestShardedDecidesLikeOneTable(t *testing.T) {
	forEachAlgorithm(t, func(t *rapid.T, sc scenario) {
		s, err := NewSharded(sc.alg, 1000)
		if err != nil {
			t.Fatal(err)
		}
		one := sc.alg.newTable(1000)
		now := epoch
		for i := range rapid.IntRange(1, 60).Draw(t, "hits") {
			now += drawGap(t, sc.unit)
			key := fmt.Sprint("k", rapid.IntRange(0, 20).Draw(t, "key"))
			cost := drawCost(t, sc.limit)
			if rapid.IntRange(0, 5).Draw(t, "refund") == 0 {
				s.Refund(key, now, now, cost)
				one.refund(hashed(key), now, now, cost)
				continue
			}
			if a, b := s.Admit(key, now, cost), one.admit(hashed(key), now, cost).result(one.limit(), now); a != b {
				t.Fatalf("hit %d on %s: sharded %+v, one table %+v", i, key, a, b)
			}
		}
		if s.Len() != one.len() {
			t.Fatalf("sharded holds %d keys, one table %d", s.Len(), one.len())
		}
	})
}

func TestShardedIsSafeForConcurrentUse(t *testing.T) {
	const limit = 3
	s, err := NewSharded(Concurrency{Limit: limit}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var running, peak atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				now := epoch + int64(i)*int64(time.Microsecond)
				if !s.Admit("gpu", now, 1).Allowed {
					s.Check("gpu", now, 1)
					continue
				}
				n := running.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				running.Add(-1)
				s.Refund("gpu", now, now, 1)
				if g == 0 && i%500 == 0 {
					s.Sweep(now)
				}
			}
		}()
	}
	wg.Wait()
	if peak.Load() > limit {
		t.Fatalf("%d running at once, cap %d", peak.Load(), limit)
	}
	if r := s.Check("gpu", epoch, limit); !r.Allowed {
		t.Fatalf("after every release the cap is not free: %+v", r)
	}
}
