package gpuexec

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

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
	ended     atomic.Int32 // lease streams whose client went away
}

func (f *fakeLeader) Lease(ctx context.Context, _ *connect.Request[sluicev1.LeaseRequest], s *connect.ServerStream[sluicev1.LeaseResponse]) error {
	f.leases.Add(1)
	defer f.ended.Add(1)
	beat := &sluicev1.LeaseResponse{HeartbeatInterval: durationpb.New(100 * time.Millisecond)}
	if f.keepalive > 0 {
		s.ResponseHeader().Set(KeepaliveHeader, f.keepalive.String())
	}
	if err := s.Send(beat); err != nil {
		return err
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
