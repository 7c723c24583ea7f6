package main

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
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

// maxWritePause bounds, in the fault tests, the time from the last write
// acknowledged before a fault to the first one after it. Losing a follower
// should not pause writes at all, losing the leader for an election: a
// heartbeat timeout and an election timeout (500 ms each, randomised up to
// twice that) and the client's retry. The rest is slack for a loaded
// two-core machine running the tests under -race.
const maxWritePause = 10 * time.Second

// writeLoad submits jobs through every node of a cluster from a few
// clients, one job at a time each, every job retried with its idempotency
// key (through the next node) until a Submit returns OK; it records when
// each was acknowledged.
type writeLoad struct {
	mu    sync.Mutex
	acked map[string]time.Time // job id → when a Submit of it returned OK
	times []time.Time          // the acknowledgements, in order
	began time.Time
	stop  chan struct{}
	wg    sync.WaitGroup
}

// startLoad starts clients that each submit a job of input, wait for its
// acknowledgement, then wait every before the next.
func startLoad(cl *procCluster, clients int, every time.Duration, input map[string]any) *writeLoad {
	l := &writeLoad{acked: map[string]time.Time{}, began: time.Now(), stop: make(chan struct{})}
	urls := slices.Clone(cl.urls)
	for c := range clients {
		l.wg.Go(func() {
			for i := 0; ; i++ {
				in, _ := structpb.NewStruct(input)
				spec := &sluicev1.JobSpec{Model: "llama-8b", IdempotencyKey: fmt.Sprintf("c%d-%d", c, i), Input: in}
				for try := 0; ; try++ {
					select {
					case <-l.stop:
						return
					default:
					}
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					res, err := cl.jobs(urls[(c+try)%len(urls)]).Submit(ctx, connect.NewRequest(&sluicev1.SubmitRequest{Spec: spec}))
					cancel()
					if err == nil {
						now := time.Now()
						l.mu.Lock()
						if _, ok := l.acked[res.Msg.Job.Id]; !ok {
							l.acked[res.Msg.Job.Id] = now
						}
						l.times = append(l.times, now)
						l.mu.Unlock()
						break
					}
					time.Sleep(50 * time.Millisecond)
				}
				select {
				case <-l.stop:
					return
				case <-time.After(every):
				}
			}
		})
	}
	return l
}

// writesResume waits until a write is acknowledged after the fault at
// `fault` and returns the pause: from the last acknowledgement before the
// fault to the first after it. It fails the test if the pause exceeds
// maxWritePause.
func (l *writeLoad) writesResume(t *testing.T, what string, fault time.Time) time.Duration {
	t.Helper()
	for {
		l.mu.Lock()
		before, after := l.began, time.Time{}
		for _, at := range l.times {
			if !at.After(fault) {
				before = at
			} else if after.IsZero() || at.Before(after) {
				after = at
			}
		}
		l.mu.Unlock()
		if !after.IsZero() {
			pause := after.Sub(before)
			if pause > maxWritePause {
				t.Fatalf("%s: writes paused for %v (from the last acknowledgement before it to the first after), more than %v", what, pause.Round(time.Millisecond), maxWritePause)
			}
			return pause
		}
		if time.Since(before) > maxWritePause {
			t.Fatalf("%s: no write acknowledged for %v", what, time.Since(before).Round(time.Millisecond))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// more waits until n more writes are acknowledged.
func (l *writeLoad) more(t *testing.T, n int) {
	t.Helper()
	l.mu.Lock()
	want := len(l.times) + n
	l.mu.Unlock()
	waitFor(t, fmt.Sprintf("%d more writes", n), func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.times) >= want
	})
}

// finish stops the clients and returns the acknowledged job ids, sorted,
// and how long the load ran.
func (l *writeLoad) finish() ([]string, time.Duration) {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Sorted(maps.Keys(l.acked)), time.Since(l.began)
}

// gaps describes the longest gaps between acknowledgements, for a failure
// message.
func (l *writeLoad) gaps() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	type gap struct {
		from time.Time
		d    time.Duration
	}
	var all []gap
	prev := l.began
	for _, at := range slices.SortedFunc(slices.Values(l.times), time.Time.Compare) {
		all = append(all, gap{prev, at.Sub(prev)})
		prev = at
	}
	slices.SortFunc(all, func(a, b gap) int { return cmp.Compare(b.d, a.d) })
	var out []string
	for _, g := range all[:min(3, len(all))] {
		out = append(out, fmt.Sprintf("%v from %v into the load", g.d.Round(time.Millisecond), g.from.Sub(l.began).Round(time.Millisecond)))
	}
	return strings.Join(out, ", ")
}

// minJobsPerSecond is the least rate of acknowledged writes the fault
// tests accept over their load's whole run, faults included: a fifth of
// what four clients offer that each wait 250 ms between jobs.
const minJobsPerSecond = 3

