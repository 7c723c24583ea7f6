package sim

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// floorWorkload is a small busy cluster with two tiers, so that jobs wait
// and later arrivals of pro go before free ones.
func floorWorkload() *Workload {
	w := mmc(2, 0.85, 0, time.Minute)
	w.Duration = Duration(8 * time.Minute)
	w.Tenants = []TenantSpec{
		{Name: "f", Tier: "free", Count: 20, Arrivals: Arrivals{Rate: Rate(0.9 / 20)}},
		{Name: "p", Tier: "pro", Count: 2, Arrivals: Arrivals{Rate: Rate(0.4)}},
	}
	w.Models[0].Service = Service{Dist: "lognormal", Mean: Duration(time.Second), Stddev: Duration(300 * time.Millisecond)}
	return w
}

// TestETAFloorIsALowerBound: on forks of the same jobs, the least error any
// ETA could have is no more than Sluice's own, at p50 and p90, and no ETA
// tells fewer waits within 15 % or 40 % than Sluice's; the figures are a
// function of the workload and seed, however many workers run the forks.
func TestETAFloorIsALowerBound(t *testing.T) {
	w := floorWorkload()
	fo := FloorOptions{Jobs: 24, Forks: 6, Until: 5 * time.Minute, Workers: 3}
	fl, err := ETAFloor(w, fo)
	if err != nil {
		t.Fatal(err)
	}
	if fl.Jobs != 24 || fl.Forks != 6 || fl.Started == 0 || fl.Started > 24*6 {
		t.Fatalf("floor of %d jobs, %d forks, %d started: want 24 jobs, 6 forks, some started", fl.Jobs, fl.Forks, fl.Started)
	}
	if fl.Best.P50 > fl.Sluice.P50 || fl.Best.P90 > fl.Sluice.P90 || fl.Best.P90 > fl.Model.P90 {
		t.Errorf("the least error %+v is more than Sluice's %+v or its model's %+v", fl.Best, fl.Sluice, fl.Model)
	}
	if fl.HeldOut.P50 < fl.Best.P50 || fl.HeldOut.P90 < fl.Best.P90 {
		t.Errorf("an ETA picked on half the forks did better on the others (%+v) than the best on all (%+v)", fl.HeldOut, fl.Best)
	}
	if fl.CrossValidated.P50 < fl.Best.P50 || fl.CrossValidated.P90 < fl.Best.P90 {
		t.Errorf("an ETA picked on all forks but one did better on that one (%+v) than the best on all (%+v)", fl.CrossValidated, fl.Best)
	}
	for _, j := range fl.Sampled {
		started := 0
		for _, w := range j.Waits {
			if w >= 0 {
				started++
			}
		}
		if len(j.Waits) != fo.Forks || started != j.Started {
			t.Errorf("job %d: %d waits, %d of them started, want %d forks, %d started", j.ID, len(j.Waits), started, fo.Forks, j.Started)
		}
	}
	if fl.Best.P90 == 0 {
		t.Errorf("no error at all at p90 on a busy cluster: the forks drew no other future")
	}
	for _, x := range fl.Within {
		if x.Best < x.Sluice || x.Best < x.HeldOut || x.Best < x.CrossValidated {
			t.Errorf("within %.0f%%: any ETA at most %.3f, held out %.3f, all but one %.3f, Sluice's %.3f",
				100*x.Error, x.Best, x.HeldOut, x.CrossValidated, x.Sluice)
		}
	}
	fo.Workers = 1
	again, err := ETAFloor(w, fo)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(fl)
	b, _ := json.Marshal(again)
	if string(a) != string(b) {
		t.Fatalf("with 3 workers:\n%s\nwith 1:\n%s", a, b)
	}
	var out strings.Builder
	if err := fl.WriteTable(&out); err != nil || !strings.Contains(out.String(), "no ETA less") {
		t.Fatalf("table: %v\n%s", err, out.String())
	}
}

