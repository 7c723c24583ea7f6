package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/sluicehq/sluice/gpuexec"
	"github.com/sluicehq/sluice/node"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// startCluster starts a one-node cluster with the demo policy (its rate
// limits included) and two synthetic executors, and returns its base URL.
func startCluster(t *testing.T) string {
	t.Helper()
	n, err := node.Start(node.Config{
		DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", Bootstrap: true, Policy: node.DemoPolicy(),
		HeartbeatInterval: 200 * time.Millisecond, LeaseGrace: 200 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler), RaftLog: io.Discard,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	deadline := time.Now().Add(10 * time.Second)
	for !n.Leading() {
		if time.Now().After(deadline) {
			t.Fatal("node not leading after 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	base := n.Scheme() + "://" + n.Addr()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	for _, name := range []string{"synth-1", "synth-2"} {
		a := &gpuexec.Agent{Info: gpuexec.DeclaredInfo(name, 1, 1, 81920, nil), Servers: []string{base},
			Token: node.DemoExecutorToken, Retry: 50 * time.Millisecond,
			Runner: &gpuexec.Synthetic{Name: name, Durations: map[string]time.Duration{"llama-8b": 500 * time.Millisecond}}}
		go func() { a.Run(ctx); done <- struct{}{} }()
	}
	t.Cleanup(func() { cancel(); <-done; <-done })
	return base
}

// TestGoClientSubmitsWatchesAndReadsUsage runs the example against a real
// node: the job succeeds on a synthetic executor, the second Submit with the
// same idempotency key returns the same job, and the usage counts one request.
func TestGoClientSubmitsWatchesAndReadsUsage(t *testing.T) {
	base := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, base, node.DemoBobKey, &out); err != nil {
		t.Fatalf("run: %v\noutput:\n%s", err, out.String())
	}
	got := out.String()
	t.Logf("output:\n%s", got)

	// QUEUED, or RUNNING when an executor took it between its commit and the
	// answer (a loaded machine).
	first := regexp.MustCompile(`(?m)^submitted job (\d+): (QUEUED|RUNNING)`).FindStringSubmatch(got)
	if first == nil {
		t.Fatalf("no \"submitted job N: QUEUED\" line in:\n%s", got)
	}
	for _, want := range []string{
		"submitted again with the same key: job " + first[1] + ", deduplicated true\n",
		"  job " + first[1] + " RUNNING, attempt 1 on synth-",
		"  job " + first[1] + " SUCCEEDED, attempt 1 on synth-",
		`output: {"attempt":1`,
		"usage of tenant bob (tier pro):\n",
		// One admitted Submit: the deduplicated one is not charged again.
		"  pro-daily      1/200 requests",
		"  pro-inflight   0/20 jobs in flight",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}

// TestGoClientWrongKeyIsUnauthenticated: the interceptor's header is what
// the server checks; a key the policy does not hold is refused at Submit.
func TestGoClientWrongKeyIsUnauthenticated(t *testing.T) {
	base := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	err := run(ctx, base, "not-a-key", &out)
	if connect.CodeOf(err) != connect.CodeUnauthenticated || !strings.HasPrefix(err.Error(), "submit: ") {
		t.Fatalf("run with a wrong key: %v, want submit: unauthenticated", err)
	}
	if out.Len() != 0 {
		t.Errorf("printed %q before failing", out.String())
	}
}

// TestETAShowsItsBand: the band is printed where the server sent one.
func TestETAShowsItsBand(t *testing.T) {
	for _, c := range []struct {
		j    *sluicev1.Job
		want string
	}{
		{&sluicev1.Job{EtaSeconds: 3, EtaP10Seconds: 1, EtaP90Seconds: 6}, "3s (1–6s)"},
		{&sluicev1.Job{EtaSeconds: 2, EtaP10Seconds: 2, EtaP90Seconds: 2}, "2s"},
		{&sluicev1.Job{}, "0s"},
		{&sluicev1.Job{WaitingReason: "no executor is connected"}, "unknown (waiting: no executor is connected)"},
		{&sluicev1.Job{EtaUnknown: true}, "unknown"},
	} {
		if got := eta(c.j); got != c.want {
			t.Errorf("eta(%v) = %q, want %q", c.j, got, c.want)
		}
	}
}