// checkAcked stops the load and fails the test unless there were at least
// minJobsPerSecond acknowledged jobs over its run and every one, and every
// job of more (acknowledged otherwise), is in the cluster's state (a
// consistent list through the first live node). It returns the load's
// acknowledged jobs.
func (cl *procCluster) checkAcked(l *writeLoad, more ...string) []string {
	cl.t.Helper()
	ids, ran := l.finish()
	if least := int(ran.Seconds() * minJobsPerSecond); len(ids) < least {
		cl.t.Fatalf("%d jobs acknowledged in %v of load, want at least %d (%d/s); the longest gaps: %s", len(ids), ran.Round(time.Millisecond), least, minJobsPerSecond, l.gaps())
	}
	have := map[string]bool{}
	for _, u := range cl.urls {
		have = map[string]bool{}
		token, err := "", error(nil)
		for {
			var res *connect.Response[sluicev1.ListJobsResponse]
			res, err = cl.jobs(u).ListJobs(context.Background(), connect.NewRequest(&sluicev1.ListJobsRequest{PageSize: 1000, PageToken: token, Consistent: true}))
			if err != nil {
				break
			}
			for _, j := range res.Msg.Jobs {
				have[j.Id] = true
			}
			if token = res.Msg.NextPageToken; token == "" {
				break
			}
		}
		if err == nil {
			break
		}
	}
	for _, id := range append(more, ids...) {
		if !have[id] {
			cl.t.Fatalf("job %s was acknowledged and is not in the cluster's state (%d jobs there, %d acknowledged)", id, len(have), len(ids)+len(more))
		}
	}
	cl.t.Logf("%d jobs acknowledged in %v; the longest gaps: %s", len(ids), ran.Round(time.Millisecond), l.gaps())
	return ids
}

// TestKillLeaderRepeatedlyLosesNothing runs three `sluice server` processes
// (each with a synthetic executor), kills -9 the leader three times while a
// load generator submits jobs with idempotency keys through any node, and
// restarts it each time. Writes and dispatch resume within maxWritePause
// of each kill. Then every job whose Submit returned OK has reached
// exactly one terminal state with one output, the quota counter equals
// the admissions, and all replicas hold the same state.
func TestKillLeaderRepeatedlyLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three server processes")
	}
	bin := buildSluice(t)
	cl := startProcCluster(t, bin, 3, func(int) []string {
		// Each server's executor asks its own node, which names the leader.
		return []string{"--executors", "1", "--executor-token", "exec", "--lease-grace", "1s"}
	})
	servers, jobs := cl.servers, cl.jobs
	// 4 clients: ~16 jobs/s for 3 slots of 100 ms.
	load := startLoad(cl, 4, 250*time.Millisecond, map[string]any{"duration_ms": 100})
	var writePauses, dispatchPauses []time.Duration
	for round := range 3 {
		load.more(t, 20) // written before the kill, with the restarted node back
		old := cl.waitLeader(nil)
		old.kill()
		killed := time.Now()
		writePauses = append(writePauses, load.writesResume(t, fmt.Sprintf("round %d: killing the leader %s", round+1, old.id), killed).Round(time.Millisecond))
		// The dispatch pause: from the kill to the first assignment
		// committed by the new leader.
		var dispatched time.Time
		waitUpTo(maxWritePause, func() bool {
			for _, s := range servers {
				if s == old {
					continue
				}
				res, err := jobs(s.url()).ListJobs(context.Background(), connect.NewRequest(&sluicev1.ListJobsRequest{PageSize: 100,
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
				res, err := jobs(s.url()).ListJobs(context.Background(), connect.NewRequest(&sluicev1.ListJobsRequest{PageSize: 8,
					States: []sluicev1.JobState{sluicev1.JobState_JOB_STATE_RUNNING, sluicev1.JobState_JOB_STATE_SUCCEEDED}}))
				if err != nil {
					t.Logf("%s: %v", s.id, err)
					continue
				}
				for _, j := range res.Msg.Jobs {
					t.Logf("%s sees job %s %v started %v (killed %v)", s.id, j.Id, j.State, j.StartedAt.AsTime(), killed)
				}
			}
			t.Fatalf("round %d: no dispatch within %v of killing the leader %s", round+1, maxWritePause, old.id)
		}
		dispatchPauses = append(dispatchPauses, dispatched.Sub(killed).Round(time.Millisecond))
		t.Logf("round %d: killed leader %s; writes paused %v, first dispatch by the new leader %v after the kill", round+1, old.id, writePauses[round], dispatchPauses[round])
		old.start(t, bin)
	}
	ids := cl.checkAcked(load)
	c := jobs(cl.urls[0])
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
	t.Logf("%d acknowledged jobs succeeded once; write pauses %v, dispatch pauses %v", len(ids), writePauses, dispatchPauses)
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
