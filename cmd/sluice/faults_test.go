package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// The fault tests of docs/cluster.md's promises, on real processes: a
// restarted or newly elected node never refuses a valid key, a paused
// (SIGSTOP) leader is replaced without stalling dispatch or requeueing what
// live executors run, and a forwarded write whose leader dies comes back
// unavailable.

// hammer runs calls from workers goroutines until stop closes, counting
// their outcomes.
func hammer(workers int, stop <-chan struct{}, call func(worker, i int) error) *codes {
	var mu sync.Mutex
	got := &codes{}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				err := call(w, i)
				mu.Lock()
				got.add(err)
				mu.Unlock()
				if err != nil {
					time.Sleep(5 * time.Millisecond)
				}
			}
		}()
	}
	// The caller's stop ends the workers; wait for them before counting.
	done := make(chan struct{})
	go func() { <-stop; wg.Wait(); close(done) }()
	<-done
	return got
}

// TestRestartedNodeNeverRefusesAValidKey restarts (kill -9) a follower and
// then the leader of a 3-node cluster while clients call every node with a
// valid key from the moment the process starts: a node that has not caught
// up with the log (the policy, and so the keys, are in it) answers
// unavailable, never unauthenticated.
func TestRestartedNodeNeverRefusesAValidKey(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three server processes")
	}
	bin := buildSluice(t)
	cl := startProcCluster(t, bin, 3, func(int) []string { return []string{"--executors", "0"} })
	cl.waitLeader(nil)
	cl.sameState()
	for _, victim := range []string{"follower", "leader"} {
		l := cl.waitLeader(nil)
		s := l
		if victim == "follower" {
			s = cl.servers[(slices.Index(cl.servers, l)+1)%3]
		}
		s.kill()
		stop := make(chan struct{})
		var got *codes
		done := make(chan struct{})
		go func() {
			defer close(done)
			got = hammer(6, stop, func(w, i int) error {
				u := s.url()
				if w%2 == 1 { // and the others, one of which may be a new leader
					u = cl.servers[(slices.Index(cl.servers, s)+1+w/2%2)%3].url()
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if i%8 == 7 {
					_, err := cl.jobs(u).Submit(ctx, connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "llama-8b"}}))
					return err
				}
				_, err := cl.jobs(u).GetUsage(ctx, connect.NewRequest(&sluicev1.GetUsageRequest{}))
				return err
			})
		}()
		s.start(t, bin)
		waitReady(t, s.url())
		time.Sleep(time.Second)
		close(stop)
		<-done
		t.Logf("%s %s restarted: %v", victim, s.id, got)
		if n := got.m[connect.CodeUnauthenticated.String()]; n > 0 {
			t.Errorf("%s %s restarted: %d calls with a valid key refused as unauthenticated (%v)", victim, s.id, n, got)
		}
		if got.m["ok"] == 0 {
			t.Errorf("%s %s restarted: no call succeeded (%v)", victim, s.id, got)
		}
		for code := range got.m {
			if code != "ok" && code != connect.CodeUnavailable.String() {
				t.Errorf("%s %s restarted: calls answered %s, want ok or unavailable (%v)", victim, s.id, code, got)
			}
		}
	}
	cl.sameState()
}

