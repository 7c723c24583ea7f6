package metrics

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluicehq/sluice/fsm"
	"github.com/sluicehq/sluice/limiter"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// replica builds a state machine with tenants t00…t(n-1) on the pro tier and
// one queued job each, applied at the wall clock's now.
func replica(t *testing.T, tenants int, m *Server) *fsm.FSM {
	t.Helper()
	f := replicaWithJobs(t, tenants, tenants)
	if m != nil {
		f.SetObserver(m)
	}
	return f
}

// replicaWithJobs builds a state machine with tenants t00…t(n-1) on the pro
// tier and jobs queued jobs spread over them.
func replicaWithJobs(t testing.TB, tenants, jobs int) *fsm.FSM {
	t.Helper()
	f := fsm.New()
	p := &sluicev1.Policy{Tiers: []*sluicev1.Tier{{Name: "pro", Weight: 1}}, Models: []*sluicev1.Model{{Name: "sdxl"}}}
	for i := range tenants {
		p.Tenants = append(p.Tenants, &sluicev1.Tenant{Name: fmt.Sprintf("t%02d", i), Tier: "pro"})
	}
	p.Scheduling = &sluicev1.Scheduling{MaxQueuedPerTenant: int64(jobs)}
	now := time.Now().UnixNano()
	if r := f.Apply(1, fsm.MustEncode(fsm.CmdSetPolicy, now, &raftv1.SetPolicy{Policy: p})); r.Err != nil {
		t.Fatal(r.Err)
	}
	for i := range jobs {
		r := f.Apply(uint64(2+i), fsm.MustEncode(fsm.CmdSubmit, now, &raftv1.Submit{Tenant: fmt.Sprintf("t%02d", i%tenants), Spec: &sluicev1.JobSpec{Model: "sdxl"}}))
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	return f
}

// TestTenantLabelIsBoundedByMaxTenants: past the first maxTenants tenants by
// name, queued jobs are counted under tenant "other".
func TestTenantLabelIsBoundedByMaxTenants(t *testing.T) {
	m := NewServer("n1", 3, Source{
		Raft:      func() Raft { return Raft{Term: 3, Commit: 10, Applied: 7} },
		Executors: func() []Executor { return nil },
		Leading:   func() bool { return false },
	})
	m.src.FSM = replica(t, 10, nil).Reads()
	want := `
# HELP sluice_jobs_queued Jobs queued now.
# TYPE sluice_jobs_queued gauge
sluice_jobs_queued{model="sdxl",scope="replica",tenant="other",tier="pro"} 7
sluice_jobs_queued{model="sdxl",scope="replica",tenant="t00",tier="pro"} 1
sluice_jobs_queued{model="sdxl",scope="replica",tenant="t01",tier="pro"} 1
sluice_jobs_queued{model="sdxl",scope="replica",tenant="t02",tier="pro"} 1
# HELP sluice_raft_apply_lag Committed log entries this node has not applied yet.
# TYPE sluice_raft_apply_lag gauge
sluice_raft_apply_lag{scope="node"} 3
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "sluice_jobs_queued", "sluice_raft_apply_lag"); err != nil {
		t.Fatal(err)
	}
	// A follower exports no leader-only gauges.
	if n, err := testutil.GatherAndCount(m.Registry(), "sluice_executors", "sluice_gpus"); err != nil || n != 0 {
		t.Fatalf("a follower exports %d leader gauges (%v)", n, err)
	}
}

// TestReplayedTransitionsAreNotCounted: transitions of entries at or below
// the index a node replays at start, and old ones a new node catches up
// with, are history; new ones count.
func TestReplayedTransitionsAreNotCounted(t *testing.T) {
	m := NewServer("n1", 0, Source{})
	m.SkipReplayTo(5)
	now := time.Now().UnixNano()
	job := func(at int64) *raftv1.JobRecord {
		return &raftv1.JobRecord{Tier: "pro", State: sluicev1.JobState_JOB_STATE_RUNNING, Attempt: 1, CreatedNs: at - int64(time.Second),
			Spec: &sluicev1.JobSpec{Model: "sdxl"}, Transitions: []*raftv1.TransitionRecord{{AtNs: at}}}
	}
	m.Transition(5, job(now), sluicev1.JobState_JOB_STATE_QUEUED)                          // replayed
	m.Transition(6, job(now-int64(2*staleTransition)), sluicev1.JobState_JOB_STATE_QUEUED) // history
	m.Transition(7, job(now), sluicev1.JobState_JOB_STATE_QUEUED)                          // news
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m.jobWait)
	mf, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range mf {
		if f.GetName() == "sluice_job_wait_seconds" {
			if c := f.Metric[0].Histogram.GetSampleCount(); c != 1 {
				t.Fatalf("%d waits counted, want 1 (the replayed and the stale one are history)", c)
			}
			if s := f.Metric[0].Histogram.GetSampleSum(); s != 1 {
				t.Fatalf("wait %v s, want 1", s)
			}
			return
		}
	}
	t.Fatal("no sluice_job_wait_seconds")
}

// TestTransitionsCountedOnAReplica: a job's life through the state machine
// moves the wait, run, turnaround, requeue, attempt and dead-letter series.
func TestTransitionsCountedOnAReplica(t *testing.T) {
	m := NewServer("n1", 0, Source{})
	f := replica(t, 1, m)
	now := time.Now().UnixNano()
	id := uint64(2) // the job's id is its Submit entry's index
	for attempt := int32(1); attempt <= 3; attempt++ {
		if r := f.Apply(uint64(10*attempt), fsm.MustEncode(fsm.CmdAssign, now, &raftv1.Assign{JobId: id, Attempt: attempt, Executor: "e1"})); r.Err != nil {
			t.Fatal(r.Err)
		}
		if r := f.Apply(uint64(10*attempt+1), fsm.MustEncode(fsm.CmdRequeue, now, &raftv1.Requeue{JobId: id, Attempt: attempt})); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	for _, c := range []struct {
		got  float64
		want float64
		what string
	}{
		{testutil.ToFloat64(m.requeues.WithLabelValues("executor_lost")), 2, "requeues (executor_lost)"},
		{testutil.ToFloat64(m.attempts.WithLabelValues("requeued")), 2, "attempts requeued"},
		{testutil.ToFloat64(m.attempts.WithLabelValues("failed")), 1, "attempts failed (the last, dead-lettered)"},
		{testutil.ToFloat64(m.deadLetters.WithLabelValues("executor_lost")), 1, "dead letters (executor_lost)"},
	} {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.what, c.got, c.want)
		}
	}
	if n := testutil.CollectAndCount(m.jobWait); n != 1 {
		t.Errorf("%d wait series, want one (only the first attempt's start is a wait)", n)
	}
}

// TestDecisionOutcomes: over, near (under a fifth left) and within limit.
func TestDecisionOutcomes(t *testing.T) {
	for _, c := range []struct {
		r    limiter.RuleResult
		want string
	}{
		{limiter.RuleResult{Result: limiter.Result{Allowed: false, Limit: 10}}, "over_limit"},
		{limiter.RuleResult{Result: limiter.Result{Allowed: true, Limit: 10, Remaining: 1}}, "near_limit"},
		{limiter.RuleResult{Result: limiter.Result{Allowed: true, Limit: 10, Remaining: 2}}, "within_limit"},
		{limiter.RuleResult{Result: limiter.Result{Allowed: true}}, "within_limit"},
	} {
		if got := decisionOutcome(c.r); got != c.want {
			t.Errorf("%+v: %s, want %s", c.r.Result, got, c.want)
		}
	}
	if errorClass("runner_tempfail") != "runner_tempfail" || errorClass("whatever a runner says") != "other" {
		t.Error("error codes outside the known set must be \"other\"")
	}
}

// TestETAFared: where a start falls against the band it was told, and the
// error it counts.
func TestETAFared(t *testing.T) {
	s := time.Second
	for _, c := range []struct {
		p10, p90, wait time.Duration
		want           string
	}{
		{0, 0, 300 * time.Millisecond, "at_once"},
		{0, 0, s, "at_once"},
		{0, 0, 3 * s, "at_once_late"},
		{2 * s, 6 * s, s, "early"},
		{2 * s, 6 * s, 2 * s, "inside"},
		{2 * s, 6 * s, 6 * s, "inside"},
		{2 * s, 6 * s, 7 * s, "late"},
	} {
		if got := etaBand(c.p10, c.p90, c.wait); got != c.want {
			t.Errorf("told %v–%v, waited %v: %s, want %s", c.p10, c.p90, c.wait, got, c.want)
		}
	}
	m := NewServer("n1", 0, Source{})
	m.ETAFared("pro", 2*s, 4*s, 6*s, 5*s)             // inside, error 20 %
	m.ETAFared("pro", 2*s, 4*s, 6*s, 10*s)            // late, error 60 %
	m.ETAFared("free", 0, 0, 0, 500*time.Millisecond) // at once, error 50 % (of a second)
	if got := testutil.ToFloat64(m.etaStarts.WithLabelValues("pro", "inside")); got != 1 {
		t.Errorf("pro inside: %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.etaStarts.WithLabelValues("pro", "late")); got != 1 {
		t.Errorf("pro late: %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.etaStarts.WithLabelValues("free", "at_once")); got != 1 {
		t.Errorf("free at once: %v, want 1", got)
	}
	want := `
		# HELP sluice_eta_error_ratio How far the ETA told at Submit was from the wait to the first start, relative to the wait (waits under 1 s taken as 1 s), for one admitted job in 16 (by id), by tier.
		# TYPE sluice_eta_error_ratio histogram
		sluice_eta_error_ratio_bucket{scope="leader",tier="free",le="0.05"} 0
		sluice_eta_error_ratio_bucket{scope="leader",tier="free",le="0.1"} 0
		sluice_eta_error_ratio_bucket{scope="leader",tier="free",le="0.2"} 0
		sluice_eta_error_ratio_bucket{scope="leader",tier="free",le="0.3"} 0
		sluice_eta_error_ratio_bucket{scope="leader",tier="free",le="0.5"} 1
		sluice_eta_error_ratio_bucket{scope="leader",tier="free",le="0.75"} 1
		sluice_eta_error_ratio_bucket{scope="leader",tier="free",le="1"} 1
		sluice_eta_error_ratio_bucket{scope="leader",tier="free",le="2"} 1
		sluice_eta_error_ratio_bucket{scope="leader",tier="free",le="5"} 1
		sluice_eta_error_ratio_bucket{scope="leader",tier="free",le="10"} 1
		sluice_eta_error_ratio_bucket{scope="leader",tier="free",le="+Inf"} 1
		sluice_eta_error_ratio_sum{scope="leader",tier="free"} 0.5
		sluice_eta_error_ratio_count{scope="leader",tier="free"} 1
		sluice_eta_error_ratio_bucket{scope="leader",tier="pro",le="0.05"} 0
		sluice_eta_error_ratio_bucket{scope="leader",tier="pro",le="0.1"} 0
		sluice_eta_error_ratio_bucket{scope="leader",tier="pro",le="0.2"} 1
		sluice_eta_error_ratio_bucket{scope="leader",tier="pro",le="0.3"} 1
		sluice_eta_error_ratio_bucket{scope="leader",tier="pro",le="0.5"} 1
		sluice_eta_error_ratio_bucket{scope="leader",tier="pro",le="0.75"} 2
		sluice_eta_error_ratio_bucket{scope="leader",tier="pro",le="1"} 2
		sluice_eta_error_ratio_bucket{scope="leader",tier="pro",le="2"} 2
		sluice_eta_error_ratio_bucket{scope="leader",tier="pro",le="5"} 2
		sluice_eta_error_ratio_bucket{scope="leader",tier="pro",le="10"} 2
		sluice_eta_error_ratio_bucket{scope="leader",tier="pro",le="+Inf"} 2
		sluice_eta_error_ratio_sum{scope="leader",tier="pro"} 0.8
		sluice_eta_error_ratio_count{scope="leader",tier="pro"} 2
	`
	if err := testutil.CollectAndCompare(m.etaError, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
