package sim

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"pgregory.net/rapid"

	"github.com/sluicehq/sluice/fsm"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

func TestAppendCommandEncodesAsFSM(t *testing.T) {
	msgs := []struct {
		t fsm.CommandType
		m proto.Message
	}{
		{fsm.CmdSubmit, &raftv1.Submit{Tenant: "a", Spec: &sluicev1.JobSpec{Model: "m", Priority: 3}, ApiKeySha256: "k", ClientIp: "10.0.0.1", Method: "Submit"}},
		{fsm.CmdAssign, &raftv1.Assign{JobId: 7, Executor: "gpu-0001", Attempt: 2}},
		{fsm.CmdComplete, &raftv1.Complete{JobId: 7, Attempt: 2, RunNs: 12345}},
		{fsm.CmdTick, &raftv1.Tick{}},
	}
	buf := []byte("leftover")
	for _, x := range msgs {
		buf = appendCommand(buf[:0], x.t, 1234567890123, x.m)
		if want := fsm.MustEncode(x.t, 1234567890123, x.m); !bytes.Equal(buf, want) {
			t.Errorf("%v: %x, fsm.Encode gives %x", x.t, buf, want)
		}
	}
}

// richWorkload exercises every part of the engine: two tiers, delay,
// degrade, reject and quota rules, a queue timeout, retrying clients,
// failing attempts, crashes, an outage and a leader failover.
func richWorkload() *Workload {
	d := func(x time.Duration) Duration { return Duration(x) }
	return &Workload{
		Name: "rich", Seed: 5, Duration: d(40 * time.Minute), Warmup: d(5 * time.Minute),
		Tiers: []TierSpec{{Name: "free", Weight: 1}, {Name: "pro", Weight: 4}},
		Tenants: []TenantSpec{
			{Name: "free", Tier: "free", Count: 6, Mix: []ModelMix{{Model: "big", Share: 1}, {Model: "small", Share: 3}},
				Arrivals: Arrivals{Rate: 0.2, Diurnal: &Diurnal{Peak: 2, Trough: 0.5, PeakAt: d(time.Hour)},
					Bursts: []Burst{{At: d(10 * time.Minute), For: d(5 * time.Minute), Factor: 20}}},
				Retry: &RetrySpec{Attempts: 3, After: d(5 * time.Second)}},
			{Name: "pro", Tier: "pro", Count: 2, Model: "big", Priority: 5,
				Arrivals: Arrivals{Rate: 0.9, OnOff: &OnOff{On: d(6 * time.Minute), Off: d(3 * time.Minute), OffFactor: 0.1}}},
		},
		Models: []ModelSpec{
			{Name: "big", Service: Service{Dist: "lognormal", Mean: d(4 * time.Second), Stddev: d(3 * time.Second)},
				GPUMemoryMB: 40000, ColdStart: d(20 * time.Second), FailureRate: 0.05},
			{Name: "small", Service: Service{Dist: "exponential", Mean: d(time.Second)}, GPUMemoryMB: 16000},
		},
		Executors: []ExecutorSpec{
			{Name: "a100", Count: 4, GPUs: 2, GPUMemoryMB: 81920, Warm: []string{"big"}},
			{Name: "l4", Count: 4, GPUs: 1, GPUMemoryMB: 24000, Models: []string{"small"}},
		},
		Failures: Failures{
			Crashes:   &Crashes{MTBF: d(time.Hour), Repair: d(5 * time.Minute)},
			Outages:   []Outage{{At: d(25 * time.Minute), For: d(10 * time.Minute), Executors: Amount{Share: 0.34}}},
			Failovers: []Failover{{At: d(18 * time.Minute), Pause: d(8 * time.Second)}},
			Detect:    d(5 * time.Second),
		},
		Policy: &sluicev1.Policy{
			Tiers: []*sluicev1.Tier{{Name: "free", Weight: 1}, {Name: "pro", Weight: 4}},
			Models: []*sluicev1.Model{
				{Name: "big", DefaultDuration: durationpb.New(4 * time.Second), GpuMemoryMb: 40000},
				{Name: "small", DefaultDuration: durationpb.New(time.Second), GpuMemoryMb: 16000},
			},
			Defaults: &sluicev1.Defaults{QueueTimeout: durationpb.New(20 * time.Second), MaxAttempts: 3},
			Rules: []*sluicev1.Rule{
				{Name: "free-big", Match: &sluicev1.RuleMatch{Tier: "free", Model: "big"}, Action: sluicev1.OverLimitAction_OVER_LIMIT_ACTION_DEGRADE,
					FallbackModel: "small", Limit: &sluicev1.Rule_TokenBucket{TokenBucket: &sluicev1.TokenBucketLimit{Count: 1, Per: durationpb.New(time.Minute), Burst: 2}}},
				{Name: "free-rate", Match: &sluicev1.RuleMatch{Tier: "free"}, Action: sluicev1.OverLimitAction_OVER_LIMIT_ACTION_DELAY,
					MaxWait: durationpb.New(20 * time.Second), Limit: &sluicev1.Rule_TokenBucket{TokenBucket: &sluicev1.TokenBucketLimit{Count: 4, Per: durationpb.New(time.Minute), Burst: 4}}},
				{Name: "free-daily", Match: &sluicev1.RuleMatch{Tier: "free"}, Limit: &sluicev1.Rule_Quota{Quota: &sluicev1.QuotaLimit{Limit: 150}}},
			},
			Scheduling: &sluicev1.Scheduling{ReserveAfter: durationpb.New(30 * time.Second), MaxQueuedPerTenant: 200,
				MaxPredictedWait: durationpb.New(10 * time.Minute)},
		},
	}
}

