package gpuexec

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

// fakeLeader serves Lease and Heartbeat as a leader would: the stream's
// first message, then a keepalive every keepalive (0: none, as a build
// before keepalives), until it is paused (silent from then on, its
// connections open) or the stream ends.
type fakeLeader struct {
	sluicev1connect.UnimplementedExecutorServiceHandler
	keepalive time.Duration
	paused    atomic.Bool
	leases    atomic.Int32
	ended     atomic.Int32         // lease streams whose client went away
	assign    *sluicev1.Assignment // sent down the first lease stream
	refuse    bool                 // refuses leases, as a follower that knows no leader
	stale     bool                 // holds reports unanswered, as a paused server
	reports   atomic.Int32
}

func (f *fakeLeader) Report(ctx context.Context, _ *connect.Request[sluicev1.ReportRequest]) (*connect.Response[sluicev1.ReportResponse], error) {
	if f.stale {
		<-ctx.Done()
		return nil, connect.NewError(connect.CodeUnavailable, ctx.Err())
	}
	f.reports.Add(1)
	return connect.NewResponse(&sluicev1.ReportResponse{Accepted: true}), nil
}

func (f *fakeLeader) Lease(ctx context.Context, _ *connect.Request[sluicev1.LeaseRequest], s *connect.ServerStream[sluicev1.LeaseResponse]) error {
	if f.refuse {
		return connect.NewError(connect.CodeUnavailable, errors.New("no leader"))
	}
	first := f.leases.Add(1) == 1
	defer f.ended.Add(1)
	beat := &sluicev1.LeaseResponse{HeartbeatInterval: durationpb.New(100 * time.Millisecond)}
	if f.keepalive > 0 {
		s.ResponseHeader().Set(KeepaliveHeader, f.keepalive.String())
	}
	if err := s.Send(beat); err != nil {
		return err
	}
	if first && f.assign != nil {
		if err := s.Send(&sluicev1.LeaseResponse{Msg: &sluicev1.LeaseResponse_Assignment{Assignment: f.assign}}); err != nil {
			return err
		}
	}
	every := f.keepalive
	if every == 0 {
		every = time.Hour
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if f.paused.Load() {
				continue
			}
			if err := s.Send(beat); err != nil {
				return err
			}
		}
	}
}

// Heartbeat is answered even while the stream is silent: only the
// keepalives can tell the agent that the stream is stuck.
func (f *fakeLeader) Heartbeat(context.Context, *connect.Request[sluicev1.HeartbeatRequest]) (*connect.Response[sluicev1.HeartbeatResponse], error) {
	return connect.NewResponse(&sluicev1.HeartbeatResponse{}), nil
}

func serveFake(t *testing.T, f *fakeLeader) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(sluicev1connect.NewExecutorServiceHandler(f))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

func runAgent(t *testing.T, servers ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a := &Agent{Info: DeclaredInfo("e1", 1, 1, 1024, nil), Servers: servers, Runner: &Synthetic{Name: "e1"}, Retry: 20 * time.Millisecond}
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// TestAgentLeavesASilentLeaderForTheNext: a leader that stops speaking on the
// lease stream (the connection stays open) is left after three keepalives
// unheard, even while its heartbeats are answered, and the agent leases from
// the next server and stays away from the silent one.
func TestAgentLeavesASilentLeaderForTheNext(t *testing.T) {
	paused, next := &fakeLeader{keepalive: 50 * time.Millisecond}, &fakeLeader{keepalive: 50 * time.Millisecond}
	// pickServer tries Servers[1] first.
	runAgent(t, serveFake(t, next), serveFake(t, paused))
	waitFor(t, "a lease from the first server", func() bool { return paused.leases.Load() == 1 })
	paused.paused.Store(true)
	waitFor(t, "a lease from the next server", func() bool { return next.leases.Load() >= 1 })
	if paused.ended.Load() != 1 {
		t.Fatalf("the silent leader's stream is still open (%d ended)", paused.ended.Load())
	}
	// It stays away from the silent server while it has another.
	time.Sleep(300 * time.Millisecond)
	if n := paused.leases.Load(); n != 1 {
		t.Fatalf("the agent leased %d times from the silent server", n)
	}
}

// TestAgentKeepsALeaderThatSendsNoKeepalives: a leader from before keepalives
// says nothing between assignments; with its heartbeats answered, the agent
// keeps its lease.
func TestAgentKeepsALeaderThatSendsNoKeepalives(t *testing.T) {
	old := &fakeLeader{}
	runAgent(t, serveFake(t, old))
	waitFor(t, "a lease", func() bool { return old.leases.Load() == 1 })
	time.Sleep(time.Second)
	if n, e := old.leases.Load(), old.ended.Load(); n != 1 || e != 0 {
		t.Fatalf("the agent left a quiet leader without keepalives: %d leases, %d ended", n, e)
	}
}

// TestAgentReportsToTheServerItLeasesFrom: an attempt's outcome goes first
// to the server whose lease stream the agent holds, not to the first server
// of its list, which may be a paused old leader that would hold the report
// for its whole timeout and then answer it from a stale state.
func TestAgentReportsToTheServerItLeasesFrom(t *testing.T) {
	in, _ := structpb.NewStruct(map[string]any{"duration_ms": 10})
	stale := &fakeLeader{refuse: true, stale: true}
	leader := &fakeLeader{keepalive: 50 * time.Millisecond,
		assign: &sluicev1.Assignment{JobId: "7", Attempt: 1, Model: "m", Input: in}}
	runAgent(t, serveFake(t, stale), serveFake(t, leader))
	deadline := time.Now().Add(2 * time.Second)
	for leader.reports.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the outcome did not reach the leader within 2 s (sent to the stale server first?)")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
