package limiter

import (
	"math/big"
	"testing"

	"pgregory.net/rapid"
)

// The stated bound: at most Limit per aligned window, and in the interval of length Window
// ending at any admission t, at most Limit + ⌊P×e/Window⌋ ≤ 2×Limit−1, where e is t's offset
// in its window and P what the previous window admitted.
func TestSlidingCounterStaysWithinItsErrorBound(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		limit, w := drawLimit(t, "limit"), drawWindow(t)
		win := int64(w)
		c := SlidingCounter{Limit: limit, Window: w}
		var s SlidingCounterState
		var got []admission
		now := epoch
		for range rapid.IntRange(1, 100).Draw(t, "hits") {
			now += drawGap(t, win)
			cost := drawCost(t, limit)
			if c.Admit(&s, now, cost).Allowed && cost > 0 {
				got = append(got, admission{now, cost})
			}
		}
		perWindow := map[int64]int64{}
		for _, a := range got {
			perWindow[floorDiv(a.at, win)] += a.cost
		}
		for k, n := range perWindow {
			if n > limit {
				t.Fatalf("aligned window %d admitted %d, limit %d", k, n, limit)
			}
		}
		for _, end := range got {
			inWindow := int64(0)
			for _, a := range got {
				if a.at > end.at-win && a.at <= end.at {
					inWindow += a.cost
				}
			}
			k := floorDiv(end.at, win)
			prev, e := perWindow[k-1], end.at-k*win
			bound := limit + new(big.Int).Div(new(big.Int).Mul(big.NewInt(prev), big.NewInt(e)), big.NewInt(win)).Int64()
			if inWindow > bound || inWindow > 2*limit-1 {
				t.Fatalf("admitted %d in the window ending at %d (prev %d, e %d), bound %d, limit %d", inWindow, end.at, prev, e, bound, limit)
			}
		}
	})
}

// The counter admits exactly what its estimate lets through, no less: a counter that refused
// everything would pass the bound above.
func TestSlidingCounterAdmitsWhatItsEstimateAllows(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		limit, w := drawLimit(t, "limit"), drawWindow(t)
		win := int64(w)
		c := SlidingCounter{Limit: limit, Window: w}
		var s SlidingCounterState
		perWindow := map[int64]int64{}
		now := epoch
		for i := range rapid.IntRange(1, 100).Draw(t, "hits") {
			now += drawGap(t, win)
			cost := drawCost(t, limit)
			k := floorDiv(now, win)
			prev, e := perWindow[k-1], now-k*win
			// ⌈prev × (win−e) / win⌉ in exact arithmetic.
			weighted := new(big.Int).Mul(big.NewInt(prev), big.NewInt(win-e))
			weighted.Add(weighted, big.NewInt(win-1))
			weighted.Div(weighted, big.NewInt(win))
			est := perWindow[k] + weighted.Int64()
			want := est+cost <= limit
			if res := c.Admit(&s, now, cost); res.Allowed != want {
				t.Fatalf("hit %d: cost %d, estimate %d (curr %d prev %d e %d): allowed %v, want %v",
					i, cost, est, perWindow[k], prev, e, res.Allowed, want)
			}
			if want {
				perWindow[k] += cost
			}
		}
	})
}
