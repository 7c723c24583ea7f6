package scheduler

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// followed feeds c a job of tier told model band b at now that starts
// after wait; ids are taken so that the leader follows them.
func (c *ETACalibration) feed(id *uint64, tier string, b Band, wait time.Duration, now int64) {
	*id += CalibrationEvery
	c.Told(*id, tier, b, 0, now)
	c.Started(*id, now+int64(wait))
}

// TestCalibrationCoversItsShare: when the model's ETAs are off by a random
// factor (log-normal, median 2), the calibrated band holds about 80 % of
// the waits that follow, around about twice the model's ETA; before
// calMin ratios, for another tier, and for jobs told they start at once,
// the model's band stands.
func TestCalibrationCoversItsShare(t *testing.T) {
	var c ETACalibration
	r := rand.New(rand.NewPCG(1, 2))
	model := Band{P10: 4 * time.Second, P50: 5 * time.Second, P90: 6 * time.Second}
	draw := func() time.Duration {
		return time.Duration(float64(model.P50) * 2 * math.Exp(0.6*r.NormFloat64()))
	}
	id := uint64(0)
	now := int64(0)
	for range calMin - 1 {
		c.feed(&id, "free", model, draw(), now)
	}
	if got := c.Band("free", model); got != model {
		t.Fatalf("after %d ratios: %v, want the model's band", calMin-1, got)
	}
	for range calWindow {
		c.feed(&id, "free", model, draw(), now)
	}
	// The ETA is the point of least relative error: the ratios' median
	// weighted by 1/ratio, for a log-normal exp(-σ²) times the median.
	b := c.Band("free", model)
	if want := 10 * math.Exp(-0.36); b.P50.Seconds() < 0.9*want || b.P50.Seconds() > 1.1*want {
		t.Fatalf("calibrated ETA %v, want about %.1fs", b.P50, want)
	}
	inside := 0
	const n = 4000
	for range n {
		if w := draw(); b.P10 <= w && w <= b.P90 {
			inside++
		}
	}
	if share := float64(inside) / n; share < 0.72 || share > 0.88 {
		t.Fatalf("band %v holds %.1f%% of the waits, want about 80%%", b, 100*share)
	}
	if got := c.Band("pro", model); got != model {
		t.Fatalf("another tier: %v, want the model's band", got)
	}
	if got := c.Band("free", Band{}); got != (Band{}) {
		t.Fatalf("a job told it starts at once: %v", got)
	}
	// Another order of magnitude is another class; while it has too few
	// ratios, the ETA stays the model's and the band spreads around it as
	// the tier's ratios of any magnitude spread around their median:
	// log-normal with σ = 0.6, from exp(-1.28·0.6) = 0.46 to 2.16 times it.
	long := Band{P10: 400 * time.Second, P50: 500 * time.Second, P90: 600 * time.Second}
	if got := c.Band("free", long); got.P50 != long.P50 || got.P10 < 190*time.Second || got.P10 > 280*time.Second ||
		got.P90 < 900*time.Second || got.P90 > 1300*time.Second {
		t.Fatalf("an ETA of another magnitude: %v, want 500s in about 230s–1080s", got)
	}
	for range calWindow {
		c.feed(&id, "free", long, long.P50/2, now)
	}
	if got := c.Band("free", long); got.P50 < 240*time.Second || got.P50 > 260*time.Second {
		t.Fatalf("an ETA of another magnitude with its own ratios: %v, want p50 about 250s", got)
	}
	if got := c.Band("free", model); got != b {
		t.Fatalf("the first class after the other learned: %v, was %v", got, b)
	}
}

