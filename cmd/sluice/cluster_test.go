package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/sluicehq/sluice/policy"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

// procCluster is a cluster of `sluice server` child processes on
// loopback addresses they picked, joined through the first; the fault
// tests kill, pause and restart its members.
type procCluster struct {
	t       *testing.T
	bin     string
	servers []*server
	urls    []string
}

// startProcCluster starts size servers with the failover policy (tenant
// bob with key bob-key, admin token admin, executor token exec); extra
// gives each server's flags beyond its addresses.
func startProcCluster(t *testing.T, bin string, size int, extra func(i int) []string) *procCluster {
	t.Helper()
	return startProcClusterWith(t, bin, size, failoverPolicy, extra)
}

// startProcClusterWith is startProcCluster with another policy: a YAML
// format whose three %s are the SHA-256 of bob-key, admin and exec.
func startProcClusterWith(t *testing.T, bin string, size int, policyFormat string, extra func(i int) []string) *procCluster {
	t.Helper()
	dir := t.TempDir()
	polFile := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(polFile, []byte(fmt.Sprintf(policyFormat, policy.HashKey("bob-key"), policy.HashKey("admin"), policy.HashKey("exec"))), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &procCluster{t: t, bin: bin}
	for i := range size {
		s := &server{id: fmt.Sprintf("n%d", i+1), data: filepath.Join(dir, fmt.Sprintf("n%d", i+1)), args: extra(i)}
		if i == 0 {
			s.args = append(s.args, "--bootstrap", "--policy", polFile)
		}
		s.start(t, bin)
		c.servers = append(c.servers, s)
		c.urls = append(c.urls, s.url())
	}
	waitReady(t, c.urls[0])
	for _, s := range c.servers[1:] {
		c.join(s)
	}
	return c
}

// join adds s to the raft group through the first server.
func (c *procCluster) join(s *server) {
	c.t.Helper()
	if _, err := c.admin(c.urls[0]).JoinNode(context.Background(), connect.NewRequest(&sluicev1.JoinNodeRequest{Id: s.id, RaftAddress: s.raft, HttpAddress: s.http})); err != nil {
		c.t.Fatalf("join %s: %v", s.id, err)
	}
}

func (c *procCluster) admin(u string) sluicev1connect.AdminServiceClient {
	return sluicev1connect.NewAdminServiceClient(http.DefaultClient, u, connect.WithInterceptors(bearerAuth("admin")))
}

func (c *procCluster) jobs(u string) sluicev1connect.JobServiceClient {
	return sluicev1connect.NewJobServiceClient(http.DefaultClient, u, connect.WithInterceptors(bearerAuth("bob-key")))
}

func (s *server) url() string { return "http://" + s.http }

// status is a server's GetClusterStatus.
func (c *procCluster) status(s *server) (*sluicev1.GetClusterStatusResponse, error) {
	// A paused server would hold the call for ever; a live one asks its
	// peers for their figures for up to a second first.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	st, err := c.admin(s.url()).GetClusterStatus(ctx, connect.NewRequest(&sluicev1.GetClusterStatusRequest{}))
	if err != nil {
		return nil, err
	}
	return st.Msg, nil
}

// leader is the server that says it leads, or nil.
func (c *procCluster) leader() *server {
	for _, s := range c.servers {
		if st, err := c.status(s); err == nil && st.Role == "Leader" {
			return s
		}
	}
	return nil
}

// caughtUp waits until s, restarted, has applied what the leader had
// committed by the time s was ready.
func (c *procCluster) caughtUp(s *server) {
	c.t.Helper()
	waitReady(c.t, s.url())
	var target uint64
	waitFor(c.t, "the leader's commit index", func() bool {
		l := c.leader()
		if l == nil {
			return false
		}
		st, err := c.status(l)
		if err == nil {
			target = st.CommitIndex
		}
		return err == nil
	})
	waitFor(c.t, fmt.Sprintf("%s to apply the log to index %d", s.id, target), func() bool {
		st, err := c.status(s)
		return err == nil && st.AppliedIndex >= target
	})
}

// waitLeader waits for a leader other than not (nil: any).
func (c *procCluster) waitLeader(not *server) *server {
	c.t.Helper()
	var l *server
	waitFor(c.t, "a leader", func() bool { l = c.leader(); return l != nil && l != not })
	return l
}

// sameState waits until every server has applied the same log and holds the
// same state hash.
func (c *procCluster) sameState() {
	c.t.Helper()
	var seen []string // each server's applied index and hash, as last seen
	if !waitUpTo(30*time.Second, func() bool {
		seen = seen[:0]
		same := true
		var first *sluicev1.GetClusterStatusResponse
		for _, s := range c.servers {
			st, err := c.status(s)
			if err != nil {
				seen = append(seen, fmt.Sprintf("%s: %v", s.id, err))
				same = false
				continue
			}
			seen = append(seen, fmt.Sprintf("%s: applied %d, hash %s", s.id, st.AppliedIndex, st.StateHash))
			if first == nil {
				first = st
			}
			same = same && st.StateHash == first.StateHash && st.AppliedIndex == first.AppliedIndex
		}
		return same
	}) {
		c.t.Fatalf("the replicas hold different states after 30 s:\n  %s", strings.Join(seen, "\n  "))
	}
}

// signal sends sig to a server's process.
func (s *server) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := s.p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to %s: %v", sig, s.id, err)
	}
}

// codes counts the outcomes of calls by their Connect code ("ok" for none).
type codes struct {
	m    map[string]int
	msgs map[string]string // one message of each code
}

func (c *codes) add(err error) {
	if c.m == nil {
		c.m, c.msgs = map[string]int{}, map[string]string{}
	}
	code := "ok"
	if err != nil {
		code = connect.CodeOf(err).String()
		c.msgs[code] = err.Error()
	}
	c.m[code]++
}

func (c *codes) String() string {
	var b strings.Builder
	for k, v := range c.m {
		fmt.Fprintf(&b, "%s=%d ", k, v)
	}
	for k, v := range c.msgs {
		fmt.Fprintf(&b, "\n  %s: %s", k, v)
	}
	return b.String()
}

// describeJob says what each server holds for job id: its state, attempt,
// executor and transitions, and who leads, for a test's failure message.
func (c *procCluster) describeJob(id string) string {
	var b strings.Builder
	for _, s := range c.servers {
		fmt.Fprintf(&b, "  %s:", s.id)
		if st, err := c.status(s); err == nil {
			fmt.Fprintf(&b, " leader %s, applied %d;", st.LeaderId, st.AppliedIndex)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		res, err := c.jobs(s.url()).GetJob(ctx, connect.NewRequest(&sluicev1.GetJobRequest{Id: id}))
		cancel()
		if err != nil {
			fmt.Fprintf(&b, " %v\n", err)
			continue
		}
		j := res.Msg.Job
		fmt.Fprintf(&b, " %s attempt %d on %q, position %d\n", j.State, j.Attempt, j.Executor, j.QueuePosition)
		for _, tr := range j.Transitions {
			fmt.Fprintf(&b, "    %s %s attempt %d on %q: %s\n", tr.At.AsTime().Format("15:04:05.000"), tr.State, tr.Attempt, tr.Executor, tr.Reason)
		}
	}
	return b.String()
}
