package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	"github.com/sluicehq/sluice/fsm"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// TestConcurrentSubmitsShareLogEntries sends Submits from many clients at
// once to a node that keeps one entry in flight, so that they are grouped
// into batch entries: every Submit succeeds, two Submits with the same
// idempotency key (even in one entry) get one job, every job id is
// distinct and readable, and the log holds batch entries. With group
// commit off (ProposeBatch 1) the same holds with one entry per write.
func TestConcurrentSubmitsShareLogEntries(t *testing.T) {
	if batches := concurrentSubmits(t, Config{ProposeInflight: 1}); batches == 0 {
		t.Fatal("no log entry carried a batch")
	}
	if batches := concurrentSubmits(t, Config{ProposeBatch: 1}); batches != 0 {
		t.Fatalf("%d batch entries with group commit off", batches)
	}
}

// concurrentSubmits runs the load above on a node started with cfg's
// proposer settings and returns how many log entries were batches.
func concurrentSubmits(t *testing.T, cfg Config) int {
	t.Helper()
	policy := DemoPolicy()
	policy.Rules = nil
	n, err := Start(Config{
		DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Bootstrap: true, Policy: policy,
		Logger: quietLogger(), RaftLog: io.Discard, ProposeInflight: cfg.ProposeInflight, ProposeBatch: cfg.ProposeBatch,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	for deadline := time.Now().Add(10 * time.Second); !n.Leading(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("node not leading after 10s")
		}
	}
	const clients, each = 32, 12
	c := jobClient(n, DemoAliceKey)
	var mu sync.Mutex
	byKey := map[string]string{} // idempotency key → job id
	ids := map[string]bool{}
	var wg sync.WaitGroup
	errs := make(chan error, clients*each)
	for i := range clients {
		wg.Go(func() {
			for k := range each {
				// Clients i and i^1 share their keys: concurrent duplicates.
				key := fmt.Sprintf("k-%d-%d", i/2, k)
				res, err := c.Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{
					Spec: &sluicev1.JobSpec{Model: "llama-8b", IdempotencyKey: key}}))
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				if prev, ok := byKey[key]; ok && prev != res.Msg.Job.Id {
					errs <- fmt.Errorf("key %s: jobs %s and %s", key, prev, res.Msg.Job.Id)
				}
				byKey[key] = res.Msg.Job.Id
				ids[res.Msg.Job.Id] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(ids) != len(byKey) || len(byKey) != clients/2*each {
		t.Fatalf("%d job ids for %d keys, want %d", len(ids), len(byKey), clients/2*each)
	}
	for id := range ids {
		if _, err := c.GetJob(context.Background(), connect.NewRequest(&sluicev1.GetJobRequest{Id: id})); err != nil {
			t.Fatalf("job %s: %v", id, err)
		}
	}
	batches, cmds := 0, 0
	for i := uint64(1); i <= n.raft.LastIndex(); i++ {
		var l raft.Log
		if n.store.log.GetLog(i, &l) != nil || l.Type != raft.LogCommand || len(l.Data) == 0 {
			continue
		}
		if fsm.CommandType(l.Data[0]) == fsm.CmdBatch {
			batches++
		}
		cmds++
	}
	t.Logf("%d submits in %d command entries, %d of them batches", clients*each, cmds, batches)
	return batches
}

// TestProposeErrorsSayWhetherTheWriteMayHaveApplied: a write refused
// before it reached the log may be retried by a forwarding node
// (errNotLeader); one whose leader stepped down after appending it may
// still commit, so it is reported as unknown and never retried blindly.
func TestProposeErrorsSayWhetherTheWriteMayHaveApplied(t *testing.T) {
	for _, c := range []struct {
		in, want error
	}{
		{raft.ErrNotLeader, errNotLeader},
		{raft.ErrLeadershipTransferInProgress, errNotLeader},
		{raft.ErrLeadershipLost, errOutcomeUnknown},
		{raft.ErrRaftShutdown, raft.ErrRaftShutdown},
	} {
		err := proposeError(c.in)
		if !errors.Is(err, c.want) {
			t.Errorf("%v: got %v, want %v", c.in, err, c.want)
		}
		var ce *connect.Error
		retried := errors.As(writeError(err), &ce) && ce.Meta().Get(notLeaderHeader) != ""
		if retried != (c.want == errNotLeader) {
			t.Errorf("%v: marked for retry = %v", c.in, retried)
		}
	}
}

// TestJoinRefusesANodeThatCannotReadBatches: while group commit is on, a
// node that does not report this log format on /healthz (a build from
// before it), answers with another id, or cannot be asked is not let in;
// this build reports its format and id.
func TestJoinRefusesANodeThatCannotReadBatches(t *testing.T) {
	n := startNode(t, 0)
	if h, err := n.cluster.askHealth(context.Background(), n.Addr()); err != nil || h.format != logFormat || h.id != n.cfg.ID || h.applied != n.fsm.LastIndex() {
		t.Fatalf("this build reports log format %d as %q at applied index %d (%v), want %d as %q at %d", h.format, h.id, h.applied, err, logFormat, n.cfg.ID, n.fsm.LastIndex())
	}
	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }))
	defer old.Close()
	oldAddr := strings.TrimPrefix(old.URL, "http://")
	for _, c := range []struct{ id, addr, want string }{
		{"old", oldAddr, `answers as ""`},
		{"imposter", n.Addr(), `answers as "n1"`},
	} {
		if err := n.cluster.join(context.Background(), c.id, "127.0.0.1:1", c.addr); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("joining %s: %v, want %q", c.id, err, c.want)
		}
	}
	old.Close()
	if err := n.cluster.join(context.Background(), "gone", "127.0.0.1:1", oldAddr); err == nil || !strings.Contains(err.Error(), "start it before joining it") {
		t.Fatalf("joining an unreachable node: %v", err)
	}
	if cfg := n.raft.GetConfiguration(); cfg.Error() != nil || len(cfg.Configuration().Servers) != 1 {
		t.Fatalf("configuration after refused joins: %v", cfg.Configuration().Servers)
	}
}

