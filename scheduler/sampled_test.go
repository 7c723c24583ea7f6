package scheduler

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// TestSampledWaitReadsHowLongTheAttemptsHaveRun: a job first in line on
// two slots of 6 s ± 2 s attempts starts when the first ends. Two attempts
// 5 s in end soon; two 1 s in do not; one of each is nearly the first
// case. WaitBand, which knows only the count, tells all three 1.5 s.
func TestSampledWaitReadsHowLongTheAttemptsHaveRun(t *testing.T) {
	const s = time.Second
	run := RunTime{Mean: 6 * s, SD: 2 * s}
	lanes := func(elapsed ...time.Duration) []Lane {
		var out []Lane
		for _, e := range elapsed {
			out = append(out, Lane{Busy: true, Run: run, Elapsed: e})
		}
		return out
	}
	late := SampledWait(lanes(5*s, 5*s), nil, 0, seeded(1))
	early := SampledWait(lanes(s, s), nil, 0, seeded(1))
	mixed := SampledWait(lanes(5*s, s), nil, 0, seeded(1))
	t.Logf("5 s in: %v; 1 s in: %v; one of each: %v", late, early, mixed)
	if late.P50 > 2*s || early.P50 < 3*s || mixed.P50 > 2500*time.Millisecond {
		t.Fatalf("5 s in: %v; 1 s in: %v; one of each: %v", late, early, mixed)
	}
	for _, b := range []Band{late, early, mixed} {
		if b.P10 > b.P50 || b.P50 > b.P90 || b.P10 == b.P90 {
			t.Fatalf("band out of order or flat: %v", b)
		}
	}
	if again := SampledWait(lanes(5*s, s), nil, 0, seeded(1)); again != mixed {
		t.Fatalf("the same seed drew %v, then %v", mixed, again)
	}
	// A free slot and nothing ahead: at once.
	if b := SampledWait(append(lanes(s), Lane{}), nil, 0, seeded(1)); b != (Band{}) {
		t.Fatalf("a free slot: %v", b)
	}
	// An attempt far past anything its run time makes likely still ends
	// some time (the upper tail), not never or in the past.
	if b := SampledWait(lanes(60*s), nil, 0, seeded(1)); b.P50 <= 0 || b.P90 > 10*s {
		t.Fatalf("60 s into a 6 s attempt: %v", b)
	}
}

// TestSampledWaitMatchesABruteForceDraw: on random lanes and jobs ahead,
// SampledWait's 16 stratified draws put its p50 where 4,000 plain ones
// (each attempt's length drawn again until it is as long as it has run)
// put the median: within 20 %, or 100 ms, for nine in ten cases.
func TestSampledWaitMatchesABruteForceDraw(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	brute := func(lanes []Lane, ahead []RunTime) float64 {
		waits := make([]float64, 4000)
		for k := range waits {
			waits[k] = plainFuture(rng, lanes, ahead)
		}
		slices.Sort(waits)
		return waits[len(waits)/2]
	}
	const s = float64(time.Second)
	off, sum := 0, 0.0
	for c := range 40 {
		lanes, ahead := randomCase(rng, 1.5)
		got, want := float64(SampledWait(lanes, ahead, 0, seeded(uint64(c))).P50), brute(lanes, ahead)
		sum += got / want
		if math.Abs(got-want) > max(0.2*want, 0.1*s) {
			off++
			t.Logf("case %d: p50 %.2fs, brute force %.2fs", c, got/s, want/s)
		}
	}
	t.Logf("mean ratio %.3f", sum/40)
	if off > 4 {
		t.Fatalf("%d of 40 cases off", off)
	}
}

// TestSampledWaitIsListSchedulingWhenRunTimesAreKnown: with run times that
// do not vary, every draw is the same list scheduling LanesBand does.
func TestSampledWaitIsListSchedulingWhenRunTimesAreKnown(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ms := func(label string) time.Duration {
			return time.Duration(rapid.IntRange(1, 10_000).Draw(t, label)) * time.Millisecond
		}
		lanes := make([]Lane, rapid.IntRange(1, 6).Draw(t, "lanes"))
		left := make([]time.Duration, len(lanes))
		for i := range lanes {
			if rapid.Bool().Draw(t, "busy") {
				mean := ms("mean")
				elapsed := min(ms("elapsed"), mean)
				lanes[i] = Lane{Busy: true, Run: RunTime{Mean: mean}, Elapsed: elapsed}
				left[i] = mean - elapsed
			}
		}
		ahead := make([]RunTime, rapid.IntRange(0, 8).Draw(t, "ahead"))
		means := make([]time.Duration, len(ahead))
		for i := range ahead {
			means[i] = ms("run")
			ahead[i] = RunTime{Mean: means[i]}
		}
		got, want := SampledWait(lanes, ahead, 0, seeded(1)), LanesBand(left, means, 0, 0)
		// float64 sums of ns: within a microsecond.
		if d := got.P50 - want.P50; d < -time.Microsecond || d > time.Microsecond || got.P10 != got.P50 || got.P90 != got.P50 {
			t.Fatalf("drawn %v, list scheduling %v", got, want)
		}
	})
}

