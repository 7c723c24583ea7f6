package limiter

import (
	"bytes"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// An engine restored from a snapshot re-encodes to the same bytes, and from then on decides
// and encodes exactly like the original.
func TestEngineSnapshotRoundTripIsByteIdentical(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		rules := make([]Rule, rapid.IntRange(1, 5).Draw(t, "rules"))
		for i := range rules {
			rules[i] = drawRule(t, i)
		}
		a := mustEngine(t, rules...)
		var b *Engine
		steps := rapid.IntRange(1, 80).Draw(t, "steps")
		split := rapid.IntRange(0, steps-1).Draw(t, "split")
		now := epoch
		var da, db Decision
		for i := range steps {
			if i == split {
				snap := a.AppendSnapshot(nil)
				b = mustEngine(t, rules...)
				if err := b.Restore(snap); err != nil {
					t.Fatal(err)
				}
				if again := b.AppendSnapshot(nil); !bytes.Equal(snap, again) {
					t.Fatalf("restored engine encodes differently:\n%x\n%x", snap, again)
				}
			}
			now += rapid.Int64Range(0, 3*sec).Draw(t, "gap")
			req := drawRequest(t)
			switch rapid.IntRange(0, 9).Draw(t, "op") {
			case 0:
				at := now - rapid.Int64Range(0, 2*sec).Draw(t, "ago")
				a.Refund(&req, now, at)
				if b != nil {
					b.Refund(&req, now, at)
				}
			case 1:
				at, actual := now-rapid.Int64Range(0, 2*sec).Draw(t, "ago"), rapid.Int64Range(0, 6).Draw(t, "actual")
				a.Settle(&req, now, at, actual)
				if b != nil {
					b.Settle(&req, now, at, actual)
				}
			case 2:
				a.Release(&req, now)
				if b != nil {
					b.Release(&req, now)
				}
			case 3:
				if na := a.Sweep(now); b != nil && b.Sweep(now) != na {
					t.Fatalf("step %d: sweeps dropped different key counts", i)
				}
			default:
				a.Admit(&req, now, &da)
				if b != nil {
					b.Admit(&req, now, &db)
					if da.Verdict != db.Verdict || da.At != db.At || da.RetryAt != db.RetryAt ||
						!equalRules(da.Rules(), db.Rules()) {
						t.Fatalf("step %d: restored engine decided %+v, original %+v", i, db, da)
					}
				}
			}
		}
		if !bytes.Equal(a.AppendSnapshot(nil), b.AppendSnapshot(nil)) {
			t.Fatal("original and restored engines diverged")
		}
	})
}

func equalRules(a, b []RuleResult) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func snapshotEngine(t *testing.T) (*Engine, []Rule, []byte) {
	rules := []Rule{
		{Name: "tb", Scope: PerTenant, Algorithm: TokenBucket{Rate: Rate{N: 1, Per: time.Second}, Burst: 3}},
		{Name: "log", Scope: PerModel, Algorithm: SlidingLog{Limit: 4, Window: time.Minute}},
		{Name: "quota", Scope: PerTenant, Algorithm: Quota{Limit: 9, Period: Monthly, Location: mustZone("Asia/Tokyo")}},
	}
	e := mustEngine(t, rules...)
	var d Decision
	for i, tenant := range []string{"ann", "bob", "cat", "ann"} {
		e.Admit(&Request{Tenant: tenant, Model: "m" + tenant, Cost: 1}, epoch+int64(i)*sec, &d)
	}
	return e, rules, e.AppendSnapshot(nil)
}

func TestEngineRestoreRefusesCorruptSnapshots(t *testing.T) {
	_, rules, snap := snapshotEngine(t)
	e := mustEngine(t, rules...)
	empty := e.AppendSnapshot(nil)
	for n := range len(snap) {
		if err := e.Restore(snap[:n]); err == nil {
			t.Fatalf("a snapshot cut to %d of %d bytes restored", n, len(snap))
		}
	}
	if err := e.Restore(append(bytes.Clone(snap), 0)); err == nil {
		t.Fatal("a snapshot with a trailing byte restored")
	}
	if !bytes.Equal(e.AppendSnapshot(nil), empty) {
		t.Fatal("failed restores changed the engine")
	}
	rapid.Check(t, func(rt *rapid.T) {
		bad := bytes.Clone(snap)
		for range rapid.IntRange(1, 4).Draw(rt, "flips") {
			i := rapid.IntRange(0, len(bad)-1).Draw(rt, "at")
			bad[i] ^= rapid.ByteRange(1, 255).Draw(rt, "xor")
		}
		e := mustEngine(rt, rules...)
		if err := e.Restore(bad); err == nil {
			// Some corruptions decode to another valid state; it must still round-trip.
			if again := e.AppendSnapshot(nil); !bytes.Equal(again, bad) {
				rt.Fatalf("accepted a snapshot that does not re-encode to itself")
			}
		}
	})
}

func TestEngineRestoreRefusesOtherRules(t *testing.T) {
	_, rules, snap := snapshotEngine(t)
	rules[0].Algorithm = TokenBucket{Rate: Rate{N: 2, Per: time.Second}, Burst: 3}
	if err := mustEngine(t, rules...).Restore(snap); err == nil {
		t.Fatal("restored a snapshot into an engine whose rule tb has another rate")
	}
	if err := mustEngine(t, rules[1:]...).Restore(snap); err == nil {
		t.Fatal("restored a snapshot into an engine with fewer rules")
	}
}