// TestForksReplayTheRunThenDrawAnotherFuture: a fork replays the run to
// its job's admission byte for byte (it is told the same ETA, or the fork
// fails), then draws its own future: with nothing random left (arrivals
// from a trace, constant run times) every fork waits what the run did;
// with random run times forks differ, and fork k is the same every time.
func TestForksReplayTheRunThenDrawAnotherFuture(t *testing.T) {
	seenOf := func(w *Workload, opt Options) []etaSeen {
		var seen []etaSeen
		opt.onETA = func(s etaSeen) { seen = append(seen, s) }
		e, err := newEngine(w, opt)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.loop(); err != nil {
			t.Fatal(err)
		}
		return slices.DeleteFunc(seen, func(s etaSeen) bool { return s.wait == 0 })
	}
	forks := func(w *Workload, opt Options, s etaSeen, n int) []int64 {
		p := []etaSeen{s}
		p[0].waits = make([]int64, n)
		if err := runForks(w, opt, p, FloorOptions{Forks: n, Workers: 2}); err != nil {
			t.Fatal(err)
		}
		return p[0].waits
	}

	// Nothing random: the trace's arrivals stay, run times are constant.
	var trace strings.Builder
	for i := range 40 {
		fmt.Fprintf(&trace, "%.1f\n", 0.7*float64(i))
	}
	path := filepath.Join(t.TempDir(), "arrivals.txt")
	if err := os.WriteFile(path, []byte(trace.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	fixed := mmc(1, 0, 0, 0)
	fixed.Tenants[0].Arrivals = Arrivals{Trace: path}
	fixed.Models[0].Service = Service{Dist: "constant", Mean: Duration(time.Second)}
	fixed.Duration = Duration(time.Minute)
	if err := fixed.Check(); err != nil {
		t.Fatal(err)
	}
	opt := Options{NoSeries: true}
	seen := seenOf(fixed, opt)
	if len(seen) < 10 {
		t.Fatalf("%d jobs waited on the fixed workload", len(seen))
	}
	for _, s := range []etaSeen{seen[3], seen[len(seen)-1]} {
		for k, w := range forks(fixed, opt, s, 3) {
			if w != s.wait {
				t.Fatalf("job %d waited %v in the run, %v in fork %d: nothing random was left to differ", s.id, time.Duration(s.wait), time.Duration(w), k)
			}
		}
	}

	w := floorWorkload()
	if err := w.Check(); err != nil {
		t.Fatal(err)
	}
	opt = Options{NoSeries: true, Duration: 6 * time.Minute}
	seen = seenOf(w, opt)
	s := seen[len(seen)/2]
	first, second := forks(w, opt, s, 6), forks(w, opt, s, 6)
	if !slices.Equal(first, second) {
		t.Fatalf("job %d's forks waited %v, then %v", s.id, first, second)
	}
	if slices.Min(first) == slices.Max(first) {
		t.Fatalf("job %d waited %v in every fork: the future was not drawn again", s.id, first)
	}

	// A fork that does not replay the run is refused, not counted.
	s.p50++
	p := []etaSeen{s}
	p[0].waits = make([]int64, 1)
	if err := runForks(w, opt, p, FloorOptions{Forks: 1, Workers: 1}); err == nil || !strings.Contains(err.Error(), "did not replay the run") {
		t.Fatalf("a fork told another ETA: %v", err)
	}
}

// TestBestWithinPicksEachJobsBestETA checks the floor's arithmetic on
// waits whose best ETAs are known: one job always waits 2 s; another waits
// 10 s or 20 s, which one ETA tells within 40 % (12–14 s) but not within
// 15 %; a third waits under a second, where errors are taken against 1 s.
func TestBestWithinPicksEachJobsBestETA(t *testing.T) {
	s := int64(time.Second)
	waits := [][]int64{{2 * s, 2 * s, 2 * s}, {10 * s, 20 * s}}
	if got := bestWithin(waits, 0.4); got != 1 {
		t.Errorf("within 40%%: %v, want 1", got)
	}
	if got := bestWithin(waits, 0.15); got != 0.75 {
		t.Errorf("within 15%%: %v, want 0.75 (all of one job, half of the other)", got)
	}
	best := func(tol float64) float64 { return bestWithin(waits, tol) }
	if got := errorAt(best, 0.9); math.Abs(got-0.335) > 1e-9 { // both of the second job: 1/3, to 0.5 % up
		t.Errorf("least p90 error %v, want 0.335", got)
	}
	if got := errorAt(best, 0.5); got != 0 {
		t.Errorf("least p50 error %v, want 0", got)
	}
	// Picked on one of the second job's waits, an ETA misses the other by
	// half (10 s for 20 s) or by all of it (20 s for 10 s) at 40 %.
	if got := heldOutWithin(waits, 0.4); got != 0.5 {
		t.Errorf("held out, within 40%%: %v, want 0.5 (the first job's, none of the second's)", got)
	}
	short := [][]int64{{0, 300 * int64(time.Millisecond)}}
	if got := within(short, []int64{0}, 0.3); got != 1 {
		t.Errorf("an ETA of 0 against waits of 0 and 300 ms, within 30%% of a second: %v, want 1", got)
	}
	if got := within(waits, []int64{2 * s, 0}, 0.4); got != 0.5 {
		t.Errorf("ETAs 2 s and 0: %v within 40%%, want 0.5", got)
	}
}

// TestCrossPickIsTheMiddleOfTheWidestStretch checks crossPick's sweep
// against the plain definition, counting with etaErr itself: each wait's
// window holds exactly the ETAs etaErr puts within tol; between each two
// ends of a window the other waits told stay the same, so counting at each
// end finds the most and the stretches that tell it; the widest (the first
// of equals), and its middle.
func TestCrossPickIsTheMiddleOfTheWidestStretch(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		unit := rapid.SampledFrom([]int64{1, int64(time.Millisecond)}).Draw(t, "unit (ns)")
		ms := rapid.SliceOfN(rapid.Int64Range(0, 30_000), 2, 12).Draw(t, "waits")
		tol := rapid.SampledFrom([]float64{0.15, 0.4, 0.7, 0.335}).Draw(t, "tol")
		out := rapid.IntRange(0, len(ms)-1).Draw(t, "left out")
		ws := make([]int64, len(ms))
		for i, m := range ms {
			ws[i] = m * unit
		}
		var ends []int64
		for i, w := range ws {
			lo, hi := etaWindow(w, tol)
			if etaErr(lo, w) > tol || lo > 0 && etaErr(lo-1, w) <= tol || etaErr(hi, w) > tol || etaErr(hi+1, w) <= tol {
				t.Fatalf("wait %v: window [%v, %v] is not the ETAs within %v", w, lo, hi, tol)
			}
			if i != out {
				ends = append(ends, lo, hi+1)
			}
		}
		tells := func(e int64) int {
			n := 0
			for i, w := range ws {
				if i != out && etaErr(e, w) <= tol {
					n++
				}
			}
			return n
		}
		ends = slices.Compact(slices.Sorted(slices.Values(ends)))
		most := 0
		for _, e := range ends {
			most = max(most, tells(e))
		}
		var best [2]int64
		from := int64(-1)
		for k, e := range ends[:len(ends)-1] {
			if tells(e) != most {
				from = -1
				continue
			}
			if from < 0 {
				from = e
			}
			if ends[k+1]-from > best[1]-best[0] {
				best = [2]int64{from, ends[k+1]}
			}
		}
		want := best[0] + (best[1]-1-best[0])/2
		got := crossPick(ws, out, tol)
		if got != want {
			t.Fatalf("picked %v, want %v (the middle of %v, telling %d)", got, want, best, most)
		}
		if n := tells(got); n != most {
			t.Fatalf("the pick %v tells %d of the waits, want %d", got, n, most)
		}
	})
	// The reviewer's cases: a stretch of one ETA, and windows meeting at
	// one ETA that etaErr puts at tol exactly for both.
	for _, c := range []struct {
		ws  []int64
		out int
		tol float64
	}{
		{[]int64{18882000000, 25546235294, 1}, 2, 0.15},
		{[]int64{16053000000, 90967000000, 1, 18252000000}, 2, 0.7},
	} {
		got, most := crossPick(c.ws, c.out, c.tol), 0
		for e := range int64(100_000_000_000) / 100_000 { // every 0.1 ms to 100 s, then around the pick
			n, m := 0, 0
			for i, w := range c.ws {
				if i != c.out {
					if etaErr(e*100_000, w) <= c.tol {
						n++
					}
					if etaErr(got, w) <= c.tol {
						m++
					}
				}
			}
			if e == 0 {
				most = m
			}
			if n > most {
				t.Errorf("%v but %d, within %v: the pick %v tells %d, %v tells %d", c.ws, c.out, c.tol, got, most, e*100_000, n)
				break
			}
		}
	}
	// Two waits of 10 s and one of 20 s, the 20 s left out: at 40 % the
	// ETAs 6–14 s tell both 10 s waits; the pick is their middle, 10 s.
	s := int64(time.Second)
	if got := crossPick([]int64{10 * s, 20 * s, 10 * s}, 1, 0.4); got != 10*s {
		t.Errorf("picked %v, want 10s", time.Duration(got))
	}
	// Two stretches as wide (waits under a second count against one): the
	// first.
	ms := int64(time.Millisecond)
	if got := crossPick([]int64{800 * ms, 200 * ms, 5 * s}, 2, 0.15); got != 200*ms {
		t.Errorf("picked %v, want 200ms", time.Duration(got))
	}
	if got := crossWithin([][]int64{{10 * s, 10 * s, 10 * s}, {10 * s, 20 * s}}, 0.4); got != 0.5 {
		t.Errorf("within 40%%: %v, want 0.5 (all of the first job, none of the second)", got)
	}
}
