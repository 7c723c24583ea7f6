package sim

import (
	"math"
	"testing"
	"time"
)

// mmc is an M/M/c workload: one tenant, Poisson arrivals at ρ·c jobs per
// second, exponential service of mean 1s, c one-GPU executors.
func mmc(c int, rho float64, jobs int64, warmup time.Duration) *Workload {
	return &Workload{
		Name:      "mmc",
		Seed:      1,
		Jobs:      jobs,
		Warmup:    Duration(warmup),
		Tenants:   []TenantSpec{{Name: "t", Tier: "default", Arrivals: Arrivals{Rate: Rate(rho * float64(c))}}},
		Models:    []ModelSpec{{Name: "m", Service: Service{Dist: "exponential", Mean: Duration(time.Second)}}},
		Executors: []ExecutorSpec{{Name: "gpu", Count: c}},
	}
}

func mustRun(t testing.TB, w *Workload, opt Options) *Report {
	t.Helper()
	if err := w.Check(); err != nil {
		t.Fatal(err)
	}
	r, err := Run(w, opt)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// erlangC is the mean wait in queue of M/M/c with arrival rate λ and
// service rate μ: C(c, a)/(cμ − λ), a = λ/μ.
func erlangC(c int, lambda, mu float64) float64 {
	a := lambda / mu
	rho := a / float64(c)
	term := 1.0 // a^k/k!
	sum := 0.0
	for k := 0; k < c; k++ {
		sum += term
		term *= a / float64(k+1)
	}
	top := term / (1 - rho) // a^c/c! · 1/(1−ρ)
	pWait := top / (sum + top)
	return pWait / (float64(c)*mu - lambda)
}

func relErr(got, want float64) float64 { return math.Abs(got-want) / want }
