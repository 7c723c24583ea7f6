package main

import (
	"context"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/sluicehq/sluice/node"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

// proc is a sluice child process whose output is kept for the test to read.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited
	mu   sync.Mutex
	out  strings.Builder
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// spawn starts the binary with args; it is killed when the test ends, if
// not before.
func spawn(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(p.stop)
	return p
}

// runSluice starts the binary with args and prints its output if the test
// fails.
func runSluice(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p := spawn(t, bin, args...)
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("sluice %s:\n%s", strings.Join(args, " "), p.output())
		}
	})
	return p
}

// stop kills the process (kill -9) and waits for it to exit.
func (p *proc) stop() {
	if p == nil {
		return
	}
	p.cmd.Process.Kill()
	<-p.done
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitFor waits until the output matches re and returns the first submatch
// (or the match).
func (p *proc) waitFor(t *testing.T, re string) string {
	t.Helper()
	r := regexp.MustCompile(re)
	var got string
	waitFor(t, "output matching "+re, func() bool {
		m := r.FindStringSubmatch(p.output())
		if m == nil {
			return false
		}
		got = m[len(m)-1]
		return true
	})
	return got
}

// listenRE matches the line `sluice server` and `sluice dev` print once
// they listen: their API URL, its host:port, and the raft address.
var listenRE = regexp.MustCompile(`serving on (https?://(\S+)) \(node \S+, raft (\S+),`)

// listening is where a server child listens, as it reported it.
type listening struct{ url, http, raft string }

// startServer runs `sluice server` or `sluice dev` (args) and waits until
// it says where it listens. The tests give a new server port 0, so that no
// other process can take its ports between a choice and a bind; a restart
// passes the addresses the killed child had, and one of them may be taken
// for a moment (by an outgoing connection's port, say): a child that exits
// saying so is started again.
func startServer(t *testing.T, bin string, args ...string) (*proc, listening) {
	t.Helper()
	for try := 1; ; try++ {
		p := runSluice(t, bin, args...)
		var m []string
		waitFor(t, "sluice "+strings.Join(args, " ")+" to listen", func() bool {
			m = listenRE.FindStringSubmatch(p.output())
			return m != nil || p.exited()
		})
		if m != nil {
			return p, listening{url: m[1], http: m[2], raft: m[3]}
		}
		if !strings.Contains(p.output(), "address in use") || try == 40 {
			t.Fatalf("sluice %s exited before it served (try %d):\n%s", strings.Join(args, " "), try, p.output())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// exitOutput runs the binary to its end and returns what it printed.
func exitOutput(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	return string(out), err
}

// TestBootstrapWithoutAPolicyPrintsAnAdminToken: a new cluster started
// without --policy prints an admin token once, and the token works, also
// after a restart (which prints none: only its hash was kept).
func TestBootstrapWithoutAPolicyPrintsAnAdminToken(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	bin := buildSluice(t)
	data := t.TempDir()
	p, at := startServer(t, bin, "server", "--bootstrap", "--data", data, "--http", "127.0.0.1:0")
	token := p.waitFor(t, `\n    (sluice-admin-\S+)\n`)
	addr := at.http
	waitReady(t, at.url)
	status := func(key string) error {
		c := sluicev1connect.NewAdminServiceClient(http.DefaultClient, "http://"+addr, connect.WithInterceptors(bearerAuth(key)))
		_, err := c.GetClusterStatus(context.Background(), connect.NewRequest(&sluicev1.GetClusterStatusRequest{}))
		return err
	}
	if err := status(token); err != nil {
		t.Fatalf("the printed admin token: %v", err)
	}
	if err := status("guess"); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("another token: %v, want permission_denied", err)
	}
	p.stop()
	p, _ = startServer(t, bin, "server", "--bootstrap", "--data", data, "--http", addr)
	waitReady(t, "http://"+addr)
	if err := status(token); err != nil {
		t.Fatalf("the admin token after a restart: %v", err)
	}
	if strings.Contains(p.output(), "sluice-admin-") {
		t.Fatalf("a restart printed a new token:\n%s", p.output())
	}
}

// TestDevKeepsItsPolicyOnRestart: `sluice dev` on a data dir whose policy
// an admin changed keeps that policy when restarted; --demo-policy puts the
// demo one back.
func TestDevKeepsItsPolicyOnRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	bin := buildSluice(t)
	data, addr := t.TempDir(), "127.0.0.1:0" // the port the first start picks, then
	start := func(extra ...string) *proc {
		p, at := startServer(t, bin, append([]string{"dev", "--data", data, "--http", addr, "--gossip", "127.0.0.1:0", "--executors", "0"}, extra...)...)
		addr = at.http
		waitReady(t, at.url)
		return p
	}
	p := start()
	usage := func(key string) error {
		c := sluicev1connect.NewJobServiceClient(http.DefaultClient, "http://"+addr, connect.WithInterceptors(bearerAuth(key)))
		_, err := c.GetUsage(context.Background(), connect.NewRequest(&sluicev1.GetUsageRequest{}))
		return err
	}
	if !strings.Contains(p.output(), "demo policy") {
		t.Fatalf("a new data dir did not get the demo policy:\n%s", p.output())
	}
	// The admin drops alice.
	policy := node.DemoPolicy()
	policy.Tenants = policy.Tenants[1:]
	admin := sluicev1connect.NewAdminServiceClient(http.DefaultClient, "http://"+addr, connect.WithInterceptors(bearerAuth(node.DemoAdminToken)))
	if _, err := admin.SetPolicy(context.Background(), connect.NewRequest(&sluicev1.SetPolicyRequest{Policy: policy})); err != nil {
		t.Fatal(err)
	}
	p.stop()
	p = start()
	if err := usage(node.DemoAliceKey); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("alice after a restart: %v; the admin's policy (without her) should have been kept", err)
	}
	if err := usage(node.DemoBobKey); err != nil {
		t.Fatalf("bob after a restart: %v", err)
	}
	if !strings.Contains(p.output(), "keeping the policy of "+data) {
		t.Fatalf("the restart does not say it keeps the policy:\n%s", p.output())
	}
	p.stop()
	start("--demo-policy")
	waitFor(t, "the demo policy back", func() bool { return usage(node.DemoAliceKey) == nil })
}

// TestPortsInUseNameTheirFlag: a clash on --http or --gossip says which flag
// to change; a server restarted without --raft takes the raft address it
// had.
func TestPortsInUseNameTheirFlag(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	bin := buildSluice(t)
	data := t.TempDir()
	p, at := startServer(t, bin, "server", "--bootstrap", "--data", data, "--http", "127.0.0.1:0", "--gossip", "127.0.0.1:0")
	httpAddr, raftAddr := at.http, at.raft
	gossip := p.waitFor(t, `gossip pool at (\S+) `)
	waitReady(t, at.url)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--http", httpAddr, "--gossip", "127.0.0.1:0"}, "--http " + httpAddr + ": address in use by another process; pass --http with a free port"},
		{[]string{"--http", "127.0.0.1:0", "--gossip", gossip}, "--gossip " + gossip + ": address in use by another process; pass --gossip with a free port"},
		{[]string{"--http", "127.0.0.1:0", "--raft", raftAddr}, "--raft " + raftAddr + ": address in use by another process; pass --raft with a free port"},
	} {
		out, err := exitOutput(t, bin, append([]string{"server", "--bootstrap", "--data", t.TempDir()}, c.args...)...)
		if err == nil || !strings.Contains(out, c.want) {
			t.Errorf("%v: %v\n%s\nwant %q", c.args, err, out, c.want)
		}
	}
	p.stop()
	if _, again := startServer(t, bin, "server", "--bootstrap", "--data", data, "--http", httpAddr); again.raft != raftAddr {
		t.Fatalf("restarted without --raft on %s; it had %s", again.raft, raftAddr)
	}
}

