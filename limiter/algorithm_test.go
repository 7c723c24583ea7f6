package limiter

import (
	"bytes"
	"fmt"
	"testing"
	"time"
	_ "time/tzdata" // the tests' zones, whatever the machine has installed

	"pgregory.net/rapid"
)

// epoch is a realistic now (June 2025) so that tests run near the int64 sizes production sees.
const epoch = int64(1_750_000_000) * int64(time.Second)

var algorithmKinds = []string{"token bucket", "gcra", "leaky queue", "fixed window", "sliding log",
	"sliding counter", "concurrency", "quota"}

// scenario is a randomly drawn algorithm and the time scale on which its state changes.
type scenario struct {
	alg   Algorithm
	limit int64
	unit  int64 // nanoseconds in which a full limit's worth of state comes and goes
}

func drawRate(t *rapid.T) Rate {
	if rapid.IntRange(0, 9).Draw(t, "huge") == 0 {
		// Rates and bursts whose products overflow 64 bits (10M tokens per day and up).
		n := rapid.Int64Range(1, 1e12).Draw(t, "n")
		// At most 1e15 tokens refill in 100 years (maxRefill).
		per := rapid.Int64Range(1, min(30*24*3600e9, maxRefill/1e15*n)).Draw(t, "per")
		return Rate{N: n, Per: time.Duration(per)}
	}
	return Rate{N: rapid.Int64Range(1, 20).Draw(t, "n"),
		Per: time.Duration(rapid.Int64Range(1, 1e9).Draw(t, "per"))}
}

// drawBucket draws a rate and a burst that refills within maxRefill.
func drawBucket(t *rapid.T) (Rate, int64) {
	r := drawRate(t)
	return r, min(drawLimit(t, "burst"), mulDivFloor(maxRefill, r.N, int64(r.Per)))
}

func drawLimit(t *rapid.T, label string) int64 {
	if rapid.IntRange(0, 9).Draw(t, label+"Huge") == 0 {
		return rapid.Int64Range(1, 1e15).Draw(t, label)
	}
	return rapid.Int64Range(1, 12).Draw(t, label)
}

func drawWindow(t *rapid.T) time.Duration {
	return time.Duration(rapid.Int64Range(1, 1e10).Draw(t, "window"))
}

func drawScenario(t *rapid.T, kind string) scenario {
	switch kind {
	case "token bucket", "gcra", "leaky queue":
		r, b := drawBucket(t)
		unit := min(mulAddCeilDiv(b, int64(r.Per), 0, r.N), 1e16) // times stay far from 2262
		switch kind {
		case "token bucket":
			return scenario{TokenBucket{Rate: r, Burst: b}, b, unit}
		case "gcra":
			return scenario{GCRA{Rate: r, Burst: b}, b, unit}
		}
		return scenario{LeakyQueue{Rate: r, Capacity: b}, b, unit}
	case "fixed window", "sliding counter":
		l, w := drawLimit(t, "limit"), drawWindow(t)
		if kind == "fixed window" {
			return scenario{FixedWindow{Limit: l, Window: w}, l, int64(w)}
		}
		return scenario{SlidingCounter{Limit: l, Window: w}, l, int64(w)}
	case "sliding log":
		l, w := rapid.Int64Range(1, 12).Draw(t, "limit"), drawWindow(t)
		return scenario{SlidingLog{Limit: l, Window: w}, l, int64(w)}
	case "concurrency":
		l := drawLimit(t, "limit")
		return scenario{Concurrency{Limit: l}, l, 1}
	case "quota":
		l := drawLimit(t, "limit")
		p := rapid.SampledFrom([]Period{Daily, Monthly}).Draw(t, "period")
		loc := rapid.SampledFrom([]string{"UTC", "America/New_York", "Europe/Berlin", "Asia/Kolkata",
			"America/Santiago", "Australia/Lord_Howe"}).Draw(t, "zone")
		unit := int64(24 * time.Hour)
		if p == Monthly {
			unit *= 30
		}
		return scenario{Quota{Limit: l, Period: p, Location: mustZone(loc)}, l, unit}
	}
	panic(kind)
}

func mustZone(name string) *time.Location {
	loc, err := time.LoadLocation(name)
	if err != nil {
		panic(err)
	}
	return loc
}