// TestBatchesOnlyWhenEveryServerReadsThem: a server added to the
// configuration stops batch entries at once, and they stay off while it
// has no recorded address, while an old build answers there, and until a
// node of its id that reads them does.
func TestBatchesOnlyWhenEveryServerReadsThem(t *testing.T) {
	policy := DemoPolicy()
	policy.Rules = nil
	logs := &logLines{}
	n, err := Start(Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Bootstrap: true, Policy: policy,
		Logger: logs.logger(), RaftLog: io.Discard, ProposeInflight: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not after 10s", what)
			}
		}
	}
	waitFor("group commit on, alone", n.proposer.enabled.Load)
	round := 0
	batches := func() int { // concurrent Submits, then the batch entries they made
		t.Helper()
		round++
		from := n.raft.LastIndex() + 1
		var wg sync.WaitGroup
		c := jobClient(n, DemoAliceKey)
		for i := range 24 {
			wg.Go(func() {
				for k := range 4 {
					spec := &sluicev1.JobSpec{Model: "llama-8b", IdempotencyKey: fmt.Sprintf("r%d-%d-%d", round, i, k)}
					if _, err := c.Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: spec})); err != nil {
						t.Errorf("submit: %v", err)
					}
				}
			})
		}
		wg.Wait()
		count := 0
		for i := from; i <= n.raft.LastIndex(); i++ {
			var l raft.Log
			if n.store.log.GetLog(i, &l) == nil && l.Type == raft.LogCommand && len(l.Data) > 0 && fsm.CommandType(l.Data[0]) == fsm.CmdBatch {
				count++
			}
		}
		return count
	}
	if b := batches(); b == 0 {
		t.Fatal("no batch entries with every server reading them")
	}
	if err := n.raft.AddNonvoter("other", "127.0.0.1:1", 0, time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	if b := batches(); b != 0 {
		t.Fatalf("%d batch entries with a server that has no recorded address", b)
	}
	setHTTP := func(addr string) {
		t.Helper()
		if res, err := n.propose(context.Background(), fsm.CmdSetMember, &raftv1.SetMember{Id: "other", RaftAddress: "127.0.0.1:1", HttpAddress: addr}); err != nil || res.Err != nil {
			t.Fatalf("record other at %s: %v %v", addr, err, res.Err)
		}
	}
	// The gate logs why it keeps group commit off each time the reason
	// changes, and when it turns it on: a line naming the address set, or
	// a new "on", is the sign that it has checked the server there.
	checked := func(addr string) func() bool {
		ons := strings.Count(logs.String(), "group commit on")
		return func() bool {
			out := logs.String()
			for line := range strings.Lines(out) {
				if strings.Contains(line, "group commit off") && strings.Contains(line, addr) {
					return true
				}
			}
			return strings.Count(out, "group commit on") > ons
		}
	}
	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }))
	defer old.Close()
	oldAddr := strings.TrimPrefix(old.URL, "http://")
	gate := checked(oldAddr)
	setHTTP(oldAddr)
	waitFor("the gate to check the old build", gate)
	if b := batches(); b != 0 || n.proposer.enabled.Load() {
		t.Fatalf("%d batch entries (on: %v) with an old build answering for a server", b, n.proposer.enabled.Load())
	}
	gate = checked(n.Addr())
	setHTTP(n.Addr()) // this build, but it answers as n1
	waitFor("the gate to check the server's address, where n1 answers", gate)
	if n.proposer.enabled.Load() {
		t.Fatal("group commit on with another node answering for a server")
	}
	other, err := Start(Config{ID: "other", DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Logger: quietLogger(), RaftLog: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	setHTTP(other.Addr())
	waitFor("group commit on once the server's node reads batches", n.proposer.enabled.Load)
	if b := batches(); b == 0 {
		t.Fatal("no batch entries once every server reads them")
	}
}

// TestSnapshotsCountCommandsNotEntries: under concurrent writes most log
// entries carry several commands, and a snapshot still comes once
// SnapshotThreshold commands have been applied, long before that many
// entries exist.
func TestSnapshotsCountCommandsNotEntries(t *testing.T) {
	policy := DemoPolicy()
	policy.Rules = nil
	n, err := Start(Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Bootstrap: true, Policy: policy,
		Logger: quietLogger(), RaftLog: io.Discard, ProposeInflight: 1,
		Raft: RaftTiming{SnapshotThreshold: 300, TrailingLogs: 50, SnapshotInterval: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	for deadline := time.Now().Add(10 * time.Second); !n.proposer.enabled.Load(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("group commit not on after 10s")
		}
	}
	c := jobClient(n, DemoAliceKey)
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			for k := range 12 {
				spec := &sluicev1.JobSpec{Model: "llama-8b", IdempotencyKey: fmt.Sprintf("s-%d-%d", i, k)}
				if _, err := c.Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: spec})); err != nil {
					t.Errorf("submit: %v", err)
				}
			}
		})
	}
	wg.Wait()
	entries := n.raft.LastIndex()
	if entries >= 300 {
		t.Skipf("%d log entries for 384 submits: too few batches to tell the triggers apart", entries)
	}
	for deadline := time.Now().Add(5 * time.Second); n.raft.Stats()["last_snapshot_index"] == "0"; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no snapshot after %d commands in %d log entries (threshold 300)", n.fsm.CommandsApplied(), entries)
		}
	}
}

