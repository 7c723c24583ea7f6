package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// server is one `sluice server` child process. It picks its ports on its
// first start and comes back on the same ones after a kill -9.
type server struct {
	id, data   string
	http, raft string // host:port, as the process reported them
	args       []string
	p          *proc
}

// start runs `sluice server` with s.args and waits until it listens: on
// ports it picks the first time, then on the same ones.
func (s *server) start(t *testing.T, bin string) {
	t.Helper()
	if s.http == "" {
		var at listening
		s.p, at = startServer(t, bin, append([]string{"server", "--id", s.id, "--data", s.data, "--http", "127.0.0.1:0", "--raft", "127.0.0.1:0"}, s.args...)...)
		s.http, s.raft = at.http, at.raft
		return
	}
	// The addresses stay as they are: clients read them meanwhile.
	s.p, _ = startServer(t, bin, append([]string{"server", "--id", s.id, "--data", s.data, "--http", s.http, "--raft", s.raft}, s.args...)...)
}

// startRaw runs the binary with s.args as they are (an executor).
func (s *server) startRaw(t *testing.T, bin string) {
	t.Helper()
	s.p = runSluice(t, bin, s.args...)
}

// kill ends the process with kill -9.
func (s *server) kill() { s.p.stop() }

const failoverPolicy = `
tiers: [{name: pro, weight: 1}]
tenants: [{name: bob, tier: pro, api_key_sha256: ["%s"]}]
models: [{name: llama-8b, default_duration: 100ms}]
admin_token_sha256: "%s"
executor_token_sha256: "%s"
defaults: {max_attempts: 20, retry_backoff: 50ms, max_backoff: 500ms}
rules: [{name: daily, quota: {limit: 1000000}}]
`

