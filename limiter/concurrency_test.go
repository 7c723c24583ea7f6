package limiter

import (
	"testing"

	"pgregory.net/rapid"
)

func TestConcurrencyNeverExceedsLimit(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		limit := drawLimit(t, "limit")
		c := Concurrency{Limit: limit}
		var s ConcurrencyState
		var held []int64
		running := int64(0)
		for i := range rapid.IntRange(1, 100).Draw(t, "ops") {
			if len(held) > 0 && rapid.Bool().Draw(t, "release") {
				k := rapid.IntRange(0, len(held)-1).Draw(t, "which")
				c.Release(&s, held[k])
				running -= held[k]
				held = append(held[:k], held[k+1:]...)
			} else {
				cost := drawCost(t, limit)
				want := running+cost <= limit
				if res := c.Admit(&s, epoch, cost); res.Allowed != want {
					t.Fatalf("op %d: cost %d with %d running: allowed %v, want %v", i, cost, running, res.Allowed, want)
				} else if want {
					running += cost
					held = append(held, cost)
				}
			}
			if s.Running != running || s.Running > limit {
				t.Fatalf("op %d: %d running, model %d, limit %d", i, s.Running, running, limit)
			}
		}
	})
}