// gatedFSM holds each entry at the state machine until the test releases
// it, so that the entries before it stay in flight.
type gatedFSM struct {
	f       *fsm.FSM
	applied chan []byte
	release chan struct{}
}

func (g *gatedFSM) Apply(l *raft.Log) any {
	g.applied <- l.Data
	<-g.release
	return g.f.Apply(l.Index, l.Data)
}

func (g *gatedFSM) Snapshot() (raft.FSMSnapshot, error) { return raftFSM{f: newState(g.f)}.Snapshot() }
func (g *gatedFSM) Restore(rc io.ReadCloser) error      { return raftFSM{f: newState(g.f)}.Restore(rc) }

// gatedProposer is a proposer of at most maxBatch commands an entry over a
// one-node raft whose state machine holds each entry until the test
// releases it (g.release), after saying so (g.applied).
func gatedProposer(t *testing.T, maxBatch int) (*proposer, *gatedFSM, *raft.Raft) {
	t.Helper()
	g := &gatedFSM{f: fsm.New(), applied: make(chan []byte, 16), release: make(chan struct{})}
	conf := raft.DefaultConfig()
	conf.LocalID = "n1"
	conf.LogOutput = io.Discard
	conf.HeartbeatTimeout, conf.ElectionTimeout, conf.LeaderLeaseTimeout = 50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond
	store, snaps := raft.NewInmemStore(), raft.NewInmemSnapshotStore()
	addr, trans := raft.NewInmemTransport("")
	servers := raft.Configuration{Servers: []raft.Server{{ID: "n1", Address: addr}}}
	if err := raft.BootstrapCluster(conf, store, store, snaps, trans, servers); err != nil {
		t.Fatal(err)
	}
	r, err := raft.NewRaft(conf, g, store, store, snaps, trans)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		close(g.release)
		r.Shutdown().Error()
	})
	for deadline := time.Now().Add(5 * time.Second); r.State() != raft.Leader; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no leader after 5s")
		}
	}
	p := newProposer(wire(&Node{ctx: ctx, raft: r, cfg: Config{ApplyTimeout: 10 * time.Second}}), maxBatch, 4)
	key := configKey(servers)
	p.verified.Store(&key)
	p.enabled.Store(true)
	go p.run()
	return p, g, r
}

