package limiter

import (
	"fmt"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// Around New York's 2025 daylight-saving changes: 9 March has 23 hours, 2 November has 25.
var (
	springForward = time.Date(2025, 3, 9, 3, 0, 0, 0, mustZone("America/New_York")).UnixNano()
	fallBack      = time.Date(2025, 11, 2, 1, 30, 0, 0, mustZone("America/New_York")).UnixNano()
)

func TestQuotaNeverExceedsAllowanceWithinAPeriod(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		zone := rapid.SampledFrom([]string{"America/New_York", "Europe/Berlin", "America/Santiago",
			"Australia/Lord_Howe", "Asia/Kathmandu"}).Draw(t, "zone")
		loc := mustZone(zone)
		period := rapid.SampledFrom([]Period{Daily, Monthly}).Draw(t, "period")
		limit := drawLimit(t, "limit")
		q := Quota{Limit: limit, Period: period, Location: loc}
		var s QuotaState
		// Start a day or two before a DST change, and move in minutes to hours.
		now := rapid.SampledFrom([]int64{springForward, fallBack}).Draw(t, "near") -
			rapid.Int64Range(0, 2*int64(24*time.Hour)).Draw(t, "before")
		step := int64(time.Hour)
		if period == Monthly {
			step = int64(5 * 24 * time.Hour)
		}
		used := map[string]int64{}
		for i := range rapid.IntRange(1, 100).Draw(t, "hits") {
			now += drawGap(t, step)
			cost := drawCost(t, limit)
			local := time.Unix(0, now).In(loc)
			key := local.Format("2006-01")
			if period == Daily {
				key = local.Format("2006-01-02")
			}
			want := used[key]+cost <= limit
			res := q.Admit(&s, now, cost)
			if res.Allowed != want {
				t.Fatalf("hit %d at %v: cost %d with %d used on %s: allowed %v, want %v", i, local, cost, used[key], key, res.Allowed, want)
			}
			if want {
				used[key] += cost
			}
			if used[key] > limit {
				t.Fatalf("%s: %d used, allowance %d", key, used[key], limit)
			}
			start, end := time.Unix(0, s.Start).In(loc), time.Unix(0, s.End).In(loc)
			if s.End != 0 && (start.Hour() != 0 && zone != "America/Santiago" || end.Format(time.DateOnly) == start.Format(time.DateOnly)) {
				t.Fatalf("period %v – %v is not a local calendar %v", start, end, period)
			}
		}
	})
}

func TestQuotaResetsAtLocalMidnightAcrossDST(t *testing.T) {
	ny := mustZone("America/New_York")
	q := Quota{Limit: 2, Period: Daily, Location: ny}
	for _, tc := range []struct {
		day   time.Time
		hours int
	}{
		{time.Date(2025, 3, 9, 0, 30, 0, 0, ny), 23},
		{time.Date(2025, 11, 2, 0, 30, 0, 0, ny), 25},
		{time.Date(2025, 11, 3, 0, 30, 0, 0, ny), 24},
	} {
		var s QuotaState
		now := tc.day.UnixNano()
		midnight := time.Date(tc.day.Year(), tc.day.Month(), tc.day.Day()+1, 0, 0, 0, 0, ny).UnixNano()
		if start, end := q.PeriodAt(now); time.Duration(end-start) != time.Duration(tc.hours)*time.Hour {
			t.Errorf("%v: period of %v, want %dh", tc.day, time.Duration(end-start), tc.hours)
		}
		q.Admit(&s, now, 2)
		r := q.Admit(&s, midnight-1, 1)
		if r.Allowed || r.RetryAt != midnight || r.ResetAt != midnight {
			t.Errorf("%v: a nanosecond before local midnight: %+v, want rejected until %d", tc.day, r, midnight)
		}
		if r := q.Admit(&s, midnight, 2); !r.Allowed || r.Remaining != 0 {
			t.Errorf("%v: at local midnight: %+v, want the allowance back", tc.day, r)
		}
	}
}

func TestQuotaMonthlyResetsOnTheFirst(t *testing.T) {
	berlin := mustZone("Europe/Berlin")
	q := Quota{Limit: 5, Period: Monthly, Location: berlin}
	var s QuotaState
	q.Admit(&s, time.Date(2025, 3, 30, 23, 0, 0, 0, berlin).UnixNano(), 5) // the 23-hour day
	april := time.Date(2025, 4, 1, 0, 0, 0, 0, berlin).UnixNano()
	if r := q.Admit(&s, april-1, 1); r.Allowed || r.RetryAt != april {
		t.Fatalf("31 March 23:59:59.999999999: %+v, want rejected until 1 April", r)
	}
	if r := q.Admit(&s, april, 5); !r.Allowed {
		t.Fatalf("1 April 00:00: %+v, want admitted", r)
	}
}

// Periods tile time in every zone, including zones whose clocks skip or repeat midnight
// itself (Santiago, Havana, Beirut): each instant is in exactly one period, which starts
// where the last ended.
func TestQuotaPeriodsTileTime(t *testing.T) {
	for _, zone := range []string{"America/Santiago", "America/Havana", "Asia/Beirut", "America/New_York", "Asia/Tehran"} {
		for _, p := range []Period{Daily, Monthly} {
			q := Quota{Limit: 1, Period: p, Location: mustZone(zone)}
			from := time.Date(2022, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
			_, end := q.PeriodAt(from)
			for now := from; now < from+int64(3*365*24*time.Hour); now += int64(time.Hour) / 2 {
				start, e := q.PeriodAt(now)
				if now < start || now >= e {
					t.Fatalf("%s %v: %v is outside its period %v – %v", zone, p, time.Unix(0, now), time.Unix(0, start), time.Unix(0, e))
				}
				if now >= end {
					if start != end {
						t.Fatalf("%s %v: period starts at %v, the last ended at %v", zone, p, time.Unix(0, start), time.Unix(0, end))
					}
					end = e
				}
				if d := time.Duration(e - start); p == Daily && (d < 22*time.Hour || d > 26*time.Hour) {
					t.Fatalf("%s: a day of %v from %v", zone, d, time.Unix(0, start).In(mustZone(zone)))
				}
			}
		}
	}
}

func ExampleQuota() {
	ny, _ := time.LoadLocation("America/New_York")
	q := Quota{Limit: 5, Period: Daily, Location: ny}
	var s QuotaState
	now := time.Date(2025, 3, 8, 16, 48, 0, 0, ny).UnixNano()
	for range 3 {
		q.Admit(&s, now, 1)
	}
	r := q.Check(&s, now, 0)
	fmt.Printf("daily images %d/%d (resets in %v)\n", r.Limit-r.Remaining, r.Limit, time.Duration(r.ResetAt-now))
	// Output: daily images 3/5 (resets in 7h12m0s)
}