// drawGap draws how far time moves between two hits: often not at all, often a little, and
// sometimes across a whole unit or more.
func drawGap(t *rapid.T, unit int64) int64 {
	switch rapid.IntRange(0, 4).Draw(t, "gapKind") {
	case 0:
		return 0
	case 1:
		return rapid.Int64Range(1, max(1, unit/8)).Draw(t, "gap")
	case 2, 3:
		return rapid.Int64Range(1, max(1, unit)).Draw(t, "gap")
	}
	return rapid.Int64Range(1, max(1, min(unit, 1e17))*3).Draw(t, "gap")
}

func drawCost(t *rapid.T, limit int64) int64 {
	if limit > 20 && rapid.Bool().Draw(t, "bigCost") {
		return rapid.Int64Range(0, limit+limit/4).Draw(t, "cost")
	}
	return rapid.Int64Range(0, min(limit, 4)+1).Draw(t, "cost")
}

func snapshotOf(tb table) []byte { return tb.appendSnapshot(nil) }

// forEachAlgorithm runs a property once per algorithm.
func forEachAlgorithm(t *testing.T, prop func(t *rapid.T, sc scenario)) {
	for _, kind := range algorithmKinds {
		t.Run(kind, func(t *testing.T) {
			rapid.Check(t, func(t *rapid.T) { prop(t, drawScenario(t, kind)) })
		})
	}
}

// step applies one random operation to key of tb at now: mostly admits and checks, sometimes
// a forced charge or a refund. It returns the admit's result, if it made one.
func step(t *rapid.T, sc scenario, tb table, key string, now int64, last int64) (Result, bool) {
	cost := drawCost(t, sc.limit)
	switch rapid.IntRange(0, 9).Draw(t, "op") {
	case 0:
		tb.charge(hashed(key), now, cost)
		return Result{}, false
	case 1:
		tb.refund(hashed(key), now, last, cost)
		return Result{}, false
	}
	return tb.admit(hashed(key), now, cost).result(tb.limit(), now), true
}

// check is a table's read-only decision as a Result.
func check(tb table, key string, now, cost int64) Result {
	v, _ := tb.evaluate(hashed(key), now, cost, false)
	return v.result(tb.limit(), now)
}

func TestRejectedHitConsumesNothing(t *testing.T) {
	forEachAlgorithm(t, func(t *rapid.T, sc scenario) {
		tb := sc.alg.newTable(4)
		now, last := epoch, epoch
		for range rapid.IntRange(1, 60).Draw(t, "steps") {
			now += drawGap(t, sc.unit)
			cost := drawCost(t, sc.limit)
			before := snapshotOf(tb)
			if res, _ := tb.evaluate(hashed("k"), now, cost, false); !bytes.Equal(before, snapshotOf(tb)) {
				t.Fatalf("check of cost %d at %d changed the state (result %+v)", cost, now, res)
			}
			if res := tb.admit(hashed("k"), now, cost); !res.allowed {
				if after := snapshotOf(tb); !bytes.Equal(before, after) {
					t.Fatalf("rejected hit of cost %d at %d changed the state:\n%x\n%x", cost, now, before, after)
				}
			} else if cost > 0 {
				last = now
			}
			if rapid.IntRange(0, 6).Draw(t, "extra") == 0 {
				step(t, sc, tb, "k", now, last)
			}
		}
	})
}

func TestStateRoundTripDecidesIdentically(t *testing.T) {
	forEachAlgorithm(t, func(t *rapid.T, sc scenario) {
		a := sc.alg.newTable(4)
		var b table
		now := epoch
		steps := rapid.IntRange(1, 60).Draw(t, "steps")
		split := rapid.IntRange(0, steps).Draw(t, "split")
		for i := range steps {
			if i == split {
				b = sc.alg.newTable(4)
				d := decoder{b: snapshotOf(a)}
				b.restore(&d)
				if err := d.finish(); err != nil {
					t.Fatal(err)
				}
			}
			now += drawGap(t, sc.unit)
			key := rapid.SampledFrom([]string{"k", "l"}).Draw(t, "key")
			cost := drawCost(t, sc.limit)
			ra := a.admit(hashed(key), now, cost)
			if b != nil {
				if rb := b.admit(hashed(key), now, cost); ra != rb {
					t.Fatalf("after a round trip, hit %d of cost %d at %d: %+v, want %+v", i, cost, now, rb, ra)
				}
			}
		}
		if b != nil && !bytes.Equal(snapshotOf(a), snapshotOf(b)) {
			t.Fatalf("states diverged after a round trip")
		}
	})
}