// TestCalibrationFollowsFewAndForgets: only the jobs Follows picks are
// followed, at most calFollowMax at once; one that never starts is dropped
// after calStale, or when forgotten.
func TestCalibrationFollowsFewAndForgets(t *testing.T) {
	var c ETACalibration
	b := Band{P10: time.Second, P50: 2 * time.Second, P90: 3 * time.Second}
	c.Told(CalibrationEvery+1, "free", b, 0, 0)
	c.Told(CalibrationEvery, "free", b, 0, 0)
	c.Told(2*CalibrationEvery, "free", b, time.Minute, 0) // delayed past its ETA
	c.Told(3*CalibrationEvery, "free", Band{}, 0, 0)      // starts at once
	if len(c.followed) != 1 {
		t.Fatalf("following %d jobs, want 1", len(c.followed))
	}
	c.Forget(CalibrationEvery)
	for i := range uint64(calFollowMax) {
		c.Told((i+1)*CalibrationEvery, "free", b, 0, 0)
	}
	c.Told((calFollowMax+1)*CalibrationEvery, "free", b, 0, 1)
	if len(c.followed) != calFollowMax {
		t.Fatalf("following %d, want the cap %d", len(c.followed), calFollowMax)
	}
	c.Told((calFollowMax+2)*CalibrationEvery, "free", b, 0, calStale+1)
	if len(c.followed) != 1 {
		t.Fatalf("after the stale ones are dropped: following %d, want 1", len(c.followed))
	}
}

// TestCalibrationFollowsMoreWhileNew: while a tier's calibration holds
// fewer than calWarm ratios it follows one job in calWarmEvery, and learns
// from them; then one in CalibrationEvery, while a tier it has learned
// little of is still followed closely.
func TestCalibrationFollowsMoreWhileNew(t *testing.T) {
	var c ETACalibration
	b := Band{P10: time.Second, P50: 2 * time.Second, P90: 3 * time.Second}
	if !c.Follows(calWarmEvery, "free") || c.Follows(calWarmEvery+1, "free") || !c.Follows(CalibrationEvery, "free") {
		t.Fatal("a new calibration does not follow one job in calWarmEvery (and no other)")
	}
	c.Told(calWarmEvery, "free", b, 0, 0)
	c.Started(calWarmEvery, int64(4*time.Second))
	if c.Learned() != 1 {
		t.Fatalf("learned %d ratios from a job followed while new, want 1", c.Learned())
	}
	id := uint64(1 << 20)
	for c.Learned() < calWarm {
		c.feed(&id, "free", b, 4*time.Second, 0)
	}
	if c.Follows(id+calWarmEvery, "free") || !c.Follows(id+CalibrationEvery, "free") {
		t.Fatalf("after %d ratios: still follows one in %d, or no longer one in %d", calWarm, calWarmEvery, CalibrationEvery)
	}
	if !c.Follows(id+calWarmEvery, "pro") {
		t.Fatal("a tier with no ratios yet is not followed closely")
	}
	for k := uint64(0); k < 1000; k++ { // every id the calibration could follow passes MayFollow
		if c.Follows(k, "pro") && !MayFollow(k) {
			t.Fatalf("job %d is followed but MayFollow says no: its start would be missed", k)
		}
	}
}

// TestCalibrationLearnsStartsAtOnce: a job that starts the moment it is
// told (or as the clock steps back) teaches "much sooner", not "on time".
func TestCalibrationLearnsStartsAtOnce(t *testing.T) {
	var c ETACalibration
	model := Band{P10: 4 * time.Second, P50: 5 * time.Second, P90: 6 * time.Second}
	id := uint64(0)
	for k := range 2 * calWindow { // the window wraps: its sums stay whole
		c.feed(&id, "free", model, -time.Duration(k%2)*time.Millisecond, 0)
	}
	if b := c.Band("free", model); b.P90 > 100*time.Millisecond {
		t.Fatalf("after starts at once: %v, want a band near 0", b)
	}
	k := &c.classes[calMagnitudes]
	sum := 0.0
	for _, w := range k.weights {
		sum += w
	}
	if math.Abs(sum-k.weight) > 1e-6*k.weight {
		t.Fatalf("weights sum to %v, the total says %v", sum, k.weight)
	}
}