// TestSampledWaitsBandHoldsEightyPercent: on its model's terms (each
// attempt and job runs for a lognormal time of the mean and deviation it
// is told), one more future drawn for each of 3,000 random cases falls
// inside the band 77–83 % of the time (78.5 %; the usual ranks of the 16
// draws held 74.7 %).
func TestSampledWaitsBandHoldsEightyPercent(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	const cases = 3000
	inside := 0
	for c := range cases {
		lanes, ahead := randomCase(rng, 1)
		b := SampledWait(lanes, ahead, 0, seeded(uint64(c)))
		if w := time.Duration(plainFuture(rng, lanes, ahead)); b.P10 <= w && w <= b.P90 {
			inside++
		}
	}
	share := float64(inside) / cases
	t.Logf("inside the band: %.1f %%", 100*share)
	if share < 0.77 || share > 0.83 {
		t.Fatalf("inside the band: %.1f %%, want 77–83 %%", 100*share)
	}
}

// BenchmarkSampledWait: a job behind k jobs on n busy slots of two models.
func BenchmarkSampledWait(b *testing.B) {
	runs := []RunTime{{Mean: 4 * time.Second, SD: 1500 * time.Millisecond}, {Mean: 800 * time.Millisecond, SD: 800 * time.Millisecond}}
	for _, c := range []struct{ lanes, ahead int }{{4, 2}, {16, 8}} {
		b.Run(fmt.Sprintf("lanes=%d/ahead=%d", c.lanes, c.ahead), func(b *testing.B) {
			lanes := make([]Lane, c.lanes)
			for i := range lanes {
				lanes[i] = Lane{Busy: true, Run: runs[i%2], Elapsed: time.Duration(i) * 300 * time.Millisecond}
			}
			ahead := make([]RunTime, c.ahead)
			for i := range ahead {
				ahead[i] = runs[i%2]
			}
			seed := uint64(0)
			for b.Loop() {
				seed++
				SampledWait(lanes, ahead, 0.5, seeded(seed))
			}
		})
	}
}

