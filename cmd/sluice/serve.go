package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/gpuexec"
	"github.com/sluicehq/sluice/metrics"
	"github.com/sluicehq/sluice/node"
	"github.com/sluicehq/sluice/policy"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

type serveFlags struct {
	id, data, http, raft, policy  string
	servers, executorToken        string
	gossip, gossipJoin            string
	bootstrap                     bool
	executors                     int
	gcPercent                     int
	proposeBatch, proposeInflight int
	forwardBatch, forwardInflight int
	failureRate                   float64
	leaseGrace                    time.Duration
	raftTiming                    node.RaftTiming
	raftLogStore                  string
	raftWALSegmentMiB             int
	maxConnsPerIP                 int
	maxStreamsPerKey              int
	metricsTenants                int
	demoPolicy                    bool
	tls                           node.TLSFiles
	gossipKeyFile                 string
}

func (f *serveFlags) register(c *cobra.Command, dataDefault string, executorsDefault int, gossipDefault string) {
	c.Flags().StringVar(&f.gossip, "gossip", gossipDefault, "address (host:port) of this server in the executors' gossip pool; empty: no gossip")
	c.Flags().StringVar(&f.gossipJoin, "join", "", "comma-separated gossip addresses of pool members to join through")
	c.Flags().StringVar(&f.id, "id", "n1", "this node's raft server id")
	c.Flags().StringVar(&f.data, "data", dataDefault, "directory for raft's state (raft.db), the raft log (wal/ or raft.db) and snapshots")
	c.Flags().StringVar(&f.http, "http", "127.0.0.1:7700", "address for the Connect/gRPC/gRPC-Web API, /healthz and /readyz (port 0 picks one)")
	c.Flags().StringVar(&f.raft, "raft", "127.0.0.1:0", "address for raft traffic between servers")
	c.Flags().StringVar(&f.policy, "policy", "", "policy file (YAML or JSON sluice.v1.Policy), applied whenever this node leads; empty keeps the cluster's current one (a new `server --bootstrap` cluster gets an admin token only, printed once; a new `dev` data dir the demo policy)")
	c.Flags().IntVar(&f.executors, "executors", executorsDefault, "number of in-process synthetic GPU executors (one slot each)")
	c.Flags().Float64Var(&f.failureRate, "failure-rate", 0, "share of synthetic attempts that fail (0–1), to watch retries")
	c.Flags().StringVar(&f.servers, "servers", "", "comma-separated API addresses of the cluster's servers, for this process's executors to find the leader (default: this node only)")
	c.Flags().StringVar(&f.executorToken, "executor-token", envOr("SLUICE_EXECUTOR_TOKEN", node.DemoExecutorToken), "token this process's executors present (env SLUICE_EXECUTOR_TOKEN)")
	c.Flags().DurationVar(&f.raftTiming.HeartbeatTimeout, "raft-heartbeat-timeout", 0, "raft: a follower that hears nothing this long starts an election (default 500ms)")
	c.Flags().DurationVar(&f.raftTiming.ElectionTimeout, "raft-election-timeout", 0, "raft: how long a candidate waits for votes (default 500ms)")
	c.Flags().IntVar(&f.raftTiming.MaxAppendEntries, "raft-max-append-entries", 0, "raft: entries per AppendEntries RPC and per applied batch (default 512)")
	c.Flags().Uint64Var(&f.raftTiming.SnapshotThreshold, "raft-snapshot-threshold", 0, "raft: log entries, or commands applied (each of a batch entry's), between snapshots (default 65536)")
	c.Flags().Uint64Var(&f.raftTiming.TrailingLogs, "raft-trailing-logs", 0, "raft: entries kept after a snapshot for slow followers (default 10240)")
	c.Flags().DurationVar(&f.raftTiming.SnapshotInterval, "raft-snapshot-interval", 0, "raft: how often to check whether a snapshot is due, at a random point between this and twice this (default 10s)")
	c.Flags().StringVar(&f.raftLogStore, "raft-log-store", "", `raft: where the log lives, "wal" (segment files in <data>/wal, one fsync per append) or "bolt" (in raft.db, two fsyncs per append); default: the store that already holds the data dir's log, "wal" for a new one`)
	c.Flags().IntVar(&f.raftWALSegmentMiB, "raft-wal-segment-mib", 0, "raft: size of one WAL segment file in MiB; compaction deletes whole segments (default 64)")
	c.Flags().IntVar(&f.proposeBatch, "propose-batch", 0, "group commit: most client writes carried by one raft log entry (default 64; 1 turns it off)")
	c.Flags().IntVar(&f.proposeInflight, "propose-inflight", 0, "group commit: most log entries handed to raft and not yet applied; writes arriving meanwhile share the next entry (default 4)")
	c.Flags().IntVar(&f.forwardBatch, "forward-batch", 0, "forwarding: most client Submits a follower sends the leader in one call (default 256; 1 sends each alone)")
	c.Flags().IntVar(&f.forwardInflight, "forward-inflight", 0, "forwarding: most such calls a follower has in flight; Submits arriving meanwhile share the next (default 4)")
	c.Flags().IntVar(&f.gcPercent, "gc-percent", 0, "Go GC target: heap growth in percent before a collection (GOGC); 0 keeps GOGC's or Go's default (100)")
	c.Flags().StringVar(&f.tls.CertFile, "tls-cert", "", "certificate (PEM) to serve the API with over TLS; re-read when the file changes or on SIGHUP. With --peer-ca it is also this node's identity to its peers")
	c.Flags().StringVar(&f.tls.KeyFile, "tls-key", "", "private key (PEM) of --tls-cert")
	c.Flags().StringVar(&f.tls.PeerCAFile, "peer-ca", "", "CA (PEM) that signs every server's certificate: turns on mutual TLS for raft and forwarding, refusing a server whose certificate it did not sign")
	c.Flags().StringVar(&f.tls.ExecutorCAFile, "executor-ca", "", "CA (PEM) whose client certificates authenticate executors instead of the token; the certificate's Common Name is the only executor name it may use")
	c.Flags().StringVar(&f.gossipKeyFile, "gossip-key-file", "", "file of base64 gossip encryption keys, one per line (16, 24 or 32 bytes; the first encrypts, all decrypt); re-read on change or SIGHUP")
	c.Flags().IntVar(&f.maxConnsPerIP, "max-conns-per-ip", node.DefaultMaxConnsPerIP, "most TCP connections one client IP may hold open on the API port (cluster members are not counted; -1: no limit); more are closed as they are accepted")
	c.Flags().IntVar(&f.metricsTenants, "metrics-tenants", metrics.DefaultMaxTenants, "how many tenants (the first by name) keep their name in the metrics' tenant label; the others are counted as \"other\"")
	c.Flags().IntVar(&f.maxStreamsPerKey, "max-streams-per-key", node.DefaultMaxStreamsPerKey, "most WatchJob streams open at once with one API key; one more is refused with resource_exhausted")
	c.Flags().DurationVar(&f.leaseGrace, "lease-grace", 0, "after winning an election, wait this long for executors to report before requeueing attempts nobody holds (default 5s: five heartbeat intervals); under 3s an executor moving from a paused leader may see its attempt requeued")
}

