package predict

import (
	"math"
	"math/bits"
	"slices"

	"google.golang.org/protobuf/types/known/structpb"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// Line predicts a run time from one size term with integer arithmetic
// only, so that every replica of the state machine that applies the same
// completions predicts the same (the reservation a job's cost-weighted
// limits are charged at admission is replicated state). It is Tukey's
// resistant line over the last LineWindow attempts: the slope through the
// medians of the smallest and the largest third of the sizes, the
// intercept the median of what is left; a slope that falls with size is
// taken as flat. Not safe for concurrent use.
type Line struct {
	floor int
	seen  int64 // attempts learned from, all told
	next  int   // where the next attempt goes in obs, once it is full
	obs   []LinePoint
}

// LinePoint is one attempt: its size term and its run time in ns.
type LinePoint struct{ X, NS int64 }

// LineWindow is how many attempts a Line fits over.
const LineWindow = 64

// NewLine is a line trusted after floor attempts (0: DefaultMinObservations).
func NewLine(floor int) *Line {
	if floor <= 0 {
		floor = DefaultMinObservations
	}
	return &Line{floor: floor}
}

// RestoreLine is a line with the state State gave.
func RestoreLine(floor int, seen int64, next int, obs []LinePoint) *Line {
	l := NewLine(floor)
	l.seen, l.obs = seen, slices.Clone(obs[:min(len(obs), LineWindow)])
	if len(l.obs) == LineWindow && next >= 0 && next < LineWindow {
		l.next = next
	}
	return l
}

// State is what a snapshot keeps of the line.
func (l *Line) State() (seen int64, next int, obs []LinePoint) { return l.seen, l.next, l.obs }

// Observe learns an attempt of size term x that ran ns.
func (l *Line) Observe(x, ns int64) {
	if x < 0 || ns < 0 {
		return
	}
	l.obs = ringPut(l.obs, &l.next, LineWindow, LinePoint{x, ns})
	l.seen++
}

// Trusted reports whether the line has learned from enough attempts.
func (l *Line) Trusted() bool { return l.seen >= int64(l.floor) }

// Predict is the run time in ns of an attempt of size term x; false until
// the line is trusted.
func (l *Line) Predict(x int64) (int64, bool) {
	if !l.Trusted() || len(l.obs) == 0 || x < 0 {
		return 0, false
	}
	pts := slices.Clone(l.obs)
	slices.SortFunc(pts, func(a, b LinePoint) int {
		if a.X != b.X {
			return cmpInt(a.X, b.X)
		}
		return cmpInt(a.NS, b.NS)
	})
	third := max(len(pts)/3, 1)
	lo, hi := pts[:third], pts[len(pts)-third:]
	num := medianOf(hi, func(p LinePoint) int64 { return p.NS }) - medianOf(lo, func(p LinePoint) int64 { return p.NS })
	den := medianOf(hi, func(p LinePoint) int64 { return p.X }) - medianOf(lo, func(p LinePoint) int64 { return p.X })
	if num < 0 || den <= 0 {
		num, den = 0, 1 // flat: the sizes say nothing, or say less is more
	}
	rest := make([]int64, len(pts))
	for i, p := range pts {
		rest[i] = p.NS - mulDiv(num, p.X, den)
	}
	a := medianOf(rest, func(v int64) int64 { return v })
	return max(a+mulDiv(num, x, den), 0), true
}

// ringPut puts v in the window s of at most n, over its oldest (at next)
// once it is full.
func ringPut[T any](s []T, next *int, n int, v T) []T {
	if len(s) < n {
		return append(s, v)
	}
	s[*next] = v
	*next = (*next + 1) % n
	return s
}

// mulDiv is n·x/d for n, x >= 0 and d > 0, in 128 bits, saturated.
func mulDiv(n, x, d int64) int64 {
	hi, lo := bits.Mul64(uint64(n), uint64(x))
	if hi >= uint64(d) {
		return math.MaxInt64
	}
	q, _ := bits.Div64(hi, lo, uint64(d))
	return int64(min(q, math.MaxInt64))
}

// medianOf is the lower median of f over s (s not empty).
func medianOf[T any](s []T, f func(T) int64) int64 {
	v := make([]int64, len(s))
	for i, x := range s {
		v[i] = f(x)
	}
	slices.Sort(v)
	return v[(len(v)-1)/2]
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Term is the integer size term of a job's input under a one-term size
// declaration (the product of its fields, rounded; floating-point products
// are exact to IEEE 754 on every platform); false when a field is missing
// or not a non-negative number, or the declaration has not one term.
func Term(s *sluicev1.SizeModel, input *structpb.Struct) (int64, bool) {
	if len(s.GetTerms()) != 1 {
		return 0, false
	}
	x, ok, err := Features(s, input)
	if err != nil || !ok || x[0] >= math.MaxInt64 {
		return 0, false
	}
	return int64(math.Round(x[0])), true
}
