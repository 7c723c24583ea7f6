package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluicehq/sluice/fsm"
	"github.com/sluicehq/sluice/limiter"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

// network partitions raft traffic between nodes: a node's outgoing RPCs
// to a node in another group, or to or from a node that is down, fail as if
// the link were down, and so do those whose answer comes back after the cut.
// The transport underneath is the real TCP one.
type network struct {
	mu    sync.Mutex
	group map[raft.ServerAddress]int
	down  map[raft.ServerAddress]bool // powered off (powerloss_test.go)
	// installs counts the snapshots sent (InstallSnapshot RPCs that went through).
	installs atomic.Int64
}

func (nw *network) cut(a, b raft.ServerAddress) bool {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return nw.group[a] != nw.group[b] || nw.down[a] || nw.down[b]
}

// setDown takes addr off the network (down) or puts it back.
func (nw *network) setDown(addr raft.ServerAddress, down bool) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if nw.down == nil {
		nw.down = make(map[raft.ServerAddress]bool)
	}
	nw.down[addr] = down
}

// partition puts the given addresses in group 1, everyone else in group 0.
func (nw *network) partition(addrs ...string) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	for a := range nw.group {
		nw.group[a] = 0
	}
	for _, a := range addrs {
		nw.group[raft.ServerAddress(a)] = 1
	}
}

func (nw *network) heal() { nw.partition() }

var errPartitioned = errors.New("partitioned (fault injected)")

// faultTransport is a raft.Transport whose outgoing calls fail across a
// partition.
type faultTransport struct {
	raft.Transport
	nw *network
}

func (f *faultTransport) check(target raft.ServerAddress) error {
	if f.nw.cut(f.LocalAddr(), target) {
		return errPartitioned
	}
	return nil
}

// answer is the outcome of a call to target that returned err: an answer
// that comes back once the link is cut is lost with it (a node powered off
// meanwhile may have answered with what it had not synced).
func (f *faultTransport) answer(target raft.ServerAddress, err error) error {
	if err == nil {
		err = f.check(target)
	}
	return err
}

func (f *faultTransport) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	// Without a pipeline every AppendEntries goes through the check below.
	return nil, raft.ErrPipelineReplicationNotSupported
}

func (f *faultTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if err := f.check(target); err != nil {
		return err
	}
	return f.answer(target, f.Transport.AppendEntries(id, target, args, resp))
}

func (f *faultTransport) RequestVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	if err := f.check(target); err != nil {
		return err
	}
	return f.answer(target, f.Transport.RequestVote(id, target, args, resp))
}

func (f *faultTransport) InstallSnapshot(id raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	if err := f.check(target); err != nil {
		return err
	}
	f.nw.installs.Add(1)
	return f.answer(target, f.Transport.InstallSnapshot(id, target, args, resp, data))
}

func (f *faultTransport) TimeoutNow(id raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	if err := f.check(target); err != nil {
		return err
	}
	return f.answer(target, f.Transport.TimeoutNow(id, target, args, resp))
}

// testCluster is size real nodes on 127.0.0.1 (raft logs on disk, TCP
// raft transports behind the fault wrapper, Connect over HTTP), joined
// through the admin API, with synthetic executors that lease from any node.
type testCluster struct {
	t     *testing.T
	nw    *network
	nodes []*Node
}

func clusterPolicy() *sluicev1.Policy {
	p := DemoPolicy()
	// Quota counters that must equal the admissions they count.
	p.Rules = []*sluicev1.Rule{{Name: "daily", Limit: &sluicev1.Rule_Quota{Quota: &sluicev1.QuotaLimit{Limit: 1_000_000}}}}
	p.Defaults.RetryBackoff = durationpb.New(50 * time.Millisecond)
	p.Defaults.MaxAttempts = 10
	return p
}

func startCluster(t *testing.T, size, executors int) *testCluster {
	t.Helper()
	return startClusterWith(t, size, executors, nil)
}

