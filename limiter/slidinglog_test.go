package limiter

import (
	"testing"

	"pgregory.net/rapid"
)

func TestSlidingLogNeverAdmitsMoreThanLimitInAnyWindow(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		limit, w := rapid.Int64Range(1, 12).Draw(t, "limit"), drawWindow(t)
		l := SlidingLog{Limit: limit, Window: w}
		var s SlidingLogState
		var got []admission
		now := epoch
		for range rapid.IntRange(1, 100).Draw(t, "hits") {
			now += drawGap(t, int64(w))
			cost := drawCost(t, limit)
			if rapid.IntRange(0, 5).Draw(t, "force") == 0 {
				l.force(&s, now, cost) // usage charged after the fact: only ever restricts more
			} else if l.Admit(&s, now, cost).Allowed && cost > 0 {
				got = append(got, admission{now, cost})
			}
			if s.n > int(limit) {
				t.Fatalf("log holds %d entries, bound %d", s.n, limit)
			}
		}
		for i := range got {
			sum := int64(0)
			for j := i; j < len(got) && got[j].at-got[i].at < int64(w); j++ {
				sum += got[j].cost
			}
			if sum > limit {
				t.Fatalf("admitted %d units in a window of %v from %d, limit %d", sum, w, got[i].at, limit)
			}
		}
	})
}

func TestSlidingLogNeverRefusesAHitThatFits(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		limit, w := rapid.Int64Range(1, 12).Draw(t, "limit"), drawWindow(t)
		l := SlidingLog{Limit: limit, Window: w}
		var s SlidingLogState
		var got []admission
		now := epoch
		for i := range rapid.IntRange(1, 100).Draw(t, "hits") {
			now += drawGap(t, int64(w))
			cost := drawCost(t, limit)
			used := int64(0)
			for _, a := range got {
				if a.at > now-int64(w) {
					used += a.cost
				}
			}
			want := used+cost <= limit
			res := l.Admit(&s, now, cost)
			if res.Allowed != want || res.Remaining != max(0, limit-used-cost*b2i(want)) {
				t.Fatalf("hit %d: cost %d with %d used in the window: %+v, want allowed %v", i, cost, used, res, want)
			}
			if want && cost > 0 {
				got = append(got, admission{now, cost})
			}
		}
	})
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
