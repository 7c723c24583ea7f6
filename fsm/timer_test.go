package fsm

import (
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// The timer heap pops timers in (at, job, kind) order, whether they were
// pushed one by one or appended and ordered with init, interleaved with pops.
func TestTimerHeapPopsInOrder(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		draw := func(label string) timer {
			return timer{at: rapid.Int64Range(0, 20).Draw(t, label+"at"), job: rapid.Uint64Range(0, 5).Draw(t, label+"job"),
				kind: timerKind(rapid.IntRange(1, 4).Draw(t, label+"kind"))}
		}
		var h timerHeap
		var model []timer
		for range rapid.IntRange(0, 20).Draw(t, "initial") {
			tm := draw("i")
			h = append(h, tm)
			model = append(model, tm)
		}
		h.init()
		cmpTimer := func(a, b timer) int {
			switch {
			case a.at != b.at:
				return int(a.at - b.at)
			case a.job != b.job:
				if a.job < b.job {
					return -1
				}
				return 1
			}
			return int(a.kind) - int(b.kind)
		}
		for range rapid.IntRange(0, 60).Draw(t, "ops") {
			if len(model) > 0 && rapid.Bool().Draw(t, "pop") {
				slices.SortFunc(model, cmpTimer)
				got := h.pop()
				if got != model[0] {
					t.Fatalf("popped %+v, want %+v", got, model[0])
				}
				model = model[1:]
				continue
			}
			tm := draw("p")
			h.push(tm)
			model = append(model, tm)
		}
		if len(h) != len(model) {
			t.Fatalf("%d timers held, want %d", len(h), len(model))
		}
	})
}
