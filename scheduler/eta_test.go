package scheduler

import (
	"container/heap"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// WaitBand's middle is WaitBehind's ETA, its band is ordered and cut at 0,
// and a job idle slots take at once waits for nothing.
func TestWaitBandAroundWaitBehind(t *testing.T) {
	mean, sd := 4*time.Second, 2*time.Second
	for _, c := range []struct{ pos, slots, free int }{{1, 4, 0}, {3, 4, 1}, {9, 4, 0}, {40, 8, 2}, {2, 1, 0}} {
		b, ok := WaitBand(c.pos, c.slots, c.free, mean, sd)
		if !ok || b.P50 != WaitBehind(c.pos, c.slots, c.free, mean) || b.P10 > b.P50 || b.P50 > b.P90 || b.P10 < 0 {
			t.Errorf("%+v: %+v (ok %v), WaitBehind %v", c, b, ok, WaitBehind(c.pos, c.slots, c.free, mean))
		}
	}
	if b, ok := WaitBand(2, 4, 2, mean, sd); !ok || b != (Band{}) {
		t.Errorf("a job a free slot takes: %+v", b)
	}
	if _, ok := WaitBand(1, 0, 0, mean, sd); ok {
		t.Error("no slot, yet a band")
	}
	if b := (Band{P10: time.Second, P50: 2 * time.Second, P90: 3 * time.Second}).NotBefore(5 * time.Second); b.P10 != 5*time.Second || b.P90 != 5*time.Second {
		t.Errorf("not before 5s: %+v", b)
	}
}

// Where its model holds (busy slots, service times drawn independently,
// each running job a uniform moment into its attempt), the band holds
// about 80 % of the waits, for one slot and for many, a job well back in
// line. (First in line behind many slots it holds less: the first of 16
// slots to free up is not normally distributed.)
func TestWaitBandCoversEightyPercentWhereItsModelHolds(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	mean, sd := time.Second, 500*time.Millisecond
	mu, sigma := math.Log(1/math.Sqrt(1.25)), math.Sqrt(math.Log(1.25)) // lognormal, mean 1 s, sd 0.5 s
	draw := func() float64 { return math.Exp(mu+sigma*r.NormFloat64()) * float64(time.Second) }
	for _, slots := range []int{1, 4, 16} {
		for _, position := range []int{5 * slots, 20 * slots} {
			b, _ := WaitBand(position, slots, 0, mean, sd)
			in := 0
			const n = 3000
			for range n {
				free := make(departures, slots)
				for i := range free {
					free[i] = r.Float64() * draw() // the rest of the attempt now running
				}
				heap.Init(&free)
				var start float64
				for range position {
					start = heap.Pop(&free).(float64)
					heap.Push(&free, start+draw())
				}
				if time.Duration(start) >= b.P10 && time.Duration(start) <= b.P90 {
					in++
				}
			}
			if got := float64(in) / n; got < 0.72 || got > 0.87 {
				t.Errorf("%d slots, position %d: %.1f%% inside %+v, want about 80%%", slots, position, 100*got, b)
			}
		}
	}
}

// departures is a min-heap of the times slots free up.
type departures []float64

func (h departures) Len() int           { return len(h) }
func (h departures) Less(i, j int) bool { return h[i] < h[j] }
func (h departures) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *departures) Push(x any)        { *h = append(*h, x.(float64)) }
func (h *departures) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func TestServiceTimeLearns(t *testing.T) {
	var s ServiceTime
	if m, sd := s.Estimate(2 * time.Second); m != 2*time.Second || sd != time.Second {
		t.Fatalf("unlearned: %v ± %v, want the default ± half", m, sd)
	}
	s.Observe(4 * time.Second)
	if m, sd := s.Estimate(2 * time.Second); m != 4*time.Second || sd != 2*time.Second {
		t.Fatalf("one sample: %v ± %v", m, sd)
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range 500 {
		s.Observe(time.Duration((3 + 2*r.Float64()) * float64(time.Second))) // uniform 3–5 s: mean 4, sd 0.577
	}
	if m, sd := s.Estimate(0); m < 3500*time.Millisecond || m > 4500*time.Millisecond || sd < 300*time.Millisecond || sd > 900*time.Millisecond {
		t.Fatalf("after 500 samples of 4 s ± 0.58: %v ± %v", m, sd)
	}
}

// The other tiers' arrivals take what they bring up to their weight's
// share of the slots, a strict tier all of it; a minute later they have
// faded.
func TestTierLoadOvertaking(t *testing.T) {
	var l TierLoad
	minute := int64(time.Minute)
	tiers := map[string]TierShare{"free": {Weight: 1}, "pro": {Weight: 4}, "ops": {Weight: 1, Strict: true}}
	l.Add("pro", 2*time.Minute, 0)  // 2 slots' worth of pro work a minute
	l.Add("free", 9*time.Minute, 0) // 9 of free
	if got := l.Overtaking("free", tiers, 10, 0); math.Abs(got-2) > 1e-9 {
		t.Errorf("a free job: pro takes %.2f slots, want 2 (all it brings, under its share of 8)", got)
	}
	if got := l.Overtaking("pro", tiers, 10, 0); math.Abs(got-2) > 1e-9 {
		t.Errorf("a pro job: free takes %.2f slots, want 2 (its share of 10, 1/5)", got)
	}
	l.Add("ops", 3*time.Minute, 0)
	if got := l.Overtaking("pro", tiers, 10, 0); math.Abs(got-5) > 1e-9 {
		t.Errorf("a pro job with strict ops: %.2f slots, want 2 + 3", got)
	}
	if got := l.Overtaking("pro", tiers, 10, 5*minute); got > 0.1 {
		t.Errorf("five minutes later: %.2f slots still taken", got)
	}
}

// TestLanesBandSchedulesTheJobsAhead: each job ahead goes to the slot free
// first, and the job starts when the next one is; the other tiers stretch
// only the queued work, not what the running attempts have left.
func TestLanesBandSchedulesTheJobsAhead(t *testing.T) {
	s := time.Second
	if b := LanesBand([]time.Duration{0, 2 * s}, []time.Duration{s, s, s}, 0, 0); b.P50 != 2*s {
		t.Fatalf("two slots (free, free in 2s), three 1s jobs ahead: starts at %v, want 2s", b.P50)
	}
	if b := LanesBand([]time.Duration{0, 2 * s}, []time.Duration{s, s, s}, 1, 0); b.P50 != 4*s {
		t.Fatalf("the same with one slot taken by other tiers: %v, want 4s", b.P50)
	}
	if b := LanesBand([]time.Duration{10 * s}, nil, 0.9, 0); b.P50 != 10*s {
		t.Fatalf("nothing ahead, one attempt with 10s left: %v, want 10s however busy the other tiers", b.P50)
	}
	if b := LanesBand([]time.Duration{0, 3 * s}, nil, 0, s); b != (Band{}) {
		t.Fatalf("a free slot and nothing ahead: %v, want at once", b)
	}
	if b := LanesBand([]time.Duration{0}, []time.Duration{4 * s}, 0, s); b.P10 >= b.P50 || b.P90 <= b.P50 {
		t.Fatalf("band %v: want p10 < p50 < p90", b)
	}
}