func TestRetryAtIsTheEarliestFitAndResetAtIsFull(t *testing.T) {
	forEachAlgorithm(t, func(t *rapid.T, sc scenario) {
		tb := sc.alg.newTable(4)
		now, last := epoch, epoch
		for range rapid.IntRange(1, 60).Draw(t, "steps") {
			now += drawGap(t, sc.unit)
			cost := drawCost(t, sc.limit)
			res := check(tb, "k", now, cost)
			if res.Limit != sc.limit || res.Remaining < 0 || res.Remaining > res.Limit {
				t.Fatalf("limit %d remaining %d, want limit %d", res.Limit, res.Remaining, sc.limit)
			}
			switch {
			case res.Allowed && res.RetryAt != now:
				t.Fatalf("allowed with RetryAt %d, want now %d", res.RetryAt, now)
			case !res.Allowed && cost > sc.limit && res.RetryAt != Never:
				t.Fatalf("cost %d over limit %d: RetryAt %d, want Never", cost, sc.limit, res.RetryAt)
			case !res.Allowed && res.RetryAt != Never && res.RetryAt != 0:
				if res.RetryAt <= now {
					t.Fatalf("rejected at %d with RetryAt %d in the past", now, res.RetryAt)
				}
				if r := check(tb, "k", res.RetryAt, cost); !r.Allowed {
					t.Fatalf("cost %d rejected at %d, RetryAt %d, and still rejected then: %+v", cost, now, res.RetryAt, r)
				}
				if r := check(tb, "k", res.RetryAt-1, cost); r.Allowed {
					t.Fatalf("cost %d rejected at %d, RetryAt %d, but it already fits a nanosecond before", cost, now, res.RetryAt)
				}
			}
			if res.ResetAt != 0 && res.ResetAt != Never { // Never: saturated, past the year 2262
				if res.ResetAt < now {
					t.Fatalf("ResetAt %d before now %d", res.ResetAt, now)
				}
				if r := check(tb, "k", res.ResetAt, 0); r.Remaining != r.Limit {
					t.Fatalf("at ResetAt %d, %d of %d remain", res.ResetAt, r.Remaining, r.Limit)
				}
			}
			if _, admitted := step(t, sc, tb, "k", now, last); admitted {
				last = now
			}
		}
	})
}

// Dropping an idle key must never change a decision: that is what makes sweeping, and the
// key bound, safe. Table b is swept at random points, table a never (except when full).
func TestSweepNeverChangesADecision(t *testing.T) {
	forEachAlgorithm(t, func(t *rapid.T, sc scenario) {
		maxKeys := rapid.IntRange(1, 3).Draw(t, "maxKeys")
		a, b := sc.alg.newTable(maxKeys), sc.alg.newTable(maxKeys)
		now := epoch
		admitted := map[string]int64{}
		for i := range rapid.IntRange(1, 80).Draw(t, "steps") {
			now += drawGap(t, sc.unit)
			if rapid.IntRange(0, 3).Draw(t, "sweep") == 0 {
				b.sweep(now)
			}
			key := rapid.SampledFrom([]string{"a", "b", "c", "d", "e"}).Draw(t, "key")
			cost := drawCost(t, sc.limit)
			switch rapid.IntRange(0, 9).Draw(t, "op") {
			case 0:
				a.charge(hashed(key), now, cost)
				b.charge(hashed(key), now, cost)
			case 1:
				a.refund(hashed(key), now, admitted[key], cost)
				b.refund(hashed(key), now, admitted[key], cost)
			default:
				ra, rb := a.admit(hashed(key), now, cost), b.admit(hashed(key), now, cost)
				if ra != rb {
					t.Fatalf("step %d: %q cost %d at %d: swept table %+v, unswept %+v", i, key, cost, now, rb, ra)
				}
				if ra.allowed {
					admitted[key] = now
				}
			}
			if a.len() > maxKeys || b.len() > maxKeys {
				t.Fatalf("tables hold %d and %d keys, bound %d", a.len(), b.len(), maxKeys)
			}
		}
	})
}