// startClusterWith is startCluster with each node's config changed by tune.
func startClusterWith(t *testing.T, size, executors int, tune func(*Config)) *testCluster {
	t.Helper()
	c := &testCluster{t: t, nw: &network{group: make(map[raft.ServerAddress]int)}}
	for i := 1; i <= size; i++ {
		cfg := Config{
			ID: fmt.Sprintf("n%d", i), DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Bootstrap: i == 1,
			LeaseGrace: 500 * time.Millisecond, HeartbeatInterval: 200 * time.Millisecond, ForwardHold: 5 * time.Second,
			Logger: quietLogger(), RaftLog: io.Discard, RaftWALSegmentSize: 1 << 20,
			WrapTransport: func(tr raft.Transport) raft.Transport {
				c.nw.mu.Lock()
				c.nw.group[tr.LocalAddr()] = 0
				c.nw.mu.Unlock()
				return &faultTransport{Transport: tr, nw: c.nw}
			},
		}
		if i == 1 {
			cfg.Policy = clusterPolicy()
		}
		if tune != nil {
			tune(&cfg)
		}
		n, err := Start(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		c.nodes = append(c.nodes, n)
		if i == 1 {
			waitFor(t, "n1 to lead", func() bool { return n.Leading() })
			continue
		}
		_, err = adminClient(c.nodes[0]).JoinNode(context.Background(), connect.NewRequest(&sluicev1.JoinNodeRequest{
			Id: cfg.ID, RaftAddress: n.RaftAddr(), HttpAddress: n.Addr()}))
		if err != nil {
			t.Fatalf("join %s: %v", cfg.ID, err)
		}
	}
	var servers []string
	for _, n := range c.nodes {
		servers = append(servers, baseURL(n))
	}
	startExecutors(t, executors, servers, "x")
	waitFor(t, "every node to know the leader", func() bool {
		for _, n := range c.nodes {
			if !n.Ready() {
				return false
			}
		}
		return true
	})
	return c
}

// forEachStore runs test once with each raft log store.
func forEachStore(t *testing.T, test func(t *testing.T, store string)) {
	for _, store := range []string{LogStoreWAL, LogStoreBolt} {
		t.Run(store, func(t *testing.T) { test(t, store) })
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *testCluster) leader(except ...*Node) *Node {
	for _, n := range c.nodes {
		skip := false
		for _, e := range except {
			skip = skip || n == e
		}
		if !skip && n.Leading() {
			return n
		}
	}
	return nil
}

func (c *testCluster) waitLeader(except ...*Node) *Node {
	var l *Node
	waitFor(c.t, "a leader", func() bool { l = c.leader(except...); return l != nil })
	return l
}

func (c *testCluster) followers() []*Node {
	var out []*Node
	for _, n := range c.nodes {
		if !n.IsLeader() {
			out = append(out, n)
		}
	}
	return out
}

// submitAll submits count jobs through node n with idempotency keys,
// retrying an unavailable answer with the same key as a client would, and
// returns the ids of those whose Submit returned OK.
func submitAll(t *testing.T, n *Node, prefix string, count int) []string {
	t.Helper()
	c := jobClient(n, DemoBobKey)
	var ids []string
	for i := range count {
		spec := &sluicev1.JobSpec{Model: "llama-8b", IdempotencyKey: fmt.Sprintf("%s-%d", prefix, i),
			Input: input(t, map[string]any{"duration_ms": 30})}
		for try := 0; ; try++ {
			res, err := c.Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: spec}))
			if err == nil {
				ids = append(ids, res.Msg.Job.Id)
				break
			}
			if connect.CodeOf(err) != connect.CodeUnavailable || try > 50 {
				t.Fatalf("submit %s-%d through %s: %v", prefix, i, n.cfg.ID, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return ids
}

// checkInvariants waits for every accepted job to finish and then checks
// the promises of the cluster: each reached exactly one terminal state,
// its output was recorded once, quota counters equal the admissions they
// count, and every replica's state hash is equal.
func (c *testCluster) checkInvariants(ids []string) {
	t := c.t
	t.Helper()
	l := c.waitLeader()
	jobs := jobClient(l, DemoBobKey)
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		j := waitState(t, jobs, id, sluicev1.JobState_JOB_STATE_SUCCEEDED)
		terminal, outputs := 0, 0
		for _, tr := range j.Transitions {
			if tr.State != sluicev1.JobState_JOB_STATE_QUEUED && tr.State != sluicev1.JobState_JOB_STATE_RUNNING {
				terminal++
			}
			if tr.State == sluicev1.JobState_JOB_STATE_SUCCEEDED {
				outputs++
			}
		}
		if terminal != 1 || outputs != 1 || j.Output == nil {
			t.Fatalf("job %s: %d terminal transitions, %d outputs: %v", id, terminal, outputs, j.Transitions)
		}
	}
	usage := l.fsm.Usage(limiter.Request{Tenant: "bob", Tier: "pro"}, time.Now().UnixNano())
	if len(usage) != 1 || usage[0].Used != int64(l.fsm.JobCount("bob")) {
		t.Fatalf("quota counter %v, want %d admissions", usage, l.fsm.JobCount("bob"))
	}
	waitFor(t, "every replica to apply the same state", func() bool {
		hash := ""
		for _, n := range c.nodes {
			if n.raft.AppliedIndex() != l.raft.AppliedIndex() {
				return false
			}
			h := n.fsm.StateHash()
			if hash != "" && h != hash {
				return false
			}
			hash = h
		}
		return true
	})
}

// TestClusterJoinsForwardsAndReplicates: three nodes joined through the
// admin API serve any call on any node; writes on followers are forwarded;
// executors lease through any node; all replicas agree.
func TestClusterJoinsForwardsAndReplicates(t *testing.T) {
	c := startCluster(t, 3, 2)
	var ids []string
	for _, n := range c.followers() {
		ids = append(ids, submitAll(t, n, n.cfg.ID, 5)...)
	}
	// A retried submit with the same key through another node is the same job.
	again := submitAll(t, c.nodes[0], c.followers()[0].cfg.ID, 1)
	if again[0] != ids[0] {
		t.Fatalf("idempotent retry through another node made job %s, want %s", again[0], ids[0])
	}
	c.checkInvariants(ids)
	st, err := adminClient(c.followers()[0]).GetClusterStatus(context.Background(), connect.NewRequest(&sluicev1.GetClusterStatusRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Msg.Members) != 3 {
		t.Fatalf("members %v", st.Msg.Members)
	}
	for _, m := range st.Msg.Members {
		if m.HttpAddress == "" || m.Term == 0 || m.AppliedIndex == 0 {
			t.Fatalf("member %v lacks its addresses or progress", m)
		}
	}
	// A follower reads its own forwarded writes: a plain GetJob and ListJobs right after a
	// Submit through it find the job (without the wait they miss it for up to 10 ms).
	f := c.followers()[0]
	for i := range 20 {
		id := submitAll(t, f, fmt.Sprintf("ryw-%d", i), 1)[0]
		ids = append(ids, id)
		if _, err := jobClient(f, DemoBobKey).GetJob(context.Background(), connect.NewRequest(&sluicev1.GetJobRequest{Id: id})); err != nil {
			t.Fatalf("GetJob %s on %s right after submitting it there: %v", id, f.cfg.ID, err)
		}
		list, err := jobClient(f, DemoBobKey).ListJobs(context.Background(), connect.NewRequest(&sluicev1.ListJobsRequest{}))
		if err != nil || !slices.ContainsFunc(list.Msg.Jobs, func(j *sluicev1.Job) bool { return j.Id == id }) {
			t.Fatalf("ListJobs on %s right after submitting %s there: %v", f.cfg.ID, id, err)
		}
	}
	// The same with Submits through the follower at once, so that the leader puts several
	// in one log entry (their ids then run ahead of the entry's index).
	var wg sync.WaitGroup
	burst := make([]string, 16)
	errs := make(chan error, len(burst))
	for i := range burst {
		wg.Go(func() {
			jc := jobClient(f, DemoBobKey)
			res, err := jc.Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{
				Model: "llama-8b", IdempotencyKey: fmt.Sprintf("ryw-burst-%d", i), Input: input(t, map[string]any{"duration_ms": 30})}}))
			if err != nil {
				errs <- fmt.Errorf("burst submit %d through %s: %w", i, f.cfg.ID, err)
				return
			}
			burst[i] = res.Msg.Job.Id
			if _, err := jc.GetJob(context.Background(), connect.NewRequest(&sluicev1.GetJobRequest{Id: res.Msg.Job.Id})); err != nil {
				errs <- fmt.Errorf("GetJob %s on %s right after submitting it there: %w", res.Msg.Job.Id, f.cfg.ID, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	ids = append(ids, burst...)
	// A consistent read on a follower goes through the leader.
	res, err := jobClient(f, DemoBobKey).GetJob(context.Background(), connect.NewRequest(&sluicev1.GetJobRequest{Id: ids[0], Consistent: true}))
	if err != nil || res.Msg.Job.State != sluicev1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("consistent read through %s: %v %v", f.cfg.ID, res, err)
	}
}

// TestPartitionedLeaderIsReplacedAndLosesNothing cuts the leader off from
// the other two: they elect a new leader and go on; when the partition
// heals the old leader follows; no accepted job is lost or run twice.
func TestPartitionedLeaderIsReplacedAndLosesNothing(t *testing.T) {
	c := startCluster(t, 3, 2)
	old := c.waitLeader()
	ids := submitAll(t, old, "before", 5)
	c.nw.partition(old.RaftAddr())
	cut := time.Now()
	var fresh *Node
	waitFor(t, "a new leader on the majority side", func() bool {
		fresh = c.leader(old)
		return fresh != nil
	})
	t.Logf("new leader %s elected %v after the partition", fresh.cfg.ID, time.Since(cut).Round(time.Millisecond))
	ids = append(ids, submitAll(t, fresh, "during", 5)...)
	c.nw.heal()
	waitFor(t, "the old leader to step down", func() bool { return !old.IsLeader() })
	ids = append(ids, submitAll(t, old, "after", 5)...) // forwarded to the new leader
	c.checkInvariants(ids)
}

// TestCutOffLeaderDoesNotRefuseAReport: an executor takes a refused report
// as final and forgets the attempt, so a leader cut off from the others
// (as one paused and resumed, which has not yet noticed its successor) must
// not refuse from its own, possibly stale, state: it answers unavailable
// and the executor tries elsewhere.
func TestCutOffLeaderDoesNotRefuseAReport(t *testing.T) {
	c := startCluster(t, 3, 0)
	old := c.waitLeader()
	ex := sluicev1connect.NewExecutorServiceClient(httpClientFor(old), baseURL(old),
		connect.WithInterceptors(testAuth(DemoExecutorToken)))
	c.nw.partition(old.RaftAddr())
	if !old.IsLeader() {
		t.Skip("the leader stepped down before the report could reach it")
	}
	// A job its successor may have created and assigned: this node has
	// never heard of it.
	in, _ := structpb.NewStruct(map[string]any{})
	res, err := ex.Report(context.Background(), connect.NewRequest(&sluicev1.ReportRequest{Executor: "e1", JobId: "999999", Attempt: 1,
		Outcome: &sluicev1.ReportRequest_Succeeded{Succeeded: &sluicev1.Succeeded{Output: in}}}))
	if err == nil {
		t.Fatalf("a cut-off leader answered a report from its own state (accepted %v); want unavailable", res.Msg.Accepted)
	}
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("the report was answered %v, want unavailable: %v", connect.CodeOf(err), err)
	}
}

// TestPartitionedFollowerCatchesUp cuts one follower off; the majority
// goes on without it and it catches up after the heal.
func TestPartitionedFollowerCatchesUp(t *testing.T) {
	c := startCluster(t, 3, 2)
	l := c.waitLeader()
	lost := c.followers()[0]
	c.nw.partition(lost.RaftAddr())
	ids := submitAll(t, l, "cut", 10)
	if lost.raft.AppliedIndex() >= l.raft.AppliedIndex() {
		t.Fatal("the partitioned follower kept up: the partition does nothing")
	}
	c.nw.heal()
	c.checkInvariants(ids)
}

// TestFollowerBehindCompactionCatchesUpFromASnapshot: a follower cut off
// while the leader compacts away the entries it would need next can only
// catch up from a snapshot: raft sends one, the follower installs it and
// its log goes on from there.
func TestFollowerBehindCompactionCatchesUpFromASnapshot(t *testing.T) {
	forEachStore(t, testCatchUpFromASnapshot)
}

func testCatchUpFromASnapshot(t *testing.T, store string) {
	c := startClusterWith(t, 3, 2, func(cfg *Config) {
		cfg.Raft = RaftTiming{SnapshotThreshold: 40, TrailingLogs: 10, SnapshotInterval: 100 * time.Millisecond}
		cfg.RaftLogStore, cfg.RaftWALSegmentSize = store, 16<<10
	})
	l := c.waitLeader()
	lost := c.followers()[0]
	ids := submitAll(t, l, "before", 5)
	c.nw.partition(lost.RaftAddr())
	var behind uint64
	for round := 0; ; round++ {
		ids = append(ids, submitAll(t, l, fmt.Sprintf("cut%d", round), 40)...)
		// Read again each round: an append in flight at the cut may land after it.
		behind, _ = lost.store.log.LastIndex()
		// raft-wal still serves compacted entries from its tail segment: wait until the
		// follower's next entry is gone from the leader's store.
		var next raft.Log
		if l.store.log.GetLog(behind+1, &next) != nil {
			break
		}
		if round == 30 {
			first, _ := l.store.log.FirstIndex()
			t.Fatalf("the leader still holds entry %d (its log starts at %d): no compaction", behind+1, first)
		}
	}
	if n := c.nw.installs.Load(); n != 0 {
		t.Fatalf("%d snapshots sent before the heal", n)
	}
	c.nw.heal()
	c.checkInvariants(ids)
	if c.nw.installs.Load() == 0 {
		t.Fatalf("the follower caught up from entry %d without a snapshot", behind)
	}
}

// TestDeposedLeadersUncommittedEntriesAreDropped: a leader cut off alone
// still appends the writes it is sent to its own log; they never commit.
// When it rejoins, the new leader's log replaces that suffix (the log
// store truncates its tail), and no replica keeps any of those writes.
func TestDeposedLeadersUncommittedEntriesAreDropped(t *testing.T) {
	forEachStore(t, testUncommittedEntriesDropped)
}

func testUncommittedEntriesDropped(t *testing.T, store string) {
	c := startClusterWith(t, 3, 2, func(cfg *Config) { cfg.RaftLogStore = store })
	old := c.waitLeader()
	ids := submitAll(t, old, "before", 5)
	c.nw.partition(old.RaftAddr())
	before := old.raft.LastIndex()
	var wg sync.WaitGroup
	lostErrs := make(chan error, 5)
	jobs := jobClient(old, DemoBobKey)
	for i := range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			spec := &sluicev1.JobSpec{Model: "llama-8b", IdempotencyKey: fmt.Sprintf("orphan-%d", i),
				Input: input(t, map[string]any{"duration_ms": 30})}
			_, err := jobs.Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: spec}))
			lostErrs <- err
		}()
	}
	waitFor(t, "the cut-off leader to append the writes it was sent", func() bool { return old.raft.LastIndex() > before })
	var fresh *Node
	waitFor(t, "a new leader on the majority side", func() bool {
		fresh = c.leader(old)
		return fresh != nil
	})
	ids = append(ids, submitAll(t, fresh, "during", 5)...)
	wg.Wait()
	close(lostErrs)
	unknown := 0
	for err := range lostErrs {
		if err == nil {
			t.Fatal("a Submit to the cut-off leader returned OK: it cannot have committed")
		}
		if connect.CodeOf(err) == connect.CodeUnknown {
			unknown++ // appended to the old leader's log, outcome unknown to the client
		}
	}
	if unknown == 0 {
		t.Fatal("no Submit reached the cut-off leader's log (none answered 'unknown'): nothing to drop")
	}
	c.nw.heal()
	c.checkInvariants(ids)
	for _, n := range c.nodes {
		for i := range 5 {
			if _, ok := n.fsm.IdempotentJob("bob", fmt.Sprintf("orphan-%d", i)); ok {
				t.Fatalf("%s holds the uncommitted write orphan-%d", n.cfg.ID, i)
			}
		}
	}
}

