package sim

import (
	"fmt"
	"math"
)

// missRule stops a plan's run as soon as one of its objectives is certain
// to be missed, whatever the rest of the run does: an overloaded count,
// the slowest kind to simulate, is then given up in its first simulated
// hours. Certain means: even if every job the group can still be sent
// (at most maxJobs) met the objective, the figure would still miss it.
type missRule struct {
	slo     SLO
	tier    int32   // -1: every tier
	maxJobs float64 // the most jobs the group can be sent in the window
	bad     float64 // jobs that already break the objective
	waitSum float64 // seconds, for mean_wait
}

// maxJobsBound is how far above its expectation a Poisson count is taken
// to reach: 6 standard deviations (the chance of more is about 1e-9).
const maxJobsBound = 6

// newMissRules builds the rules for a plan's objectives, or nil when one
// cannot be bounded (unfinished is only known at the end).
func (e *engine) newMissRules(slos []SLO, tier string) []*missRule {
	ti := int32(-1)
	if tier != "" {
		ti = -2 // the tier sends nothing: no rule can fire
		for i, t := range e.tiers {
			if t == tier {
				ti = int32(i)
			}
		}
	}
	n := e.expectedJobs(ti)
	n += maxJobsBound*math.Sqrt(n) + 10
	if e.w.Jobs > 0 {
		n = min(n, float64(e.w.Jobs))
	}
	var out []*missRule
	for _, s := range slos {
		if s.Metric == "unfinished" {
			continue
		}
		out = append(out, &missRule{slo: s, tier: ti, maxJobs: n})
	}
	return out
}

// expectedJobs is how many jobs the tier's tenants (all, for -1) are
// expected to send from the warm-up to the end of arrivals: the integral
// of their rate curves, or the trace lines in that window.
func (e *engine) expectedJobs(tier int32) float64 {
	from, to := e.warmAt-e.base, e.stopAt-e.base
	if e.stopAt == never {
		to = math.MaxInt64
	}
	total := 0.0
	for i := range e.tenants {
		t := &e.tenants[i]
		if tier != -1 && t.tierIdx != tier {
			continue
		}
		if t.arrivals.trace != nil {
			for _, it := range t.arrivals.trace {
				if it.at >= from && it.at < to {
					total++
				}
			}
			continue
		}
		if to == math.MaxInt64 {
			return math.Inf(1) // only a job count bounds the run
		}
		g := arrivals{spec: t.arrivals.spec}
		for at := from; at < to; {
			b := min(g.nextBreak(at), to)
			total += g.rate(at) * float64(b-at) / 1e9
			at = b
		}
	}
	return total
}

func (m *missRule) applies(tier int32) bool { return m.tier == -1 || m.tier == tier }

// waited counts a measured job's wait (seconds) when it starts.
func (m *missRule) waited(tier int32, w float64) {
	if !m.applies(tier) {
		return
	}
	switch m.slo.Metric {
	case "mean_wait":
		m.waitSum += w
	case "p50_wait", "p95_wait", "p99_wait", "max_wait":
		if !m.slo.met(w) {
			m.bad++
		}
	}
}

// turnedAround counts a measured job's turnaround (seconds) on success.
func (m *missRule) turnedAround(tier int32, s float64) {
	if m.applies(tier) && (m.slo.Metric == "p95_turnaround" || m.slo.Metric == "p99_turnaround") && !m.slo.met(s) {
		m.bad++
	}
}

// ended counts a measured job that was rejected or expired.
func (m *missRule) ended(tier int32, state string) {
	if m.applies(tier) && ((m.slo.Metric == "rejected" && state == "REJECTED") || (m.slo.Metric == "expired" && state == "EXPIRED")) {
		m.bad++
	}
}

// missed reports whether the objective is now certain to be missed. For a
// quantile q the final value (nearest rank over n ≤ maxJobs values) meets
// the bound only if at most n − ⌈q·n⌉ values break it.
func (m *missRule) missed() bool {
	n := m.maxJobs
	switch m.slo.Metric {
	case "mean_wait":
		return !m.slo.met(m.waitSum / n)
	case "max_wait":
		return m.bad > 0
	case "p50_wait":
		return m.bad > n-math.Ceil(0.50*n)
	case "p95_wait", "p95_turnaround":
		return m.bad > n-math.Ceil(0.95*n)
	case "p99_wait", "p99_turnaround":
		return m.bad > n-math.Ceil(0.99*n)
	case "rejected", "expired":
		return !m.slo.met(m.bad / n)
	}
	return false
}

func (m *missRule) String() string {
	return fmt.Sprintf("%s missed for sure", m.slo)
}