// TestKillLeaderRepeatedlyLosesNothing runs three `sluice server` processes
// (each with a synthetic executor), kills -9 the leader three times while a
// load generator submits jobs with idempotency keys through any node, and
// restarts it each time. Then every job whose Submit returned OK has
// reached exactly one terminal state with one output, the quota counter
// equals the admissions, and all replicas hold the same state.
func TestKillLeaderRepeatedlyLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three server processes")
	}
	bin := buildSluice(t)
	cl := startProcCluster(t, bin, 3, func(int) []string {
		// Each server's executor asks its own node, which names the leader.
		return []string{"--executors", "1", "--executor-token", "exec", "--lease-grace", "1s"}
	})
	servers, urls, jobs := cl.servers, cl.urls, cl.jobs
	// The load: one job at a time per client, each retried with its key
	// (through the next node) until a Submit returns OK.
	var mu sync.Mutex
	accepted := map[string]bool{}
	stop := make(chan struct{})
	var load sync.WaitGroup
	for c := range 4 {
		load.Add(1)
		go func() {
			defer load.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				in, _ := structpb.NewStruct(map[string]any{"duration_ms": 100})
				spec := &sluicev1.JobSpec{Model: "llama-8b", IdempotencyKey: fmt.Sprintf("c%d-%d", c, i), Input: in}
				for try := 0; try < 200; try++ {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					res, err := jobs(urls[(c+try)%3]).Submit(ctx, connect.NewRequest(&sluicev1.SubmitRequest{Spec: spec}))
					cancel()
					if err == nil {
						mu.Lock()
						accepted[res.Msg.Job.Id] = true
						mu.Unlock()
						break
					}
					time.Sleep(50 * time.Millisecond)
				}
				time.Sleep(250 * time.Millisecond) // 4 clients: ~16 jobs/s for 3 slots of 100 ms
			}
		}()
	}

	var pauses []time.Duration
	for round := range 3 {
		time.Sleep(1500 * time.Millisecond)
		old := cl.waitLeader(nil)
		old.kill()
		killed := time.Now()
		// The pause: from the kill to the first assignment committed by the
		// new leader.
		var dispatched time.Time
		waitUpTo(20*time.Second, func() bool {
			for _, s := range servers {
				if s == old {
					continue
				}
				res, err := jobs("http://"+s.http).ListJobs(context.Background(), connect.NewRequest(&sluicev1.ListJobsRequest{PageSize: 100,
					States: []sluicev1.JobState{sluicev1.JobState_JOB_STATE_RUNNING, sluicev1.JobState_JOB_STATE_SUCCEEDED}}))
				if err != nil {
					continue
				}
				for _, j := range res.Msg.Jobs {
					if j.StartedAt != nil && j.StartedAt.AsTime().After(killed) {
						dispatched = j.StartedAt.AsTime()
						return true
					}
				}
			}
			return false
		})
		if dispatched.IsZero() {
			for _, s := range servers {
				if s == old {
					continue
				}
				res, err := jobs("http://"+s.http).ListJobs(context.Background(), connect.NewRequest(&sluicev1.ListJobsRequest{PageSize: 8,
					States: []sluicev1.JobState{sluicev1.JobState_JOB_STATE_RUNNING, sluicev1.JobState_JOB_STATE_SUCCEEDED}}))
				if err != nil {
					t.Logf("%s: %v", s.id, err)
					continue
				}
				for _, j := range res.Msg.Jobs {
					t.Logf("%s sees job %s %v started %v (killed %v)", s.id, j.Id, j.State, j.StartedAt.AsTime(), killed)
				}
			}
		}
		if dispatched.IsZero() {
			t.Fatalf("round %d: no dispatch within 20 s of killing the leader %s", round+1, old.id)
		}
		pause := dispatched.Sub(killed)
		pauses = append(pauses, pause)
		t.Logf("round %d: killed leader %s; first dispatch by the new leader %v later", round+1, old.id, pause.Round(time.Millisecond))
		old.start(t, bin)
	}
	close(stop)
	load.Wait()

	mu.Lock()
	ids := make([]string, 0, len(accepted))
	for id := range accepted {
		ids = append(ids, id)
	}
	mu.Unlock()
	slices.Sort(ids)
	if len(ids) < 20 {
		t.Fatalf("only %d jobs were accepted during the test", len(ids))
	}
	c := jobs(urls[0])
	for _, id := range ids {
		var j *sluicev1.Job
		waitFor(t, "job "+id+" to succeed", func() bool {
			res, err := c.GetJob(context.Background(), connect.NewRequest(&sluicev1.GetJobRequest{Id: id, Consistent: true}))
			if err != nil {
				return false
			}
			j = res.Msg.Job
			return j.State == sluicev1.JobState_JOB_STATE_SUCCEEDED
		})
		terminal := 0
		for _, tr := range j.Transitions {
			if tr.State != sluicev1.JobState_JOB_STATE_QUEUED && tr.State != sluicev1.JobState_JOB_STATE_RUNNING {
				terminal++
			}
		}
		if terminal != 1 || j.Output == nil {
			t.Fatalf("job %s: %d terminal transitions, output %v", id, terminal, j.Output)
		}
	}
	// Every job bob has (accepted, or admitted by a Submit whose answer was
	// lost) is counted once by the quota.
	all, err := c.ListJobs(context.Background(), connect.NewRequest(&sluicev1.ListJobsRequest{PageSize: 1000, Consistent: true}))
	if err != nil {
		t.Fatal(err)
	}
	usage, err := c.GetUsage(context.Background(), connect.NewRequest(&sluicev1.GetUsageRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if len(usage.Msg.Rules) != 1 || usage.Msg.Rules[0].Used != int64(len(all.Msg.Jobs)) {
		t.Fatalf("quota used %v, want %d (bob's jobs)", usage.Msg.Rules, len(all.Msg.Jobs))
	}
	cl.sameState()
	t.Logf("%d jobs accepted, all succeeded once; failover pauses %v", len(ids), pauses)
}

func waitUpTo(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}