func devCmd() *cobra.Command {
	var f serveFlags
	c := &cobra.Command{
		Use:   "dev",
		Short: "Run a one-node cluster with synthetic GPU executors and a demo policy",
		Long: `Run a one-node Sluice cluster on this machine: raft on disk under --data,
the API on --http, and --executors synthetic GPU executors that "run" each job
for its input.duration_ms (or the model's default) and echo the input.
Without --policy a new data dir gets a demo policy: tenants alice (free, key
dev-alice) and bob (pro, key dev-bob), admin token dev-admin, models sdxl and
llama-8b. Restarted on the same data dir it keeps the policy it has (what
` + "`admin policy`" + ` set there); --demo-policy puts the demo one back.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			f.bootstrap = true
			return serve(c.Context(), f, true)
		},
	}
	f.register(c, ".sluice/dev", 4, "127.0.0.1:7946")
	c.Flags().BoolVar(&f.demoPolicy, "demo-policy", false, "apply the demo policy even when the data dir has a policy of its own")
	return c
}

func serverCmd() *cobra.Command {
	var f serveFlags
	c := &cobra.Command{
		Use:   "server",
		Short: "Run a Sluice server node",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return serve(c.Context(), f, false)
		},
	}
	f.register(c, "sluice-data", 0, "")
	c.Flags().BoolVar(&f.bootstrap, "bootstrap", false, "start a new one-node cluster if the data dir is empty")
	return c
}

func serve(ctx context.Context, f serveFlags, dev bool) error {
	if f.failureRate < 0 || f.failureRate > 1 {
		return fmt.Errorf("--failure-rate: %v is outside 0–1", f.failureRate)
	}
	if f.executors < 0 || f.executors > 1024 {
		return fmt.Errorf("--executors: %d is outside 0–1024", f.executors)
	}
	if f.gcPercent < 0 || f.gcPercent > 10000 {
		return fmt.Errorf("--gc-percent: %d is outside 0–10000", f.gcPercent)
	}
	if f.proposeBatch < 0 || f.proposeBatch > 4096 || f.proposeInflight < 0 || f.proposeInflight > 1024 {
		return fmt.Errorf("--propose-batch %d / --propose-inflight %d: outside 0–4096 / 0–1024", f.proposeBatch, f.proposeInflight)
	}
	if f.forwardBatch < 0 || f.forwardBatch > 4096 || f.forwardInflight < 0 || f.forwardInflight > 1024 {
		return fmt.Errorf("--forward-batch %d / --forward-inflight %d: outside 0–4096 / 0–1024", f.forwardBatch, f.forwardInflight)
	}
	if f.metricsTenants < 0 || f.metricsTenants > 1000 {
		return fmt.Errorf("--metrics-tenants: %d is outside 1–1000", f.metricsTenants)
	}
	// 0 takes the node's default for either.
	if f.maxConnsPerIP < -1 || f.maxConnsPerIP > 1<<20 {
		return fmt.Errorf("--max-conns-per-ip: %d is outside 1–%d (or -1 for no limit)", f.maxConnsPerIP, 1<<20)
	}
	if f.maxStreamsPerKey < 0 || f.maxStreamsPerKey > 1<<20 {
		return fmt.Errorf("--max-streams-per-key: %d is outside 1–%d", f.maxStreamsPerKey, 1<<20)
	}
	if f.gcPercent > 0 {
		debug.SetGCPercent(f.gcPercent)
	}
	var pol, initial *sluicev1.Policy // --policy's, applied whenever this node leads; a new cluster's first
	switch {
	case f.policy != "":
		p, err := policy.Load(f.policy)
		if err != nil {
			return err
		}
		pol = p
	case dev && (f.demoPolicy || !node.HasState(f.data)):
		// A new dev data dir gets the demo policy; an old one keeps its own
		// (what `admin policy` set there) unless --demo-policy says otherwise.
		if f.demoPolicy {
			pol = node.DemoPolicy()
		} else {
			initial = node.DemoPolicy()
		}
	case f.bootstrap && !node.HasState(f.data):
		// A new cluster without a policy would refuse every call with no way
		// in: give it an admin token, shown once, its hash kept (as Consul and
		// Vault bootstrap their first token).
		tok, err := newAdminToken()
		if err != nil {
			return err
		}
		initial = &sluicev1.Policy{AdminTokenSha256: policy.HashKey(tok)}
		fmt.Printf(`sluice: a new cluster without --policy. Its admin token, shown this once (only its SHA-256 is kept):

    %s

  set the policy (tenants, keys, models, limits) with:
    sluice --addr <this node> --key <the token> admin policy FILE     (see examples/policy.yaml)
`, tok)
	}
	logger, err := newLogger()
	if err != nil {
		return err
	}
	raftLevel := "warn"
	if dev {
		// A one-node cluster always "misses" a heartbeat before electing
		// itself; that warning only confuses a newcomer.
		raftLevel = "error"
	}
	n, err := node.Start(node.Config{
		ID: f.id, DataDir: f.data, HTTPAddr: f.http, RaftAddr: f.raft,
		Bootstrap: f.bootstrap, Policy: pol, InitialPolicy: initial, Logger: logger, LeaseGrace: f.leaseGrace, RaftLogLevel: raftLevel, Raft: f.raftTiming,
		ProposeBatch: f.proposeBatch, ProposeInflight: f.proposeInflight,
		ForwardBatch: f.forwardBatch, ForwardInflight: f.forwardInflight,
		RaftLogStore: f.raftLogStore, RaftWALSegmentSize: f.raftWALSegmentMiB << 20,
		Gossip: f.gossip, GossipJoin: splitList(f.gossipJoin),
		MaxConnsPerIP: f.maxConnsPerIP, MaxStreamsPerKey: f.maxStreamsPerKey, MetricsTenants: f.metricsTenants,
		TLS: f.tls, GossipKeyFile: f.gossipKeyFile,
	})
	if err != nil {
		return listenFlagError(err)
	}
	if f.tls.CertFile == "" && !dev && !loopback(n.Addr()) {
		fmt.Fprintf(os.Stderr, "sluice: warning: serving plaintext on %s, which is not a loopback address: API keys, tokens and jobs cross the network unencrypted; see docs/security.md (--tls-cert, --tls-key, --peer-ca)\n", n.Addr())
	}
	servers := append([]string{n.Scheme() + "://" + n.Addr()}, withScheme(gpuexec.ServerList(f.servers), n.Scheme())...)
	agentClient, err := inProcessExecutorClient(f.tls)
	if err != nil {
		n.Close()
		return err
	}
	agentCtx, stopAgents := context.WithCancel(context.Background())
	var agents sync.WaitGroup
	defer func() { stopAgents(); agents.Wait() }()
	for i := 1; i <= f.executors; i++ {
		name := fmt.Sprintf("synth-%d", i)
		if !dev {
			name = fmt.Sprintf("%s-synth-%d", f.id, i)
		}
		a := &gpuexec.Agent{
			Info:    gpuexec.DeclaredInfo(name, 1, 1, 81920, nil),
			Servers: servers, Token: f.executorToken, Log: logger, Client: agentClient,
			Runner: &gpuexec.Synthetic{Name: name, FailureRate: f.failureRate}, // the model's expected duration comes with each assignment
		}
		agents.Add(1)
		go func() { defer agents.Done(); a.Run(agentCtx) }()
	}
	fmt.Printf("sluice: serving on %s://%s (node %s, raft %s, data %s)\n", n.Scheme(), n.Addr(), f.id, n.RaftAddr(), f.data)
	if f.tls.PeerCAFile != "" {
		fmt.Printf("sluice: mutual TLS between servers under %s\n", f.tls.PeerCAFile)
	}
	if g := n.GossipAddr(); g != "" {
		fmt.Printf("sluice: executors join the gossip pool at %s (sluice executor --join %s)\n", g, g)
	}
	if dev {
		fmt.Printf("sluice: %d synthetic executors (1 GPU slot each)\n", f.executors)
		if f.policy == "" && pol == nil && initial == nil {
			fmt.Printf("sluice: keeping the policy of %s (--demo-policy puts the demo one back; make clean, or rm -rf %s, starts afresh)\n", f.data, f.data)
		}
		if f.policy == "" && (pol != nil || initial != nil) {
			fmt.Printf(`sluice: demo policy
  tenant alice  tier free (weight 1)  key %s  10 requests/min (burst 5), 20 jobs/day, 2 in flight
  tenant bob    tier pro  (weight 4)  key %s  100 requests/min (burst 50), 200 jobs/day, 20 in flight
  admin token   %s
  gateway token %s  (sluice check, LimitService, Envoy's rate-limit service)
  models        sdxl (2s per job), llama-8b (500ms per job)
  polling       GetJob 100/s, ListJobs 20/s per key (bursts of twice that); watch instead
  webhooks      signed with %s; http and local receivers allowed (dev only)
try:
  export SLUICE_ADDR=http://%s SLUICE_API_KEY=%s
  sluice submit --model sdxl --input '{"prompt":"a lighthouse at dusk"}' --wait
`, node.DemoAliceKey, node.DemoBobKey, node.DemoAdminToken, node.DemoGatewayToken, node.DemoWebhookSecret, n.Addr(), node.DemoAliceKey)
		}
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-hup:
			// Reload logs what it loaded or why not; the old ones stay on an error.
			if err := n.Reload(); err == nil {
				logger.Info("SIGHUP: TLS certificate and gossip keys re-read")
			}
			continue
		case <-ctx.Done():
		}
		break
	}
	fmt.Println("sluice: shutting down")
	return n.Close()
}

// loopback reports whether addr (host:port) listens on a loopback address only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// withScheme makes every http:// URL (ServerList adds it to a bare address)
// https:// when the node serves TLS: its peers do too.
func withScheme(urls []string, scheme string) []string {
	for i, u := range urls {
		if rest, ok := strings.CutPrefix(u, "http://"); ok && scheme == "https" {
			urls[i] = "https://" + rest
		}
	}
	return urls
}

// inProcessExecutorClient is for the executors `--executors` runs beside a
// TLS server: they trust the peer CA when there is one (else the system's
// roots) and authenticate with the executor token.
func inProcessExecutorClient(f node.TLSFiles) (*http.Client, error) {
	if f.CertFile == "" || f.PeerCAFile == "" {
		return nil, nil
	}
	pool, _, err := node.LoadCAFile("--peer-ca", f.PeerCAFile)
	if err != nil {
		return nil, err
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: t}, nil
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// newAdminToken makes a random admin token (32 bytes, base64url).
func newAdminToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	return "sluice-admin-" + base64.RawURLEncoding.EncodeToString(b), nil
}

// listenFlagError names the flag of an address that could not be opened
// (node.ListenError's What is the flag's name: http, raft, gossip).
func listenFlagError(err error) error {
	var le *node.ListenError
	if !errors.As(err, &le) {
		return err
	}
	if le.InUse() {
		return fmt.Errorf("--%s %s: address in use by another process; pass --%s with a free port (port 0 picks one)", le.What, le.Addr, le.What)
	}
	return fmt.Errorf("--%s %s: %v", le.What, le.Addr, le.Err)
}