// TestPartialBatchWaitsForThePipelineToEmpty: while an entry is in flight,
// commands that do not fill a batch wait, and go as one entry when it is
// done; a full batch goes at once, beside the entry in flight.
func TestPartialBatchWaitsForThePipelineToEmpty(t *testing.T) {
	for _, maxBatch := range []int{64, 3} {
		t.Run(fmt.Sprintf("batch=%d", maxBatch), func(t *testing.T) {
			p, g, r := gatedProposer(t, maxBatch)

			tick := fsm.MustEncode(fsm.CmdTick, 1, &raftv1.Tick{})
			send := func() *proposal {
				pr := &proposal{data: tick, done: make(chan proposed, 1)}
				p.in <- pr
				return pr
			}
			a := send()
			<-g.applied // a's entry is at the state machine, held: in flight
			before := r.LastIndex()
			rest := []*proposal{send(), send(), send()}
			for deadline := time.Now().Add(5 * time.Second); len(p.in) > 0; time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the proposer did not take the commands")
				}
			}
			if maxBatch == 3 {
				// Full: it goes beside a.
				for deadline := time.Now().Add(5 * time.Second); r.LastIndex() == before; time.Sleep(time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatal("a full batch waited for the entry in flight")
					}
				}
			} else {
				time.Sleep(100 * time.Millisecond)
				if got := r.LastIndex(); got != before {
					t.Fatalf("a partial batch went out beside an entry in flight (log index %d → %d)", before, got)
				}
			}
			g.release <- struct{}{}
			if r := <-a.done; r.err != nil {
				t.Fatal(r.err)
			}
			next := <-g.applied
			if fsm.CommandType(next[0]) != fsm.CmdBatch {
				t.Fatalf("the three commands went as %v, not one batch entry", fsm.CommandType(next[0]))
			}
			var last *proposal
			if maxBatch == 3 {
				// The full batch is still in flight (held at the state
				// machine): a lone command waits for it too, not only for
				// the first entry.
				before = r.LastIndex()
				last = send()
				time.Sleep(100 * time.Millisecond)
				if got := r.LastIndex(); got != before {
					t.Fatalf("a partial batch went out beside the full one in flight (log index %d → %d)", before, got)
				}
			}
			g.release <- struct{}{}
			if last != nil {
				<-g.applied
				g.release <- struct{}{}
				rest = append(rest, last)
			}
			for _, pr := range rest {
				if r := <-pr.done; r.err != nil || r.res.Err != nil {
					t.Fatalf("batched command: %v %v", r.err, r.res.Err)
				}
			}
		})
	}
}

// TestAGroupSharesEntriesAndItsRestDoesNotWait: the commands of a group
// (a forwarded batch) go into one entry; a group larger than an entry fills
// one, and its rest goes at once beside it instead of waiting for it to be
// applied, as a partial batch of single commands would.
func TestAGroupSharesEntriesAndItsRestDoesNotWait(t *testing.T) {
	p, g, r := gatedProposer(t, 4)
	tick := fsm.MustEncode(fsm.CmdTick, 1, &raftv1.Tick{})
	group := func(n int) chan []proposed {
		out := make(chan []proposed, 1)
		data := make([][]byte, n)
		for i := range data {
			data[i] = tick
		}
		go func() { out <- p.submitGroup(context.Background(), data) }()
		return out
	}
	check := func(res []proposed, n int) {
		t.Helper()
		if len(res) != n {
			t.Fatalf("%d results for %d commands", len(res), n)
		}
		for i, r := range res {
			if r.err != nil || r.res.Err != nil {
				t.Fatalf("command %d of the group: %v %v", i, r.err, r.res.Err)
			}
		}
	}

	before := r.LastIndex()
	res := group(3)
	if e := <-g.applied; fsm.CommandType(e[0]) != fsm.CmdBatch {
		t.Fatalf("a group of 3 went as %v, not one batch entry", fsm.CommandType(e[0]))
	}
	g.release <- struct{}{}
	check(<-res, 3)
	if got := r.LastIndex(); got != before+1 {
		t.Fatalf("a group of 3 took %d entries", got-before)
	}

	before = r.LastIndex()
	res = group(6)
	<-g.applied // the first 4, held at the state machine: in flight
	for deadline := time.Now().Add(5 * time.Second); r.LastIndex() != before+2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the rest of a group waited for the entry holding its head")
		}
	}
	g.release <- struct{}{}
	<-g.applied
	g.release <- struct{}{}
	check(<-res, 6)
}