func TestSameSeedGivesByteIdenticalReport(t *testing.T) {
	run := func(seed uint64) []byte {
		var b bytes.Buffer
		if err := mustRun(t, richWorkload(), Options{Seed: &seed}).WriteJSON(&b); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	a, b, c := run(5), run(5), run(6)
	if !bytes.Equal(a, b) {
		t.Fatalf("two runs with seed 5 differ:\n%s", firstDiff(a, b))
	}
	if bytes.Equal(a, c) {
		t.Fatal("seeds 5 and 6 gave the same report: the seed is not used")
	}
}

// TestEncodedLogGivesTheSameReport: committing the decoded message
// (fsm.ApplyCommand, the simulator's way) and committing its log entry bytes
// (fsm.Apply, the servers' way) give byte-identical reports and the same
// story for every job, through every part of the engine (richWorkload).
func TestEncodedLogGivesTheSameReport(t *testing.T) {
	for _, seed := range []uint64{5, 11} {
		run := func(encode bool) ([]byte, []JobOutcome) {
			var b bytes.Buffer
			var jobs []JobOutcome
			opt := Options{Seed: &seed, encodeLog: encode, OnJob: func(o JobOutcome) { jobs = append(jobs, o) }}
			if err := mustRun(t, richWorkload(), opt).WriteJSON(&b); err != nil {
				t.Fatal(err)
			}
			return b.Bytes(), jobs
		}
		direct, dj := run(false)
		encoded, ej := run(true)
		if !bytes.Equal(direct, encoded) {
			t.Fatalf("seed %d: the reports differ (ApplyCommand, then Apply):\n%s", seed, firstDiff(direct, encoded))
		}
		if !reflect.DeepEqual(dj, ej) {
			t.Fatalf("seed %d: the job outcomes differ", seed)
		}
		if len(dj) == 0 {
			t.Fatalf("seed %d: no jobs", seed)
		}
	}
}

func firstDiff(a, b []byte) string {
	la, lb := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := range min(len(la), len(lb)) {
		if la[i] != lb[i] {
			return la[i] + "\n" + lb[i]
		}
	}
	return "(lengths differ)"
}

// TestRichWorkloadAccountsForEveryJob: every job submitted is admitted or
// rejected, and every admitted job ends in exactly one way, through
// delays, degrades, retries, crashes, an outage and a failover.
func TestRichWorkloadAccountsForEveryJob(t *testing.T) {
	seen := map[uint64]bool{}
	var dup error
	r := mustRun(t, richWorkload(), Options{OnJob: func(o JobOutcome) {
		if o.ID != 0 && seen[o.ID] {
			dup = errors.New("job reported twice")
		}
		seen[o.ID] = true
	}})
	if dup != nil {
		t.Fatal(dup)
	}
	c := r.Cluster
	for _, g := range append(append([]Group{c.Group}, r.Tiers...), r.Tenants...) {
		if g.Submitted != g.Admitted+g.Rejected {
			t.Errorf("%s: submitted %d ≠ admitted %d + rejected %d", g.Name, g.Submitted, g.Admitted, g.Rejected)
		}
		if ended := g.Succeeded + g.DeadLettered + g.Failed + g.Expired + g.Unfinished; ended != g.Admitted {
			t.Errorf("%s: admitted %d, but %d ended (or are unfinished)", g.Name, g.Admitted, ended)
		}
	}
	if c.Delayed == 0 || c.Degraded == 0 || c.Rejected == 0 || c.Retried == 0 || c.Expired == 0 || c.DeadLettered+c.Succeeded == 0 {
		t.Errorf("the workload should delay, degrade, reject, retry and expire jobs: %+v", c.Group)
	}
	if c.Crashes == 0 || c.Failovers != 1 {
		t.Errorf("crashes %d, failovers %d", c.Crashes, c.Failovers)
	}
	if c.Utilisation <= 0 || c.Utilisation > 1 {
		t.Errorf("utilisation %v", c.Utilisation)
	}
	t.Logf("%+v", c.Group)
}

func TestReportWritersProduceEveryForm(t *testing.T) {
	r := mustRun(t, richWorkload(), Options{})
	var h, c, tb bytes.Buffer
	if err := r.WriteHTML(&h); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<svg", "Queue depth by tier", "Wait-time CDF by tier", "GPU utilisation", "Rejections per interval", "tier free", "free-rate"} {
		if !strings.Contains(h.String(), want) {
			t.Errorf("the HTML report lacks %q", want)
		}
	}
	for _, bad := range []string{"<script", "http://", "https://", "NaN", "Inf"} {
		if strings.Contains(h.String(), bad) {
			t.Errorf("the HTML report has %q: it must be self-contained and well-formed", bad)
		}
	}
	if err := r.WriteCSV(&c); err != nil {
		t.Fatal(err)
	}
	rows := strings.Split(strings.TrimSpace(c.String()), "\n")
	if rows[0] != "t_seconds,utilisation,running,up_gpus,queued_free,admitted_free,rejected_free,queued_pro,admitted_pro,rejected_pro" || len(rows) < 100 {
		t.Errorf("CSV: %d rows, header %q", len(rows), rows[0])
	}
	if err := r.WriteTable(&tb); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tb.String(), "tier pro") || !strings.Contains(tb.String(), "rejected by rule:") {
		t.Errorf("table:\n%s", tb.String())
	}
}

// TestSortNsSortsAsSlicesSort: the report's radix sort orders any int64s
// (negative, huge, all equal, few distinct high digits, sorted already) as
// slices.Sort does.
func TestSortNsSortsAsSlicesSort(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.SampledFrom([]int{0, 1, 100, 1 << 12, 1<<12 + 7, 20000}).Draw(t, "n")
		mode := rapid.IntRange(0, 4).Draw(t, "mode")
		r := rand.New(rand.NewPCG(rapid.Uint64().Draw(t, "seed"), 1))
		a := make([]int64, n)
		for i := range a {
			switch mode {
			case 0: // anything
				a[i] = int64(r.Uint64())
			case 1: // waits: up to a few hours in ns
				a[i] = r.Int64N(1 << 44)
			case 2: // few values around zero
				a[i] = r.Int64N(11) - 5
			case 3: // equal high digits, differing low ones
				a[i] = 1<<50 + r.Int64N(4)
			case 4: // sorted already
				a[i] = int64(i) * 3
			}
		}
		want := slices.Clone(a)
		slices.Sort(want)
		sortNs(a)
		if !slices.Equal(a, want) {
			t.Fatalf("sortNs differs from slices.Sort (n %d, mode %d)", n, mode)
		}
	})
}