// TestFiveNodesSurviveLosingTheLeaderAndAnother: with five nodes, the
// leader and one follower cut off together are a minority; the other three
// elect a leader and go on.
func TestFiveNodesSurviveLosingTheLeaderAndAnother(t *testing.T) {
	c := startCluster(t, 5, 2)
	old := c.waitLeader()
	other := c.followers()[0]
	c.nw.partition(old.RaftAddr(), other.RaftAddr())
	fresh := c.waitLeader(old, other)
	ids := submitAll(t, fresh, "majority", 5)
	c.nw.heal()
	c.checkInvariants(ids)
}

// TestDataDirStaysBoundedUnderLoad: with frequent snapshots, log
// compaction keeps the raft log to about threshold + trailing entries and
// the data dir from growing with the number of jobs ever run, with either log store (the
// WAL in 64 KiB segments, so that compaction deletes some).
func TestDataDirStaysBoundedUnderLoad(t *testing.T) { forEachStore(t, testDataDirStaysBounded) }

func testDataDirStaysBounded(t *testing.T, store string) {
	p := DemoPolicy()
	p.Rules = nil
	p.Defaults.JobRetention = durationpb.New(500 * time.Millisecond) // finished jobs leave the state
	dir := t.TempDir()
	n, err := Start(Config{
		DataDir: dir, HTTPAddr: "127.0.0.1:0", Bootstrap: true, Policy: p,
		HeartbeatInterval: 200 * time.Millisecond, Logger: quietLogger(), RaftLog: io.Discard,
		Raft:         RaftTiming{SnapshotThreshold: 200, TrailingLogs: 100, SnapshotInterval: 100 * time.Millisecond},
		RaftLogStore: store, RaftWALSegmentSize: 64 << 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	waitFor(t, "leadership", n.Leading)
	startExecutors(t, 4, []string{baseURL(n)}, "x")
	waitExecutors(t, n, 4)
	size := func() int64 {
		var total int64
		filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
			if err == nil && !info.IsDir() {
				total += info.Size()
			}
			return nil
		})
		return total
	}
	round := func(name string) {
		submitAll(t, n, name, 150)
		waitFor(t, name+" jobs to finish", func() bool { return n.fsm.QueueLen() == 0 && len(n.fsm.Running()) == 0 })
	}
	round("warm") // bolt grows its file once, then reuses freed pages; the WAL fills segments
	time.Sleep(time.Second)
	first := size()
	for i := range 3 {
		round(fmt.Sprintf("r%d", i))
	}
	time.Sleep(time.Second)
	last := size()
	firstIdx, _ := n.store.log.FirstIndex()
	lastIdx, _ := n.store.log.LastIndex()
	t.Logf("data dir %d → %d bytes over 450 more jobs; log holds entries %d–%d", first, last, firstIdx, lastIdx)
	if kept := lastIdx - firstIdx; kept > 200+100+200 {
		t.Fatalf("the log keeps %d entries; compaction should hold it near threshold+trailing (300)", kept)
	}
	if last > first*3/2 {
		t.Fatalf("data dir grew from %d to %d bytes: not bounded", first, last)
	}
}

