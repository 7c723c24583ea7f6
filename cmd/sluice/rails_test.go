package main

import (
	"context"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"

	"github.com/sluicehq/sluice/node"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

// proc is a sluice child process whose output is kept for the test to read.
type proc struct {
	cmd *exec.Cmd
	mu  sync.Mutex
	out strings.Builder
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

// runSluice starts the binary with args; the test ends it.
func runSluice(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...)}
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("sluice %s:\n%s", strings.Join(args, " "), p.output())
		}
	})
	return p
}

func (p *proc) stop() {
	if p.cmd.ProcessState == nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
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
	data, addr := t.TempDir(), freeAddr(t)
	p := runSluice(t, bin, "server", "--bootstrap", "--data", data, "--http", addr)
	token := p.waitFor(t, `\n    (sluice-admin-\S+)\n`)
	waitReady(t, "http://"+addr)
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
	p = runSluice(t, bin, "server", "--bootstrap", "--data", data, "--http", addr)
	p.waitFor(t, "serving on")
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
	data, addr := t.TempDir(), freeAddr(t)
	start := func(extra ...string) *proc {
		p := runSluice(t, bin, append([]string{"dev", "--data", data, "--http", addr, "--gossip", "127.0.0.1:0", "--executors", "0"}, extra...)...)
		p.waitFor(t, "serving on")
		waitReady(t, "http://"+addr)
		return p
	}
	usage := func(key string) error {
		c := sluicev1connect.NewJobServiceClient(http.DefaultClient, "http://"+addr, connect.WithInterceptors(bearerAuth(key)))
		_, err := c.GetUsage(context.Background(), connect.NewRequest(&sluicev1.GetUsageRequest{}))
		return err
	}
	p := start()
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
	httpAddr, gossip := freeAddr(t), freeAddr(t)
	data := t.TempDir()
	p := runSluice(t, bin, "server", "--bootstrap", "--data", data, "--http", httpAddr, "--gossip", gossip)
	raftAddr := p.waitFor(t, `raft (127\.0\.0\.1:\d+)`)
	waitReady(t, "http://"+httpAddr)
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
	p = runSluice(t, bin, "server", "--bootstrap", "--data", data, "--http", httpAddr)
	if again := p.waitFor(t, `raft (127\.0\.0\.1:\d+)`); again != raftAddr {
		t.Fatalf("restarted without --raft on %s; it had %s", again, raftAddr)
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
	data, addr, gossip := t.TempDir(), freeAddr(t), freeAddr(t)
	dev := func() *proc {
		p := runSluice(t, bin, "dev", "--data", data, "--http", addr, "--gossip", gossip, "--executors", "0")
		p.waitFor(t, "serving on")
		waitReady(t, "http://"+addr)
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