// TestRestBandIsWhatRunsThatLongHaveLeft: a 6 s ± 2 s attempt just begun
// has its median run left (a little under its mean); 5 s in, about what
// the runs longer than 5 s have left; 20 s in (past anything likely) still
// some, where mean − elapsed says 0. A run time that does not vary has its
// mean left, and nothing past it.
func TestRestBandIsWhatRunsThatLongHaveLeft(t *testing.T) {
	const s = time.Second
	r := RunTime{Mean: 6 * s, SD: 2 * s}
	fresh, late, past := RestBand(r, 0), RestBand(r, 5*s), RestBand(r, 20*s)
	t.Logf("0 s in: %v; 5 s in: %v; 20 s in: %v", fresh, late, past)
	for _, b := range []Band{fresh, late, past} {
		if b.P10 <= 0 || b.P10 >= b.P50 || b.P50 >= b.P90 {
			t.Fatalf("band out of order: %v", b)
		}
	}
	if fresh.P50 < 5500*time.Millisecond || fresh.P50 >= 6*s || late.P50 < s || late.P50 > 2*s || past.P50 > 2*s {
		t.Fatalf("0 s in: %v; 5 s in: %v; 20 s in: %v", fresh, late, past)
	}
	// One lane and nothing ahead: SampledWait draws the same.
	if d := SampledWait([]Lane{{Busy: true, Run: r, Elapsed: 5 * s}}, nil, 0, seeded(1)).P50 - late.P50; d < -200*time.Millisecond || d > 200*time.Millisecond {
		t.Fatalf("drawn p50 %v off RestBand's %v", late.P50+d, late.P50)
	}
	// Past where math.Erfcinv can tell the tail (a share under 1e-12), and
	// past where the share underflows: still a little left, in order.
	tight := RunTime{Mean: 6 * s, SD: 60 * time.Millisecond}
	for _, at := range []time.Duration{6500 * time.Millisecond, 12 * s, time.Hour} {
		b := RestBand(tight, at)
		if b.P10 <= 0 || b.P10 >= b.P50 || b.P50 >= b.P90 || b.P90 > at {
			t.Fatalf("6 s ± 60 ms, %v in: %v", at, b)
		}
	}
	// 6.5 s in (8.3 deviations of the logs): the excess over the start of
	// a normal's far tail is about exponential, of rate z0, so the median
	// left is about 6.5 s × 0.01 × ln 2 / 8.3 = 5.4 ms.
	if b := RestBand(tight, 6500*time.Millisecond); b.P50 < 4*time.Millisecond || b.P50 > 7*time.Millisecond {
		t.Fatalf("6 s ± 60 ms, 6.5 s in: %v, want about 5.4 ms left at p50", b)
	}
	// Where the two ways of telling the tail meet, they agree.
	for _, q := range []float64{0.999 * tailExact, 0.5 * tailExact, 1e-20, 1e-200} {
		lq := math.Log(q)
		z := upperTailQuantile(lq)
		if got := logUpperTail(z); math.Abs(got-lq) > 1e-6*math.Abs(lq) {
			t.Fatalf("tail %g: z %v has ln tail %v, want %v", q, z, got, lq)
		}
	}
	// The edges of a draw: a run just begun at u → 1, and a run whose
	// tail passes the largest Duration.
	for _, u := range []float64{1 - 0x1p-53, 1} {
		if x := logNormalOf(RunTime{Mean: s, SD: s / 2}).after(0).rest(u); math.IsNaN(x) || math.IsInf(x, 0) || x <= float64(s) {
			t.Fatalf("a 1 s ± 0.5 s run just begun, at u = %v: %v ns", u, x)
		}
	}
	huge := RunTime{Mean: 250 * 365 * 24 * time.Hour, SD: math.MaxInt64}
	if b := RestBand(huge, 0); b.P10 < 0 || b.P10 > b.P50 || b.P50 > b.P90 || b.P90 != math.MaxInt64 {
		t.Fatalf("250 years ± forever: %v", b)
	}
	if b := RestBand(RunTime{Mean: 3 * s}, s); b != (Band{P10: 2 * s, P50: 2 * s, P90: 2 * s}) {
		t.Fatalf("a fixed 3 s run 1 s in: %v", b)
	}
	if b := RestBand(RunTime{Mean: 3 * s}, 4*s); b != (Band{}) {
		t.Fatalf("a fixed 3 s run 4 s in: %v", b)
	}
}

// seeded is the draws the leader gives job id's ETA (admission's etaDraws).
func seeded(id uint64) *rand.Rand { return rand.New(rand.NewPCG(id, 0x5a1ce)) }

// randomCase is 1–8 busy lanes of 6 s ± 2 s or 0.8 s ± 0.8 s attempts, each
// run for up to elapsed times its mean, and fewer jobs ahead than lanes.
func randomCase(rng *rand.Rand, elapsed float64) ([]Lane, []RunTime) {
	runs := []RunTime{{Mean: 6 * time.Second, SD: 2 * time.Second}, {Mean: 800 * time.Millisecond, SD: 800 * time.Millisecond}}
	lanes := make([]Lane, 1+rng.IntN(8))
	for i := range lanes {
		r := runs[rng.IntN(2)]
		lanes[i] = Lane{Busy: true, Run: r, Elapsed: time.Duration(rng.Float64() * elapsed * float64(r.Mean))}
	}
	ahead := make([]RunTime, rng.IntN(len(lanes)))
	for i := range ahead {
		ahead[i] = runs[rng.IntN(2)]
	}
	return lanes, ahead
}

// plainFuture is one future's wait, drawn the plain way SampledWait must
// agree with: each attempt's length drawn again until it is as long as it
// has run, each job ahead taken by the lane free first.
func plainFuture(rng *rand.Rand, lanes []Lane, ahead []RunTime) float64 {
	draw := func(r RunTime) float64 {
		d := logNormalOf(r)
		return math.Exp(d.mu + d.sigma*rng.NormFloat64())
	}
	free := make([]float64, len(lanes))
	for i, l := range lanes {
		if l.Busy {
			x := draw(l.Run)
			for x <= float64(l.Elapsed) {
				x = draw(l.Run)
			}
			free[i] = x - float64(l.Elapsed)
		}
	}
	for _, r := range ahead {
		i := slices.Index(free, slices.Min(free))
		free[i] += draw(r)
	}
	return slices.Min(free)
}