// TestPausedLeaderIsReplacedWithoutRequeueingLiveAttempts stops the leader
// with SIGSTOP for 8 s while three executor processes run long attempts:
// the executors notice the silent lease stream and move to the new leader,
// which dispatches new jobs during the pause, and no attempt a live
// executor holds is requeued (the lease grace covers the time executors
// take to notice). The old leader, resumed, rejoins as a follower.
func TestPausedLeaderIsReplacedWithoutRequeueingLiveAttempts(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three server and three executor processes")
	}
	bin := buildSluice(t)
	cl := startProcCluster(t, bin, 3, func(int) []string { return []string{"--executors", "0"} })
	for i := range 3 {
		e := &server{id: fmt.Sprintf("e%d", i+1)}
		// Two GPUs each: an attempt the new leader adopts keeps the GPU
		// the log gave it, and the short jobs need the other.
		e.args = []string{"executor", "--name", e.id, "--servers", strings.Join(cl.urls, ","), "--token", "exec",
			"--slots", "2", "--gpus", "2", "--gossip", "127.0.0.1:0", "--refresh", "500ms"}
		e.startRaw(t, bin)
	}
	// live are the servers the test talks to: not one it has paused.
	live := cl.urls
	submit := func(key string, ms int) string {
		in, _ := structpb.NewStruct(map[string]any{"duration_ms": ms})
		spec := &sluicev1.JobSpec{Model: "llama-8b", IdempotencyKey: key, Input: in}
		for try := 0; try < 400; try++ {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			res, err := cl.jobs(live[try%len(live)]).Submit(ctx, connect.NewRequest(&sluicev1.SubmitRequest{Spec: spec}))
			cancel()
			if err == nil {
				return res.Msg.Job.Id
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("submit %s: no node accepted it", key)
		return ""
	}
	get := func(id string) *sluicev1.Job {
		for _, u := range live {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			res, err := cl.jobs(u).GetJob(ctx, connect.NewRequest(&sluicev1.GetJobRequest{Id: id}))
			cancel()
			if err == nil {
				return res.Msg.Job
			}
		}
		return nil
	}
	// Three long attempts, one per executor's first slot (or two on one).
	var long []string
	for i := range 3 {
		long = append(long, submit(fmt.Sprintf("long-%d", i), 14000))
	}
	waitFor(t, "the long jobs to run", func() bool {
		for _, id := range long {
			if j := get(id); j == nil || j.State != sluicev1.JobState_JOB_STATE_RUNNING {
				return false
			}
		}
		return true
	})
	old := cl.waitLeader(nil)
	live = slices.DeleteFunc(slices.Clone(cl.urls), func(u string) bool { return u == old.url() })
	old.signal(t, syscall.SIGSTOP)
	stopped := time.Now()
	resumed := false
	defer func() {
		if !resumed {
			old.signal(t, syscall.SIGCONT)
		}
	}()
	const pause = 8 * time.Second
	// Short jobs through the other nodes, and the first one a new leader
	// dispatches.
	var short []string
	var dispatched time.Time
	for i := 0; time.Since(stopped) < pause && dispatched.IsZero(); i++ {
		short = append(short, submit(fmt.Sprintf("short-%d", i), 200))
		for _, id := range short {
			if j := get(id); j != nil && j.StartedAt != nil && j.StartedAt.AsTime().After(stopped) {
				dispatched = j.StartedAt.AsTime()
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if d := pause - time.Since(stopped); d > 0 {
		time.Sleep(d)
	}
	old.signal(t, syscall.SIGCONT)
	resumed = true
	live = cl.urls
	if dispatched.IsZero() {
		t.Fatalf("no job was dispatched during the %v pause of the leader %s", pause, old.id)
	}
	t.Logf("leader %s stopped; first dispatch by the new leader %v later", old.id, dispatched.Sub(stopped).Round(time.Millisecond))
	for _, id := range append(long, short...) {
		deadline := time.Now().Add(30 * time.Second)
		for j := get(id); j == nil || j.State != sluicev1.JobState_JOB_STATE_SUCCEEDED; j = get(id) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for job %s to succeed; the nodes say:\n%s", id, cl.describeJob(id))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, id := range long {
		j := get(id)
		for _, tr := range j.Transitions {
			if tr.State == sluicev1.JobState_JOB_STATE_QUEUED && tr.Reason != "" && tr.Reason != "submitted" {
				t.Errorf("job %s, run by a live executor through the pause, was requeued: %q", id, tr.Reason)
			}
		}
		if j.Attempt != 1 {
			t.Errorf("job %s finished with attempt %d, want 1 (its executor never stopped)", id, j.Attempt)
		}
	}
	cl.sameState()
}

// TestForwardedWriteWhoseLeaderDiesIsUnavailable submits through the
// followers while the leader is killed (kill -9), then paused (SIGSTOP):
// every failed Submit comes back unavailable (or unknown, from a leader that
// lost its leadership after appending), never canceled or with a deadline
// the client did not set, and a retry with the same idempotency key
// returns one job: nothing is lost or duplicated.
func TestForwardedWriteWhoseLeaderDiesIsUnavailable(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three server processes")
	}
	bin := buildSluice(t)
	cl := startProcCluster(t, bin, 3, func(int) []string { return []string{"--executors", "0"} })
	var keys sync.Map
	for _, fault := range []string{"kill", "stop"} {
		l := cl.waitLeader(nil)
		var followers []string
		for _, s := range cl.servers {
			if s != l {
				followers = append(followers, s.url())
			}
		}
		stop := make(chan struct{})
		done := make(chan struct{})
		var got *codes
		go func() {
			defer close(done)
			got = hammer(16, stop, func(w, i int) error {
				key := fmt.Sprintf("%s-%d-%d", fault, w, i)
				keys.Store(key, true)
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				_, err := cl.jobs(followers[w%2]).Submit(ctx, connect.NewRequest(&sluicev1.SubmitRequest{
					Spec: &sluicev1.JobSpec{Model: "llama-8b", IdempotencyKey: key}}))
				time.Sleep(20 * time.Millisecond)
				return err
			})
		}()
		time.Sleep(500 * time.Millisecond)
		switch fault {
		case "kill":
			l.kill()
			cl.waitLeader(l)
			time.Sleep(time.Second)
			close(stop)
			<-done
			l.start(t, bin)
		case "stop":
			l.signal(t, syscall.SIGSTOP)
			cl.waitLeader(l)
			time.Sleep(time.Second)
			close(stop)
			<-done
			l.signal(t, syscall.SIGCONT)
		}
		t.Logf("leader %s: %s under forwarded Submits: %v", l.id, fault, got)
		for code := range got.m {
			switch code {
			case "ok", connect.CodeUnavailable.String(), connect.CodeUnknown.String():
			default:
				t.Errorf("%s of the leader: forwarded Submits answered %s (%v)", fault, code, got)
			}
		}
		if got.m["ok"] == 0 {
			t.Errorf("%s of the leader: no Submit succeeded (%v)", fault, got)
		}
	}
	// Every key, retried until it is answered, names one job; bob has
	// exactly those jobs.
	ids := map[string]bool{}
	keys.Range(func(k, _ any) bool {
		spec := &sluicev1.JobSpec{Model: "llama-8b", IdempotencyKey: k.(string)}
		for try := 0; ; try++ {
			res, err := cl.jobs(cl.urls[try%3]).Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: spec}))
			if err == nil {
				ids[res.Msg.Job.Id] = true
				return true
			}
			if try > 200 {
				t.Fatalf("key %v: %v", k, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	jobs, token := 0, ""
	for {
		res, err := cl.jobs(cl.urls[0]).ListJobs(context.Background(), connect.NewRequest(&sluicev1.ListJobsRequest{PageSize: 1000, PageToken: token, Consistent: true}))
		if err != nil {
			t.Fatal(err)
		}
		jobs += len(res.Msg.Jobs)
		if token = res.Msg.NextPageToken; token == "" {
			break
		}
	}
	if jobs != len(ids) {
		t.Fatalf("bob has %d jobs for %d idempotency keys", jobs, len(ids))
	}
	t.Logf("%d idempotency keys, %d jobs", len(ids), jobs)
	cl.sameState()
}

// snapshots lists the snapshots in a server's data dir: the log index of
// each complete one, and the names of those being written (raft's file
// snapshot store writes a snapshot into term-index-time.tmp/ and renames it
// once it is complete).
func snapshots(s *server) (complete []uint64, writing []string) {
	dirs, _ := os.ReadDir(filepath.Join(s.data, "snapshots"))
	for _, d := range dirs {
		if strings.HasSuffix(d.Name(), ".tmp") {
			writing = append(writing, d.Name())
			continue
		}
		if f := strings.Split(d.Name(), "-"); len(f) == 3 {
			if i, err := strconv.ParseUint(f[1], 10, 64); err == nil {
				complete = append(complete, i)
			}
		}
	}
	return complete, writing
}

// TestKillFollowersInTurnKeepsWriting kills -9 followers of a 5-node cluster
// under a write load: one, which stays down until the leader has compacted
// away the log it missed, so that it catches up from a snapshot; then two in
// turn, the second while the first is still down (three of five remain, a
// quorum). After each kill writes resume within maxWritePause; restarted
// followers catch up while writes go on; every acknowledged job is in the
// state and all replicas converge.
func TestKillFollowersInTurnKeepsWriting(t *testing.T) {
	if testing.Short() {
		t.Skip("runs five server processes")
	}
	bin := buildSluice(t)
	const threshold, trailing = 64, 16
	cl := startProcCluster(t, bin, 5, func(int) []string {
		return []string{"--executors", "0", "--raft-snapshot-threshold", fmt.Sprint(threshold),
			"--raft-snapshot-interval", "100ms", "--raft-trailing-logs", fmt.Sprint(trailing),
			// bolt drops exactly the entries a snapshot covers, but the
			// trailing ones; the WAL store drops only whole 64 MiB segments.
			"--raft-log-store", "bolt"}
	})
	load := startLoad(cl, 4, 50*time.Millisecond, nil)
	l := cl.waitLeader(nil)
	var followers []*server
	for _, s := range cl.servers {
		if s != l {
			followers = append(followers, s)
		}
	}
	kill := func(s *server) {
		t.Helper()
		s.kill()
		pause := load.writesResume(t, "killing the follower "+s.id, time.Now())
		t.Logf("killed follower %s: writes paused %v", s.id, pause.Round(time.Millisecond))
	}
	restart := func(s *server) {
		t.Helper()
		s.start(t, bin)
		cl.caughtUp(s)
	}
	f := followers[0]
	st, err := cl.status(f)
	if err != nil {
		t.Fatal(err)
	}
	kill(f)
	// A margin for the entries f appended between the status and the kill.
	gone := st.LastLogIndex + trailing + 32
	waitFor(t, fmt.Sprintf("a snapshot of the leader %s past index %d", l.id, gone), func() bool {
		complete, _ := snapshots(l)
		return len(complete) > 0 && slices.Max(complete) >= gone
	})
	restart(f)
	kill(followers[1])
	load.more(t, 20)
	kill(followers[2])
	load.more(t, 20)
	restart(followers[1])
	restart(followers[2])
	cl.checkAcked(load)
	cl.sameState()
}

// submitUntilOK submits spec through the cluster's nodes in turn until one
// accepts it, and returns the job's id.
func submitUntilOK(t *testing.T, cl *procCluster, spec *sluicev1.JobSpec) string {
	t.Helper()
	var err error
	for try := range 200 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var res *connect.Response[sluicev1.SubmitResponse]
		res, err = cl.jobs(cl.urls[try%len(cl.urls)]).Submit(ctx, connect.NewRequest(&sluicev1.SubmitRequest{Spec: spec}))
		cancel()
		if err == nil {
			return res.Msg.Job.Id
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("submit %s: %v", spec.IdempotencyKey, err)
	return ""
}

// TestKillLeaderDuringSnapshotRecovers kills -9 the leader of a 3-node
// cluster while it writes a snapshot (its data dir holds the snapshot's
// .tmp directory, left there by the kill) under a write load, after it
// has written a complete one: writes resume within maxWritePause on a new
// leader, and the old leader, restarted, recovers from its last complete
// snapshot and its log (the bolt store compacts the log that snapshot
// covers) and catches up; every acknowledged job is kept and the replicas
// converge.
func TestKillLeaderDuringSnapshotRecovers(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three server processes")
	}
	bin := buildSluice(t)
	cl := startProcCluster(t, bin, 3, func(int) []string {
		return []string{"--executors", "0", "--raft-snapshot-threshold", "100", "--raft-snapshot-interval", "50ms",
			"--raft-trailing-logs", "32", "--raft-log-store", "bolt"}
	})
	l := cl.waitLeader(nil)
	// Queued jobs with large inputs make a snapshot of some MiB, long
	// enough to write for the test to see it begin.
	pad := strings.Repeat("x", 16<<10)
	big := make([]string, 100)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < len(big); i += 4 {
				in, _ := structpb.NewStruct(map[string]any{"pad": pad})
				big[i] = submitUntilOK(t, cl, &sluicev1.JobSpec{Model: "llama-8b", IdempotencyKey: fmt.Sprintf("big-%d", i), Input: in})
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	waitFor(t, "a complete snapshot of the leader "+l.id, func() bool {
		complete, _ := snapshots(l)
		return len(complete) > 0
	})
	load := startLoad(cl, 4, 50*time.Millisecond, nil)
	load.more(t, 20)
	// The kill as soon as the next snapshot begins.
	var writing []string
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, writing = snapshots(l); len(writing) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the leader %s began no snapshot in 30 s", l.id)
		}
		time.Sleep(time.Millisecond)
	}
	l.kill()
	killed := time.Now()
	complete, left := snapshots(l)
	t.Logf("killed the leader %s while it wrote snapshot %v; complete ones %v; left unfinished %v", l.id, writing, complete, left)
	if len(left) == 0 {
		// It finished between the look and the kill: the test proves less
		// than it says, but still that the leader's loss loses nothing.
		t.Logf("the snapshot %v completed before the kill", writing)
	}
	pause := load.writesResume(t, "killing the leader "+l.id+" during a snapshot", killed)
	t.Logf("writes paused %v", pause.Round(time.Millisecond))
	l.start(t, bin)
	cl.caughtUp(l)
	cl.checkAcked(load, big...)
	cl.sameState()
}

// heldProxy forwards TCP connections to an address, but only once let
// through: until then it accepts them and forwards nothing. It stands for a
// server's raft address, so that the test sees when a leader first
// reaches that server and decides when the server hears from it.
type heldProxy struct {
	ln      net.Listener
	reached chan struct{} // closed at the first connection
	through chan struct{} // closed by letThrough
	once    sync.Once
}

func startHeldProxy(t *testing.T, to string) *heldProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &heldProxy{ln: ln, reached: make(chan struct{}), through: make(chan struct{})}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	t.Cleanup(func() {
		close(done)
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			p.once.Do(func() { close(p.reached) })
			go func() {
				select {
				case <-p.through:
				case <-done:
					in.Close()
					return
				}
				out, err := net.Dial("tcp", to)
				if err != nil {
					in.Close()
					return
				}
				mu.Lock()
				conns = append(conns, in, out)
				mu.Unlock()
				go func() { io.Copy(out, in); out.Close() }()
				io.Copy(in, out)
				in.Close()
			}()
		}
	}()
	return p
}

func (p *heldProxy) addr() string { return p.ln.Addr().String() }
func (p *heldProxy) letThrough()  { close(p.through) }

// membership is a server's view of the raft configuration: each member's
// id and raft address, sorted.
func (c *procCluster) membership(s *server) (string, error) {
	st, err := c.status(s)
	if err != nil {
		return "", err
	}
	var m []string
	for _, x := range st.Members {
		m = append(m, x.Id+"@"+x.RaftAddress)
	}
	slices.Sort(m)
	return strings.Join(m, " "), nil
}

// recordedHTTP is the HTTP address server s has recorded for member id.
func (c *procCluster) recordedHTTP(s *server, id string) string {
	st, err := c.status(s)
	if err != nil {
		return ""
	}
	for _, x := range st.Members {
		if x.Id == id {
			return x.HttpAddress
		}
	}
	return ""
}

// TestKillLeaderDuringJoinKeepsMembershipConsistent kills -9 the leader of
// a 3-node cluster in the middle of adding a fourth node: with one
// follower stopped (SIGSTOP) and n4's raft traffic held by a proxy, the
// configuration entry that adds n4 cannot commit, and the leader is killed
// once it has appended it (it first connects to n4). Then the follower
// resumes and n4 hears from the cluster. The join is not answered OK; the
// live nodes agree on the membership (n4 in or out on all of them); writes
// resume within maxWritePause; an operator's retried join completes with
// n4's address recorded on every node; the old leader, restarted, catches
// up; every acknowledged job is kept and the four replicas converge.
func TestKillLeaderDuringJoinKeepsMembershipConsistent(t *testing.T) {
	if testing.Short() {
		t.Skip("runs four server processes")
	}
	bin := buildSluice(t)
	cl := startProcCluster(t, bin, 3, func(int) []string { return []string{"--executors", "0"} })
	n4 := &server{id: "n4", data: filepath.Join(t.TempDir(), "n4"), args: []string{"--executors", "0"}}
	n4.start(t, bin)
	proxy := startHeldProxy(t, n4.raft)
	load := startLoad(cl, 4, 50*time.Millisecond, nil)
	load.more(t, 20)
	l := cl.waitLeader(nil)
	var followers []*server
	for _, s := range cl.servers {
		if s != l {
			followers = append(followers, s)
		}
	}
	stopped := followers[1]
	stopped.signal(t, syscall.SIGSTOP)
	resumed := false
	defer func() {
		if !resumed {
			stopped.signal(t, syscall.SIGCONT)
		}
	}()
	began := time.Now()
	joined := make(chan error, 1)
	join := func(via *server) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := cl.admin(via.url()).JoinNode(ctx, connect.NewRequest(&sluicev1.JoinNodeRequest{Id: n4.id, RaftAddress: proxy.addr(), HttpAddress: n4.http}))
		return err
	}
	go func() { joined <- join(l) }()
	select {
	case <-proxy.reached:
	case err := <-joined:
		t.Fatalf("the join ended (%v) before the leader %s reached n4", err, l.id)
	case <-time.After(20 * time.Second):
		t.Fatalf("the leader %s did not reach n4 within 20 s of the join", l.id)
	}
	l.kill()
	stopped.signal(t, syscall.SIGCONT)
	resumed = true
	proxy.letThrough()
	err := <-joined
	t.Logf("killed the leader %s once it had reached n4; the join answered %v", l.id, err)
	if err == nil {
		t.Fatal("the join was answered OK, though it could not have committed")
	}
	pause := load.writesResume(t, "killing the leader "+l.id+" during a join", began)
	t.Logf("writes paused %v (from the join's start)", pause.Round(time.Millisecond))
	live := []*server{followers[0], followers[1], n4}
	var views []string
	agree := func(nodes []*server) func() bool {
		return func() bool {
			views = views[:0]
			for _, s := range nodes {
				m, err := cl.membership(s)
				if err != nil {
					return false
				}
				views = append(views, m)
			}
			return !slices.ContainsFunc(views, func(v string) bool { return v != views[0] })
		}
	}
	// The two old followers agree; if the entry adding n4 reached the one
	// that leads now, n4 is in and hears from it, and agrees too. If it did
	// not (the old leader was killed before sending it), n4 is out and
	// knows no cluster: it has no view to agree with.
	waitFor(t, "the live nodes to agree on the membership", agree(followers))
	if strings.Contains(views[0], n4.id+"@") {
		waitFor(t, "n4, in the configuration, to agree on it", agree(live))
	}
	t.Logf("after the kill every live member sees: %s; %s has n4 at %q", views[0], followers[0].id, cl.recordedHTTP(followers[0], n4.id))
	// The operator retries the join; it completes.
	waitFor(t, "a retried join of n4 to complete", func() bool { return join(followers[0]) == nil })
	l.start(t, bin)
	cl.caughtUp(l)
	cl.servers = append(cl.servers, n4)
	waitFor(t, "every node to see n4 in, its address recorded", func() bool {
		return agree(cl.servers)() && strings.Contains(views[0], n4.id+"@"+proxy.addr()) &&
			!slices.ContainsFunc(cl.servers, func(s *server) bool { return cl.recordedHTTP(s, n4.id) != n4.http })
	})
	cl.checkAcked(load)
	cl.sameState()
}