// The exported state encodings round-trip, and a decoded state decides identically.
func TestStateEncodingRoundTrips(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		now := epoch + rapid.Int64Range(0, 1e12).Draw(t, "now")
		costs := rapid.SliceOfN(rapid.Int64Range(0, 3), 1, 8).Draw(t, "costs")
		tb := TokenBucket{Rate: Rate{N: 3, Per: time.Second}, Burst: 5}
		g := GCRA{Rate: Rate{N: 3, Per: time.Second}, Burst: 5}
		q := LeakyQueue{Rate: Rate{N: 3, Per: time.Second}, Capacity: 5}
		fw := FixedWindow{Limit: 5, Window: time.Second}
		sl := SlidingLog{Limit: 5, Window: time.Second}
		sc := SlidingCounter{Limit: 5, Window: time.Second}
		cc := Concurrency{Limit: 5}
		qu := Quota{Limit: 5, Period: Daily, Location: mustZone("Europe/Berlin")}
		roundTrip(t, tb.Admit, now, costs)
		roundTrip(t, g.Admit, now, costs)
		roundTrip(t, q.Admit, now, costs)
		roundTrip(t, fw.Admit, now, costs)
		roundTrip(t, sl.Admit, now, costs)
		roundTrip(t, sc.Admit, now, costs)
		roundTrip(t, cc.Admit, now, costs)
		roundTrip(t, qu.Admit, now, costs)
	})
}

type stateCodec[S any] interface {
	*S
	AppendBinary([]byte) ([]byte, error)
	UnmarshalBinary([]byte) error
}

func roundTrip[S any, P stateCodec[S]](t *rapid.T, admit func(*S, int64, int64) Result, now int64, costs []int64) {
	var s S
	for i, c := range costs {
		admit(&s, now+int64(i)*int64(100*time.Millisecond), c)
	}
	enc, err := P(&s).AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	var back S
	if err := P(&back).UnmarshalBinary(enc); err != nil {
		t.Fatalf("%T: %v", s, err)
	}
	if again, _ := P(&back).AppendBinary(nil); !bytes.Equal(enc, again) {
		t.Fatalf("%T: re-encoding differs", s)
	}
	for i, c := range costs {
		at := now + int64(len(costs)+i)*int64(70*time.Millisecond)
		if ra, rb := admit(&s, at, c), admit(&back, at, c); ra != rb {
			t.Fatalf("%T: decoded state decides %+v, original %+v", s, rb, ra)
		}
	}
	if err := P(&back).UnmarshalBinary(append(enc, 0)); err == nil {
		t.Fatalf("%T: trailing byte accepted", s)
	}
	if len(enc) > 1 {
		if err := P(&back).UnmarshalBinary(enc[:len(enc)-1]); err == nil {
			t.Fatalf("%T: truncated encoding accepted", s)
		}
	}
}

func TestValidateNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		alg  Algorithm
		want string
	}{
		{TokenBucket{Rate: Rate{N: 0, Per: time.Second}, Burst: 1}, "rate.n"},
		{TokenBucket{Rate: Rate{N: 1}, Burst: 1}, "rate.per"},
		{GCRA{Rate: Rate{N: 1, Per: time.Second}}, "burst"},
		{LeakyQueue{Rate: Rate{N: 1, Per: time.Second}}, "capacity"},
		{FixedWindow{Limit: 1}, "window"},
		{SlidingLog{Limit: MaxSlidingLogLimit + 1, Window: time.Second}, "limit"},
		{SlidingCounter{Window: time.Second}, "limit"},
		{Concurrency{Limit: -1}, "limit"},
		{Quota{Limit: 1}, "period"},
	} {
		err := tc.alg.Validate()
		if err == nil || !bytes.HasPrefix([]byte(err.Error()), []byte(tc.want+":")) {
			t.Errorf("%T%+v: error %v, want one naming %s", tc.alg, tc.alg, err, tc.want)
		}
	}
}

func ExampleTokenBucket() {
	tb := TokenBucket{Rate: Rate{N: 10, Per: time.Minute}, Burst: 3}
	var s TokenBucketState
	now := epoch
	for i := range 4 {
		r := tb.Admit(&s, now, 1)
		fmt.Printf("hit %d: allowed=%v remaining=%d retry in %v\n", i, r.Allowed, r.Remaining,
			time.Duration(r.RetryAt-now))
	}
	// Output:
	// hit 0: allowed=true remaining=2 retry in 0s
	// hit 1: allowed=true remaining=1 retry in 0s
	// hit 2: allowed=true remaining=0 retry in 0s
	// hit 3: allowed=false remaining=0 retry in 6s
}
