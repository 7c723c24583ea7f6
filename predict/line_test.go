package predict

import (
	"math/rand/v2"
	"testing"
)

// TestLineFitsSizesAndSetsOutliersAside: run time 0.3 s + 10 ms a unit of
// size, 10 % noise and one attempt in ten ten times as long, is predicted
// within 10 % by integer arithmetic; a snapshot's state gives the same
// predictions; a falling slope is taken as flat.
func TestLineFitsSizesAndSetsOutliersAside(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	l := NewLine(20)
	truth := func(x int64) int64 { return 300_000_000 + 10_000_000*x }
	for i := range 300 {
		x := int64(10 + r.IntN(200))
		y := float64(truth(x)) * (1 + 0.1*r.NormFloat64())
		if r.IntN(10) == 0 {
			y *= 10
		}
		if i == 18 {
			if _, ok := l.Predict(x); ok {
				t.Fatal("trusted before its floor")
			}
		}
		l.Observe(x, int64(y))
	}
	for _, x := range []int64{10, 60, 120, 200} {
		got, ok := l.Predict(x)
		if want := truth(x); !ok || got < want*9/10 || got > want*11/10 {
			t.Errorf("size %d: predicted %d ns (%v), want %d", x, got, ok, want)
		}
	}
	seen, next, obs := l.State()
	back := RestoreLine(20, seen, next, obs)
	for x := int64(0); x < 300; x += 7 {
		a, _ := l.Predict(x)
		b, _ := back.Predict(x)
		if a != b {
			t.Fatalf("size %d: %d before the snapshot, %d after", x, a, b)
		}
	}
	down := NewLine(2)
	down.Observe(10, 5_000)
	down.Observe(100, 1_000)
	down.Observe(50, 3_000)
	if a, _ := down.Predict(10); a != 3_000 {
		t.Fatalf("a falling slope: predicted %d for size 10, want the flat median 3000", a)
	}
}
