package sim

import (
	"fmt"
	"math"
	"sort"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// mmcCases are the M/M/c validation cases and how many jobs each needs for
// its mean wait to have a relative standard error of 2.2%, so that 5% is
// more than two standard errors. The counts come from the spread of the
// mean over 40 to 100 seeds of the same M/M/c FIFO queue: at ρ = 0.9 the
// queue length wanders for hundreds of service times, and even 300k jobs
// leave a 4–5% standard error; at c = 8, ρ = 0.5 the mean wait is short
// (15 ms) and noisy in relative terms.
var mmcCases = []struct {
	c    int
	rho  float64
	jobs int
}{
	{1, 0.5, 80_000}, {1, 0.8, 330_000}, {1, 0.9, 1_050_000},
	{2, 0.5, 135_000}, {2, 0.8, 385_000}, {2, 0.9, 1_150_000},
	{4, 0.5, 330_000}, {4, 0.8, 500_000}, {4, 0.9, 1_300_000},
	{8, 0.5, 950_000}, {8, 0.8, 700_000}, {8, 0.9, 1_550_000},
}

// simJobsUnderRace is how many jobs of each case go through the simulator
// under the race detector.
const simJobsUnderRace = 8_000

// fifoPath is the M/M/c FIFO queue (Kiefer–Wolfowitz recursion) fed by the
// simulator's own generators for the workload's one tenant and one model:
// the same arrival stream, and service times drawn in the order jobs start
// (in FIFO order, arrival order). It returns arrival offsets, service times
// and waits of n jobs.
func fifoPath(w *Workload, c, n int) (arrive, service, wait []int64) {
	g := arrivals{spec: &w.Tenants[0].Arrivals, r: stream(w.Seed, "arrivals/"+w.Tenants[0].Name)}
	sr := stream(w.Seed, "service/"+w.Models[0].Name)
	free := make([]int64, c) // when each server is next free
	arrive, service, wait = make([]int64, n), make([]int64, n), make([]int64, n)
	for i := range n {
		at, _, ok := g.draw()
		if !ok {
			panic("poisson arrivals ended")
		}
		k := 0
		for x := range free {
			if free[x] < free[k] {
				k = x
			}
		}
		s := w.Models[0].Service.sample(sr)
		start := max(at, free[k])
		free[k] = start + s
		arrive[i], service[i], wait[i] = at, s, start-at
	}
	return
}

// TestMMcMeanWaitWithinFivePercentOfErlangC runs M/M/1 and M/M/c (c = 1, 2,
// 4, 8 at ρ = 0.5, 0.8, 0.9) through the simulator — one tenant, one
// model, c one-GPU executors, so the fair queue is FIFO — and checks two
// things: every job's wait equals, to the nanosecond, the FIFO M/M/c
// recursion over the same arrival and service times (the real fsm and
// dispatch path is an M/M/c queue, no idle executor while a job waits,
// FIFO order), and the mean wait over the case's jobs (after 2% warm-up)
// is within 5% of the Erlang-C formula. Under the race detector only the
// first simJobsUnderRace jobs go through the simulator; the mean is over
// the same sample path extended by the simulator's own generators.
func TestMMcMeanWaitWithinFivePercentOfErlangC(t *testing.T) {
	for i, tc := range mmcCases {
		t.Run(fmt.Sprintf("c=%d/rho=%.1f", tc.c, tc.rho), func(t *testing.T) {
			t.Parallel()
			nSim := tc.jobs
			if raceBuild {
				nSim = simJobsUnderRace
			}
			w := mmc(tc.c, tc.rho, int64(nSim), 0)
			w.Seed = uint64(101 + i) // independent cases: no common random numbers
			type rec struct {
				id              uint64
				sub, start, end int64
			}
			var recs []rec
			r := mustRun(t, w, Options{NoSeries: true, OnJob: func(o JobOutcome) {
				recs = append(recs, rec{o.ID, o.Submitted, o.Started, o.Finished})
			}})
			if len(recs) != nSim || r.Cluster.Succeeded != int64(nSim) {
				t.Fatalf("%d outcomes, %d succeeded; want %d", len(recs), r.Cluster.Succeeded, nSim)
			}
			sort.Slice(recs, func(a, b int) bool { return recs[a].id < recs[b].id })
			arrive, service, wait := fifoPath(w, tc.c, tc.jobs)
			for i, x := range recs {
				if x.sub != arrive[i] || x.end-x.start != service[i] || x.start-x.sub != wait[i] {
					t.Fatalf("job %d (id %d): arrived %d, waited %d, ran %d; the FIFO M/M/%d queue has %d, %d, %d",
						i, x.id, x.sub, x.start-x.sub, x.end-x.start, tc.c, arrive[i], wait[i], service[i])
				}
			}
			warm := tc.jobs / 50
			var sum float64
			for _, v := range wait[warm:] {
				sum += float64(v)
			}
			got := sum / float64(len(wait)-warm) / 1e9
			want := erlangC(tc.c, tc.rho*float64(tc.c), 1)
			t.Logf("mean wait %.4fs over %d jobs (%d through the simulator), Erlang C %.4fs, error %+.2f%%",
				got, tc.jobs-warm, nSim, want, 100*(got-want)/want)
			if relErr(got, want) > 0.05 {
				t.Errorf("mean wait %.4fs is more than 5%% from Erlang C's %.4fs", got, want)
			}
		})
	}
}

// TestLittlesLawWithinTwoPercent checks L = λW per tier and for the
// cluster: the time-average number of queued jobs against the admission
// rate times the mean wait, on two tiers of unequal weight sharing four
// executors at 85% load with lognormal service.
func TestLittlesLawWithinTwoPercent(t *testing.T) {
	w := &Workload{
		Name: "little", Seed: 7, Duration: Duration(90 * time.Minute), Warmup: Duration(10 * time.Minute),
		Tiers: []TierSpec{{Name: "free", Weight: 1}, {Name: "pro", Weight: 4}},
		Tenants: []TenantSpec{
			{Name: "f", Tier: "free", Count: 3, Arrivals: Arrivals{Rate: 0.3}},
			{Name: "p", Tier: "pro", Count: 2, Arrivals: Arrivals{Rate: 0.6}},
		},
		Models:    []ModelSpec{{Name: "m", Service: Service{Dist: "lognormal", Mean: Duration(1600 * time.Millisecond), Stddev: Duration(time.Second)}}},
		Executors: []ExecutorSpec{{Name: "gpu", Count: 4}},
	}
	r := mustRun(t, w, Options{NoSeries: true})
	check := func(name string, g Group) {
		lambda := float64(g.Admitted) / r.WindowSeconds
		lw := lambda * g.Wait.Mean
		t.Logf("%s: L %.4f, λ %.4f/s, W %.4fs, λW %.4f", name, g.MeanQueued, lambda, g.Wait.Mean, lw)
		if g.MeanQueued < 0.1 {
			t.Fatalf("%s: mean queue %.4f is too short to test anything", name, g.MeanQueued)
		}
		if relErr(lw, g.MeanQueued) > 0.02 {
			t.Errorf("%s: λW = %.4f is more than 2%% from L = %.4f", name, lw, g.MeanQueued)
		}
	}
	for _, g := range r.Tiers {
		check("tier "+g.Name, g)
	}
	check("cluster", r.Cluster.Group)
}

// TestSaturatedTenantsWeighted2To1GetGPUTimeWithin2Percent: two tenants
// of one tier with weights 2 and 1, each sending more than its share of
// eight executors, get GPU time within 2% of 2:1.
func TestSaturatedTenantsWeighted2To1GetGPUTimeWithin2Percent(t *testing.T) {
	no := false
	w := &Workload{
		Name: "fair", Seed: 3, Duration: Duration(time.Hour), Warmup: Duration(5 * time.Minute), Drain: &no,
		Tiers: []TierSpec{{Name: "shared", Weight: 1}},
		Tenants: []TenantSpec{
			{Name: "heavy", Tier: "shared", Weight: 2, Arrivals: Arrivals{Rate: 6}},
			{Name: "light", Tier: "shared", Weight: 1, Arrivals: Arrivals{Rate: 3.5}},
		},
		Models:    []ModelSpec{{Name: "m", Service: Service{Dist: "exponential", Mean: Duration(time.Second)}}},
		Executors: []ExecutorSpec{{Name: "gpu", Count: 8}},
	}
	r := mustRun(t, w, Options{NoSeries: true})
	heavy, light := r.Tenants[0], r.Tenants[1]
	ratio := heavy.GPUSeconds / light.GPUSeconds
	t.Logf("heavy %.0f GPU-s, light %.0f GPU-s: %.4f : 1; utilisation %.4f; Jain %.4f",
		heavy.GPUSeconds, light.GPUSeconds, ratio, r.Cluster.Utilisation, r.Cluster.Jain)
	if light.Unfinished < 100 || heavy.Unfinished < 100 {
		t.Fatalf("not saturated: %d and %d jobs left queued", heavy.Unfinished, light.Unfinished)
	}
	if math.Abs(ratio/2-1) > 0.02 {
		t.Errorf("GPU time %.4f : 1 is more than 2%% from 2 : 1", ratio)
	}
	if r.Cluster.Jain < 0.999 {
		t.Errorf("Jain's index %.4f: each tenant should get its weighted share", r.Cluster.Jain)
	}
}

// TestTokenBucketTenantNeverAdmitsMoreThanBurstPlusRateTimesT: a tenant
// limited to 5 jobs/s with bursts of 10, sending 15/s with a 4× flash
// crowd, is admitted at most burst + rate × T in every interval T between
// two admissions — and the limit does bind (jobs are rejected, and
// admissions reach most of what the bucket allows).
func TestTokenBucketTenantNeverAdmitsMoreThanBurstPlusRateTimesT(t *testing.T) {
	const count, burst = 5, 10
	per := time.Second
	w := &Workload{
		Name: "bucket", Seed: 11, Duration: Duration(10 * time.Minute),
		Tenants: []TenantSpec{{Name: "limited", Tier: "free", Arrivals: Arrivals{Rate: 15,
			Bursts: []Burst{{At: Duration(2 * time.Minute), For: Duration(30 * time.Second), Factor: 4}}}}},
		Models:    []ModelSpec{{Name: "m", Service: Service{Dist: "constant", Mean: Duration(100 * time.Millisecond)}}},
		Executors: []ExecutorSpec{{Name: "gpu", Count: 4}},
		Policy: &sluicev1.Policy{
			Tiers: []*sluicev1.Tier{{Name: "free", Weight: 1}},
			Rules: []*sluicev1.Rule{{Name: "free-rate", Match: &sluicev1.RuleMatch{Tier: "free"},
				Limit: &sluicev1.Rule_TokenBucket{TokenBucket: &sluicev1.TokenBucketLimit{
					Count: count, Per: durationpb.New(per), Burst: burst}}}},
		},
	}
	var admitted []int64
	r := mustRun(t, w, Options{NoSeries: true, OnJob: func(o JobOutcome) {
		if o.State != "REJECTED" {
			admitted = append(admitted, o.Submitted)
		}
	}})
	sort.Slice(admitted, func(a, b int) bool { return admitted[a] < admitted[b] })
	// For admissions i ≤ j: j−i+1 ≤ burst + count·(t_j−t_i)/per, i.e.
	// g_j − g_i ≤ (burst−1)·per with g_k = k·per − count·t_k.
	minG := int64(math.MaxInt64)
	worst := int64(math.MinInt64)
	for k, tk := range admitted {
		g := int64(k)*int64(per) - count*tk
		minG = min(minG, g)
		worst = max(worst, g-minG)
	}
	if worst > (burst-1)*int64(per) {
		t.Errorf("some interval admitted %.3f jobs beyond burst + rate × T", float64(worst)/float64(per)-(burst-1))
	}
	T := r.StopSeconds
	allowed := burst + count*T
	t.Logf("admitted %d, rejected %d over %.0fs; the bucket allows %.0f", len(admitted), r.Cluster.Rejected, T, allowed)
	if r.Cluster.Rejected == 0 || r.Cluster.RejectedBy["free-rate"] != r.Cluster.Rejected {
		t.Errorf("rejected %d (%v): the rule should bind", r.Cluster.Rejected, r.Cluster.RejectedBy)
	}
	if float64(len(admitted)) < 0.95*allowed {
		t.Errorf("admitted %d of the %.0f the bucket allows: it refuses jobs that fit", len(admitted), allowed)
	}
}