// TestMajorityLossRecoversFromPeersJSON: two of three nodes are gone for
// good; the operator writes peers.json naming the survivor, which then
// leads a one-node cluster with every job it had.
func TestMajorityLossRecoversFromPeersJSON(t *testing.T) {
	c := startCluster(t, 3, 1)
	l := c.waitLeader()
	ids := submitAll(t, l, "before", 5)
	c.checkInvariants(ids)
	survivor := c.followers()[0]
	dir, id := survivor.cfg.DataDir, survivor.cfg.ID
	for _, n := range c.nodes {
		n.Close()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	peers := fmt.Sprintf(`[{"id": %q, "address": %q, "non_voter": false}]`, id, addr)
	if err := os.WriteFile(filepath.Join(dir, "peers.json"), []byte(peers), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := Start(Config{ID: id, DataDir: dir, HTTPAddr: "127.0.0.1:0", RaftAddr: addr,
		LeaseGrace: 200 * time.Millisecond, Logger: quietLogger(), RaftLog: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	waitFor(t, "the survivor to lead", n.Leading)
	for _, jid := range ids {
		if j := waitState(t, jobClient(n, DemoBobKey), jid, sluicev1.JobState_JOB_STATE_SUCCEEDED); j.Output == nil {
			t.Fatalf("job %s lost its output", jid)
		}
	}
	submitAll(t, n, "after", 2) // and it takes writes again
	if _, err := os.Stat(filepath.Join(dir, "peers.json.recovered")); err != nil {
		t.Fatalf("peers.json was not set aside after use: %v", err)
	}
}

// TestSnapshotChecksAreJittered: each check for a due snapshot comes at a
// random point of [interval, 2×interval), so that replicas started together
// do not all snapshot at once.
func TestSnapshotChecksAreJittered(t *testing.T) {
	const d = 10 * time.Second
	seen := map[time.Duration]bool{}
	for range 1000 {
		j := jittered(d)
		if j < d || j >= 2*d {
			t.Fatalf("jittered(%v) = %v, outside [%v, %v)", d, j, d, 2*d)
		}
		seen[j] = true
	}
	if len(seen) < 900 {
		t.Fatalf("1000 draws gave only %d distinct intervals", len(seen))
	}
}

// failingSink is a raft.SnapshotSink whose writes fail after the first.
type failingSink struct {
	writes            int
	closed, cancelled bool
}

func (s *failingSink) Write(p []byte) (int, error) {
	if s.writes++; s.writes > 1 {
		return 0, errors.New("disk full")
	}
	return len(p), nil
}
func (s *failingSink) Close() error  { s.closed = true; return nil }
func (s *failingSink) ID() string    { return "test" }
func (s *failingSink) Cancel() error { s.cancelled = true; return nil }

// TestSnapshotPersistCancelsOnAFailedWrite: a snapshot streamed to a sink
// whose write fails mid-way returns the error and cancels the sink (raft
// then discards the partial file) instead of closing it as complete.
func TestSnapshotPersistCancelsOnAFailedWrite(t *testing.T) {
	f := fsm.New()
	if r := f.Apply(1, fsm.MustEncode(fsm.CmdSetPolicy, 0, &raftv1.SetPolicy{Policy: &sluicev1.Policy{
		Tiers:   []*sluicev1.Tier{{Name: "free", Weight: 1}},
		Tenants: []*sluicev1.Tenant{{Name: "t", Tier: "free"}},
		Models:  []*sluicev1.Model{{Name: "m"}},
	}})); r.Err != nil {
		t.Fatal(r.Err)
	}
	for i := range 2000 { // more than one 64 KiB chunk
		if r := f.Apply(uint64(i+2), fsm.MustEncode(fsm.CmdSubmit, 0, &raftv1.Submit{Tenant: "t", Spec: &sluicev1.JobSpec{Model: "m", IdempotencyKey: fmt.Sprint("key-", i)}})); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	snap, err := raftFSM{f: newState(f)}.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &failingSink{}
	if err := snap.Persist(sink); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Persist to a failing sink: %v, want its error", err)
	}
	if !sink.cancelled || sink.closed || sink.writes < 2 {
		t.Fatalf("after a failed write: cancelled %v, closed %v, %d writes; want cancelled, not closed, after the second write", sink.cancelled, sink.closed, sink.writes)
	}
}

// TestFollowerSaysItCannotTellTheETA: a queued job's ETA needs the
// executors, which lease from the leader; a follower's plain read says it
// cannot tell (eta_unknown) rather than "0", and a consistent read through
// it carries the leader's ETA.
func TestFollowerSaysItCannotTellTheETA(t *testing.T) {
	c := startCluster(t, 3, 1)
	waitFor(t, "the executor to lease", func() bool { return c.waitLeader().execs.connected() == 1 })
	f := c.followers()[0]
	bob := jobClient(f, DemoBobKey)
	ctx := context.Background()
	var first, last *sluicev1.Job
	for range 3 { // one executor, two seconds each: the last ones wait
		last = submitRun(t, bob, 2000)
		if first == nil {
			first = last
		}
	}
	// The follower has applied the first one's start (so the places below
	// are read of the same line).
	waitState(t, bob, first.Id, sluicev1.JobState_JOB_STATE_RUNNING)
	plain, err := bob.GetJob(ctx, connect.NewRequest(&sluicev1.GetJobRequest{Id: last.Id}))
	if err != nil {
		t.Fatal(err)
	}
	if j := plain.Msg.Job; j.State != sluicev1.JobState_JOB_STATE_QUEUED || !j.EtaUnknown || j.EtaSeconds != 0 {
		t.Fatalf("a follower's plain read: %v, eta_unknown %v, eta %ds; want queued, unknown, 0", j.State, j.EtaUnknown, j.EtaSeconds)
	}
	consistent, err := bob.GetJob(ctx, connect.NewRequest(&sluicev1.GetJobRequest{Id: last.Id, Consistent: true}))
	if err != nil {
		t.Fatal(err)
	}
	if j := consistent.Msg.Job; j.State != sluicev1.JobState_JOB_STATE_QUEUED || j.EtaUnknown || j.EtaSeconds <= 0 {
		t.Fatalf("a consistent read through the follower: %v, eta_unknown %v, eta %ds; want queued, known, > 0", j.State, j.EtaUnknown, j.EtaSeconds)
	}
	// Its place in line it can tell: the projected dispatch order is of
	// the replicated queue alone.
	if p, c := plain.Msg.Job.QueuePosition, consistent.Msg.Job.QueuePosition; p != c || p < 1 {
		t.Fatalf("place in line: %d on the follower, %d on the leader", p, c)
	}
	// The admin queue alike.
	admin := adminClient(f)
	for _, c := range []bool{false, true} {
		q, err := admin.ListQueue(ctx, connect.NewRequest(&sluicev1.ListQueueRequest{Consistent: c}))
		if err != nil {
			t.Fatal(err)
		}
		if len(q.Msg.Jobs) == 0 {
			t.Fatalf("consistent %v: an empty queue", c)
		}
		for _, j := range q.Msg.Jobs {
			if j.EtaUnknown == c || c && j.EtaSeconds <= 0 {
				t.Fatalf("ListQueue through the follower, consistent %v: job %s eta_unknown %v, eta %ds", c, j.Id, j.EtaUnknown, j.EtaSeconds)
			}
		}
	}
}