// TestExecutorRejoinsWhenItsOnlyServerRestarts: an executor that knows its
// server only through --join says so while the server is down and leases
// again by itself when it comes back (a restarted server starts a gossip
// pool of its own and would never find the executor).
func TestExecutorRejoinsWhenItsOnlyServerRestarts(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	bin := buildSluice(t)
	// The first start picks the ports; the restart takes the same ones.
	data, addr, gossip := t.TempDir(), "127.0.0.1:0", "127.0.0.1:0"
	dev := func() *proc {
		p, at := startServer(t, bin, "dev", "--data", data, "--http", addr, "--gossip", gossip, "--executors", "0")
		addr, gossip = at.http, p.waitFor(t, `gossip pool at (\S+) `)
		waitReady(t, at.url)
		return p
	}
	srv := dev()
	ex := runSluice(t, bin, "executor", "--name", "e1", "--join", gossip, "--refresh", "500ms", "--gossip", "127.0.0.1:0")
	jobs := sluicev1connect.NewJobServiceClient(http.DefaultClient, "http://"+addr, connect.WithInterceptors(bearerAuth(node.DemoBobKey)))
	runOne := func() {
		t.Helper()
		res, err := jobs.Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "llama-8b"}}))
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "job "+res.Msg.Job.Id+" to succeed", func() bool {
			j, err := jobs.GetJob(context.Background(), connect.NewRequest(&sluicev1.GetJobRequest{Id: res.Msg.Job.Id}))
			return err == nil && j.Msg.Job.State == sluicev1.JobState_JOB_STATE_SUCCEEDED
		})
	}
	runOne()
	srv.stop()
	ex.waitFor(t, "no server known")
	dev()
	runOne()
}

// TestLogFlags: --log-format json writes one JSON object a line, and a bad
// --log-level or --log-format is refused naming the flag, on any command.
func TestLogFlags(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	bin := buildSluice(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--log-level", "loud", "hash-key", "k"}, `--log-level: "loud" is not one of debug, info, warn, error`},
		{[]string{"--log-format", "xml", "dev"}, `--log-format: "xml" is not text or json`},
	} {
		out, err := exitOutput(t, bin, c.args...)
		if err == nil || !strings.Contains(out, c.want) {
			t.Errorf("%v: %v %q, want %q", c.args, err, out, c.want)
		}
	}
	p := runSluice(t, bin, "--log-format", "json", "--log-level", "debug", "server", "--bootstrap", "--data", t.TempDir(), "--http", "127.0.0.1:0")
	line := p.waitFor(t, `\n(\{"time":[^\n]*"msg":"leading"[^\n]*\})\n`)
	if !strings.Contains(line, `"level":"INFO"`) {
		t.Fatalf("a JSON log line without its level: %s", line)
	}
}
