package node

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/fsm"
	"github.com/sluicehq/sluice/metrics"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// Config configures a node.
type Config struct {
	// ID is the raft server id (default "n1").
	ID string
	// DataDir holds raft.db (raft's term and vote, and the log with the bolt log store),
	// wal/ (the log with the WAL log store) and snapshots/.
	DataDir string
	// HTTPAddr is where the Connect services listen (default 127.0.0.1:7700).
	HTTPAddr string
	// RaftAddr is the raft TCP transport's address (default 127.0.0.1:0).
	RaftAddr string
	// Bootstrap makes a node with no state a one-node cluster.
	Bootstrap bool
	// Policy, when set, is proposed by this node whenever it leads and the
	// log holds a different one.
	Policy *sluicev1.Policy
	// InitialPolicy, when set, is proposed by this node when it leads and the
	// log holds no policy yet: a new cluster's first, never put back over one
	// that an admin set since.
	InitialPolicy *sluicev1.Policy
	// LeaseGrace is how long a new leader waits before it requeues running
	// attempts that no executor claims (default five heartbeat intervals). It
	// must cover the time an executor takes to notice that the old leader
	// went silent (three lease keepalives, 1.5 heartbeat intervals) and to
	// lease from the new one; MinLeaseGrace is the least that does.
	LeaseGrace time.Duration
	// HeartbeatInterval is how often executors heartbeat; a lease ends
	// after three missed (default 1s).
	HeartbeatInterval time.Duration
	// ForwardHold is how long a follower waits for a leader to forward a
	// write to (default 5s).
	ForwardHold time.Duration
	// WrapTransport, when set, wraps the raft transport (tests inject
	// faults with it).
	WrapTransport func(raft.Transport) raft.Transport
	// Raft timing; zero values take the defaults of raftTiming.
	Raft RaftTiming
	// Gossip, when set, is the address (host:port) this server joins the
	// executors' gossip pool on; GossipJoin lists members to join through.
	Gossip     string
	GossipJoin []string
	// ApplyTimeout bounds one raft proposal (default 10s).
	ApplyTimeout time.Duration
	// ProposeBatch is the most commands one log entry carries (default 64;
	// 1 turns group commit off); ProposeInflight the most such entries
	// handed to raft and not yet applied (default 4). See propose.go.
	ProposeBatch, ProposeInflight int
	// ForwardBatch is the most Submits a follower sends the leader in one
	// call (default 256; 1 sends each alone); ForwardInflight the most such
	// calls in flight (default 4). See forwardbatch.go.
	ForwardBatch, ForwardInflight int
	// Logger for the node; nil logs to stderr at Info.
	Logger *slog.Logger
	// RaftLog receives raft's own warnings (default stderr).
	RaftLog io.Writer
	// RaftLogLevel is the least severe raft message logged (default "warn").
	RaftLogLevel string
	// RaftLogStore is where the raft log lives: LogStoreWAL or LogStoreBolt. Empty keeps
	// the store that already holds the data dir's log, and takes the WAL for a new one.
	RaftLogStore string
	// MaxConnsPerIP bounds the TCP connections one client IP holds open on the
	// API port (default DefaultMaxConnsPerIP; negative: no bound). Cluster
	// members are not counted.
	MaxConnsPerIP int
	// NoMetrics turns the Prometheus metrics off (/metrics answers 404);
	// MetricsTenants is how many tenants keep their name in the tenant label
	// (default metrics.DefaultMaxTenants; the others are "other").
	NoMetrics      bool
	MetricsTenants int
	// MaxStreamsPerKey bounds the WatchJob streams open with one API key
	// (default DefaultMaxStreamsPerKey).
	MaxStreamsPerKey int
	// TLS names the certificate files; the zero value serves plaintext.
	TLS TLSFiles
	// GossipKeyFile, when set, encrypts the gossip pool: one base64 key (16,
	// 24 or 32 bytes) per line, the first used to encrypt, all accepted.
	GossipKeyFile string
	// RaftWALSegmentSize is the size of one WAL segment file in bytes (default 64 MiB,
	// raft-wal's). Compaction deletes whole segments, so the log on disk is up to one
	// segment more than the entries it keeps.
	RaftWALSegmentSize int

	// disk is where the raft state is kept (nil: osDisk); the power-loss test sets it.
	disk disk
}

// Node is a running Sluice server.
type Node struct {
	// Its roles (roles.go).
	desk    jobDesk
	checks  limitChecks
	chall   challenger
	route   leaderRoute
	duty    leaderDuty
	cluster membership

	cfg       Config
	log       *slog.Logger
	fsm       *state   // the replicated state machine, under its lock
	changes   *changes // wakes the state's waiters after each apply (raftFSM)
	raft      *raft.Raft
	store     *stores
	snaps     raft.SnapshotStore // the snapshots raft keeps (ExportLog reads them)
	netTrans  *raft.NetworkTransport
	transport raft.Transport
	execs     *registry
	service   serviceTimes
	peers     *http.Client
	// forwarded is the highest log index of a write this node forwarded to the leader and
	// acknowledged to its client: its reads wait until it has applied that far.
	forwarded   atomic.Uint64
	peerMu      sync.Mutex
	peerClients map[string]leaderClients // by base URL; members are few
	streams     *streamLimiter
	rejected    rejections    // Submits refused by rule while this node led (the UI)
	challenges  challengeBook // CHALLENGE rules' outcomes while this node led (usage)
	// policyDeferred: ensurePolicy held back a configured policy with
	// CHALLENGE rules until every server reads them (gateBatches retries).
	policyDeferred atomic.Bool
	policyNeeds    atomic.Int32               // the log format the deferred policy waits for
	plan           atomic.Pointer[policyPlan] // admissionPlan's, for one policy
	tierLoad       tierLoads                  // work admitted per tier lately, for ETAs
	etaCal         etaCalibration             // how the ETAs have fared, to calibrate them
	shadows        shadowLog                  // shadow rules' would-be refusals, logged at most every shadowLogEvery
	// checksSafeUntil: the log format gate was last found open for checks
	// until then (unix ns; checksSafe).
	checksSafeUntil atomic.Int64
	ruleCache       atomic.Pointer[ruleInfoCache] // ruleInfos
	reads           readLimits                    // rules on read calls, counted by this node (readlimits.go)
	metrics         *metrics.Server               // nil when off
	pool            *Pool
	tls             *nodeTLS        // nil: plaintext
	stream          *tlsStreamLayer // raft over mutual TLS; nil without a peer CA
	proposer        *proposer
	forwarder       *submitForwarder
	models          atomic.Pointer[policyModels] // modelSet's
	snapAt          atomic.Uint64                // commands applied at the last snapshot (raftFSM)
	caughtUp        atomic.Bool                  // applied, since it started, what the leader had (catchup.go)
	epochMu         sync.Mutex
	epoch           context.Context // canceled when the leadership next changes (catchup.go)
	endEpoch        context.CancelFunc
	observer        *raft.Observer
	contact         *peerContact   // when each other server was last heard from (admin members)
	contactObs      *raft.Observer // feeds contact

	termMu   sync.Mutex
	termCtx  context.Context // canceled when this node's leadership ends
	listener net.Listener
	http     *http.Server

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	readyMu sync.Mutex
	ready   bool // leader and caught up with the log, policy in place
}

// HasState reports whether dataDir holds a node's state from an earlier
// start (its raft.db).
func HasState(dataDir string) bool {
	_, err := os.Stat(filepath.Join(dataDir, "raft.db"))
	return err == nil
}

// MinLeaseGrace is the least lease grace that covers an executor's move to a
// new leader after the old one went silent: the lease keepalive comes every
// half heartbeat interval, an executor gives up on the stream after three
// keepalives unheard (1.5 intervals) and leases from the next server within
// about one more; the election, at least one raft heartbeat timeout, comes
// before the grace starts.
func MinLeaseGrace(heartbeat time.Duration) time.Duration { return 3 * heartbeat }

// raftLogCache is how many recent raft log entries are kept in memory in front of the log
// store (MaxAppendEntries is 512: two batches).
const raftLogCache = 1024

// Start opens the data dir, starts raft and serves HTTP. It returns once
// the listeners are bound; leadership follows within an election timeout.
func Start(cfg Config) (*Node, error) {
	if cfg.ID == "" {
		cfg.ID = "n1"
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "127.0.0.1:7700"
	}
	if cfg.RaftAddr == "" {
		cfg.RaftAddr = "127.0.0.1:0"
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = time.Second
	}
	if cfg.LeaseGrace == 0 {
		cfg.LeaseGrace = 5 * cfg.HeartbeatInterval
	}
	if cfg.ForwardHold == 0 {
		cfg.ForwardHold = 5 * time.Second
	}
	if cfg.MaxConnsPerIP == 0 {
		cfg.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	if cfg.MaxStreamsPerKey <= 0 {
		cfg.MaxStreamsPerKey = DefaultMaxStreamsPerKey
	}
	if cfg.ApplyTimeout == 0 {
		cfg.ApplyTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if cfg.disk == nil {
		cfg.disk = osDisk{}
	}
	if cfg.DataDir == "" {
		return nil, errors.New("node: data dir required")
	}
	_, statErr := os.Stat(cfg.DataDir)
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("node: data dir: %w", err)
	}
	if errors.Is(statErr, os.ErrNotExist) {
		// The data dir's own entry, in the directory above, is as fragile as its files'
		// (startRaft).
		if err := cfg.disk.syncDir(filepath.Dir(cfg.DataDir)); err != nil {
			return nil, fmt.Errorf("node: sync the directory above the data dir %s: %w", cfg.DataDir, err)
		}
	}
	if least := MinLeaseGrace(cfg.HeartbeatInterval); cfg.LeaseGrace < least {
		cfg.Logger.Warn("the lease grace is shorter than an executor may take to notice a silent leader and lease from the next: a new leader may requeue attempts that live executors still run",
			"lease_grace", cfg.LeaseGrace, "at_least", least)
	}
	t, err := loadNodeTLS(cfg.TLS, cfg.Logger)
	if err != nil {
		return nil, err
	}
	n := wire(&Node{cfg: cfg, log: cfg.Logger, fsm: newState(fsm.New()), changes: newChanges(), execs: newRegistry(), tls: t,
		streams: &streamLimiter{max: cfg.MaxStreamsPerKey}, contact: newPeerContact()})
	n.peers = newPeerClient(t)
	if !cfg.NoMetrics {
		n.metrics = metrics.NewServer(cfg.ID, cfg.MetricsTenants, metrics.Source{
			FSM: n.fsm, Executors: n.execs.metricsView, Leading: n.Leading,
			Raft: func() metrics.Raft {
				return metrics.Raft{Term: n.raft.CurrentTerm(), Commit: n.raft.CommitIndex(), Applied: n.raft.AppliedIndex(), Leader: n.IsLeader()}
			},
		})
		n.fsm.SetObserver(n.metrics)
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.proposer = newProposer(n, cfg.ProposeBatch, cfg.ProposeInflight)
	n.forwarder = newSubmitForwarder(n, cfg.ForwardBatch, cfg.ForwardInflight)
	if err := n.startRaft(); err != nil {
		n.cancel()
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		n.shutdownRaft()
		n.cancel()
		return nil, &ListenError{What: "http", Addr: cfg.HTTPAddr, Err: err}
	}
	if cfg.MaxConnsPerIP > 0 {
		ln = newConnLimiter(ln, cfg.MaxConnsPerIP, n.cluster.isMemberHost, n.log)
	}
	n.listener = ln
	if cfg.Gossip != "" {
		n.pool, err = StartPool(PoolConfig{Name: cfg.ID, Bind: cfg.Gossip, Join: cfg.GossipJoin, KeyFile: cfg.GossipKeyFile, Logger: cfg.Logger,
			Meta: func() *sluicev1.GossipMeta {
				return &sluicev1.GossipMeta{Role: sluicev1.GossipMeta_ROLE_SERVER, ApiAddress: n.Addr()}
			},
			Events: n.cluster.onPoolEvent})
		if err != nil {
			ln.Close()
			n.shutdownRaft()
			n.cancel()
			return nil, err
		}
	}
	n.http = n.newHTTPServer()
	n.epoch, n.endEpoch = context.WithCancel(n.ctx)
	changes := make(chan raft.Observation, 16)
	n.observer = raft.NewObserver(changes, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	n.raft.RegisterObserver(n.observer)
	n.contactObs = n.contact.observer()
	n.raft.RegisterObserver(n.contactObs)
	n.wg.Add(7)
	go func() {
		defer n.wg.Done()
		n.duty.watchLeader(changes)
	}()
	if n.tls != nil {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.tls.cert.Watch(n.ctx)
		}()
	}
	go func() {
		defer n.wg.Done()
		n.proposer.run()
	}()
	go func() {
		defer n.wg.Done()
		n.forwarder.run()
	}()
	go func() {
		defer n.wg.Done()
		n.duty.catchUp()
	}()
	go func() {
		defer n.wg.Done()
		n.cluster.snapshotByCommands()
	}()
	go func() {
		defer n.wg.Done()
		serve := n.http.Serve
		if n.tls != nil {
			serve = func(ln net.Listener) error { return n.http.ServeTLS(ln, "", "") }
		}
		if err := serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("http server stopped", "err", err)
		}
	}()
	go func() {
		defer n.wg.Done()
		n.duty.leaderLoop()
	}()
	return n, nil
}

func (n *Node) startRaft() (err error) {
	conf := raft.DefaultConfig()
	conf.LocalID = raft.ServerID(n.cfg.ID)
	out := n.cfg.RaftLog
	if out == nil {
		out = os.Stderr
	}
	level := hclog.LevelFromString(n.cfg.RaftLogLevel)
	if level == hclog.NoLevel {
		level = hclog.Warn
	}
	conf.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Level: level, Output: out})
	n.cfg.Raft.apply(conf)

	st, err := openStores(n.cfg.disk, n.cfg.DataDir, n.cfg.RaftLogStore, n.cfg.RaftWALSegmentSize, conf.Logger)
	if err != nil {
		return err
	}
	// What is open so far is closed again if raft does not start.
	var netTrans *raft.NetworkTransport
	var r *raft.Raft
	defer func() {
		if err == nil {
			return
		}
		if r != nil {
			r.Shutdown().Error()
		}
		if netTrans != nil {
			netTrans.Close()
		}
		st.Close()
	}()
	n.log.Info("raft log store", "store", st.kind(), "data", n.cfg.DataDir)
	if last, err := st.log.LastIndex(); err == nil && n.metrics != nil {
		n.metrics.SkipReplayTo(last)
	}
	fileSnaps, err := raft.NewFileSnapshotStore(n.cfg.DataDir, 2, io.Discard)
	if err != nil {
		return fmt.Errorf("node: snapshot store: %w", err)
	}
	snaps := n.cfg.disk.snapshots(fileSnaps)
	n.snaps = snaps
	n.cfg.RaftAddr = recordedRaftAddr(n.cfg.DataDir, n.cfg.RaftAddr)
	if n.tls != nil && n.tls.peerPool != nil {
		// Mutual TLS: both ends present a certificate the peer CA signed.
		n.stream, err = newTLSStreamLayer(n.cfg.RaftAddr, n.tls, n.log)
		if err != nil {
			return &ListenError{What: "raft", Addr: n.cfg.RaftAddr, Err: err}
		}
		netTrans = raft.NewNetworkTransport(n.stream, 3, 10*time.Second, io.Discard)
	} else {
		netTrans, err = raft.NewTCPTransport(n.cfg.RaftAddr, nil, 3, 10*time.Second, io.Discard)
		if err != nil {
			return &ListenError{What: "raft", Addr: n.cfg.RaftAddr, Err: err}
		}
	}
	if err := recordRaftAddr(n.cfg.DataDir, string(netTrans.LocalAddr())); err != nil {
		return err
	}
	// raft.db, wal/ and snapshots/ are entries of the data dir, made at the first start. Each
	// store syncs what it writes inside them, but nothing synced the data dir: a power cut
	// could lose them whole, and with them the term, vote and log entries the node had
	// acted on (found by TestPowerLossLosesNoAcknowledgedJob).
	if err := n.cfg.disk.syncDir(n.cfg.DataDir); err != nil {
		return fmt.Errorf("node: sync the data dir %s: %w", n.cfg.DataDir, err)
	}
	var trans raft.Transport = netTrans
	if n.cfg.WrapTransport != nil {
		trans = n.cfg.WrapTransport(netTrans)
	}
	if err = n.cluster.recoverPeers(conf, st, snaps, trans); err != nil {
		return err
	}
	existing, err := raft.HasExistingState(st.log, st.stable, snaps)
	if err != nil {
		return fmt.Errorf("node: inspect raft state: %w", err)
	}
	// Recent entries are served from memory: replication to followers reads back what was
	// just appended, and a read from either store costs a lock and a decode (a bolt
	// transaction, or a WAL segment lookup).
	logs, err := raft.NewLogCache(raftLogCache, st.log)
	if err != nil {
		return fmt.Errorf("node: raft log cache: %w", err)
	}
	r, err = raft.NewRaft(conf, raftFSM{f: n.fsm, snapAt: &n.snapAt, metrics: n.metrics, changes: n.changes}, logs, st.stable, snaps, trans)
	if err != nil {
		return fmt.Errorf("node: start raft: %w", err)
	}
	if n.cfg.Bootstrap && !existing {
		f := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
			ID: conf.LocalID, Address: trans.LocalAddr(), Suffrage: raft.Voter,
		}}})
		if err = f.Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return fmt.Errorf("node: bootstrap: %w", err)
		}
		err = nil
	}
	n.raft, n.store, n.netTrans, n.transport = r, st, netTrans, trans
	return nil
}

// Addr is the HTTP address the node serves on.
func (n *Node) Addr() string { return n.listener.Addr().String() }

// Scheme is "https" when the API serves TLS, else "http".
func (n *Node) Scheme() string {
	if n.tls != nil {
		return "https"
	}
	return "http"
}

// peerURL is the base URL of a member's API at its HTTP address.
func (n *Node) peerURL(httpAddr string) string { return n.Scheme() + "://" + httpAddr }

// Reload re-reads the TLS certificate and the gossip keys now (a SIGHUP);
// on an error the old ones stay in use.
func (n *Node) Reload() error {
	var errs []error
	if n.tls != nil {
		errs = append(errs, n.tls.cert.Reload())
	}
	if n.pool != nil && n.cfg.GossipKeyFile != "" {
		errs = append(errs, n.pool.ReloadKeys())
	}
	return errors.Join(errs...)
}

// GossipAddr is the gossip pool address executors join through; "" when
// the node runs no gossip.
func (n *Node) GossipAddr() string {
	if n.pool == nil {
		return ""
	}
	return n.pool.Addr()
}

// RaftAddr is the raft transport's address.
func (n *Node) RaftAddr() string { return string(n.transport.LocalAddr()) }

// IsLeader reports whether this node leads the raft group.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Ready reports whether the node leads, has applied its whole log and holds
// a policy: it can serve writes.
func (n *Node) Ready() bool {
	n.readyMu.Lock()
	ready := n.ready
	n.readyMu.Unlock()
	if ready {
		return true
	}
	// A follower is ready once it knows the leader's API to forward to.
	_, err := n.route.leaderBase()
	return err == nil && n.raft.State() == raft.Follower
}

// Leading reports whether the node leads and is ready to serve writes.
func (n *Node) Leading() bool {
	n.readyMu.Lock()
	defer n.readyMu.Unlock()
	return n.ready
}

func (n *Node) setReady(v bool) {
	n.readyMu.Lock()
	n.ready = v
	n.readyMu.Unlock()
}

// Close stops serving, stops local executors and shuts raft down.
func (n *Node) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n.cluster.handOver()
	n.cancel()
	err := n.http.Shutdown(ctx)
	if err != nil {
		n.http.Close()
	}
	n.wg.Wait()
	if n.pool != nil {
		n.pool.Close()
	}
	n.shutdownRaft()
	return nil
}

func (n *Node) shutdownRaft() {
	if n.raft != nil && n.observer != nil {
		n.raft.DeregisterObserver(n.observer)
	}
	if n.raft != nil && n.contactObs != nil {
		n.raft.DeregisterObserver(n.contactObs)
	}
	if n.raft != nil {
		if err := n.raft.Shutdown().Error(); err != nil {
			n.log.Warn("raft shutdown", "err", err)
		}
	}
	if n.netTrans != nil {
		n.netTrans.Close()
	}
	if n.store != nil {
		n.store.Close()
	}
}

// errNotLeader is returned when a write reaches a node that does not lead:
// it was refused before it reached the log, so it may be retried anywhere.
var errNotLeader = errors.New("this node is not the raft leader")

// errOutcomeUnknown is returned when leadership was lost after a write was
// appended to the log but before it was known to commit: it may yet be
// applied by the next leader, so it is not retried for the caller (a
// Submit retried with its idempotency_key is safe).
var errOutcomeUnknown = errors.New("leadership changed before the write was known to commit; it may or may not have been applied")

// proposeError maps raft's errors for a proposal.
func proposeError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return errNotLeader
	case errors.Is(err, raft.ErrLeadershipLost):
		return errOutcomeUnknown
	}
	return err
}

// outcome waits for a proposal: the state machine's result, or raft's error
// as proposeError maps it.
func outcome(f raft.ApplyFuture) (fsm.Result, error) {
	if err := f.Error(); err != nil { // Error waits for the entry; only then is Response set
		return fsm.Result{}, proposeError(err)
	}
	res, _ := f.Response().(fsm.Result)
	return res, nil
}

// propose commits one command and returns the state machine's result.
func (n *Node) propose(ctx context.Context, t fsm.CommandType, msg proto.Message) (fsm.Result, error) {
	if n.raft.State() != raft.Leader {
		return fsm.Result{}, errNotLeader
	}
	data, err := fsm.Encode(t, time.Now().UnixNano(), msg)
	if err != nil {
		return fsm.Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return fsm.Result{}, err
	}
	if n.metrics != nil {
		defer func(began time.Time) { n.metrics.Proposed(time.Since(began)) }(time.Now())
	}
	if n.proposer.maxBatch > 1 && n.proposer.enabled.Load() {
		return n.proposer.submit(ctx, data)
	}
	n.metrics.Batched(1)
	// Group commit off, or not yet known to be safe (gateBatches): one entry
	// per command, as many in flight as come.
	timeout := n.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = max(time.Until(dl), time.Millisecond) // raft reads 0 as no limit
	}
	return outcome(n.raft.Apply(data, timeout))
}

// proposeAll commits several commands of type t, in shared entries where
// group commit is on, and returns each one's result, in order.
func (n *Node) proposeAll(ctx context.Context, t fsm.CommandType, msgs []proto.Message) []proposed {
	out := make([]proposed, len(msgs))
	if len(msgs) == 0 {
		return out
	}
	if n.raft.State() != raft.Leader {
		return failed(out, errNotLeader)
	}
	now := time.Now()
	data := make([][]byte, len(msgs))
	for i, m := range msgs {
		d, err := fsm.Encode(t, now.UnixNano(), m)
		if err != nil {
			return failed(out, err)
		}
		data[i] = d
	}
	if err := ctx.Err(); err != nil {
		return failed(out, err)
	}
	if n.metrics != nil {
		defer func() {
			for range msgs {
				n.metrics.Proposed(time.Since(now))
			}
		}()
	}
	if n.proposer.maxBatch > 1 && n.proposer.enabled.Load() {
		return n.proposer.submitGroup(ctx, data)
	}
	// As propose does without group commit: one entry per command.
	futs := make([]raft.ApplyFuture, len(data))
	for i, d := range data {
		n.metrics.Batched(1)
		futs[i] = n.raft.Apply(d, n.cfg.ApplyTimeout)
	}
	for i, f := range futs {
		out[i].res, out[i].err = outcome(f)
	}
	return out
}

// proposeAsync starts a proposal and returns its future, or nil when this
// node is not the leader.
func (n *Node) proposeAsync(t fsm.CommandType, msg proto.Message) raft.ApplyFuture {
	if n.raft.State() != raft.Leader {
		return nil
	}
	return n.raft.Apply(fsm.MustEncode(t, time.Now().UnixNano(), msg), n.cfg.ApplyTimeout)
}

// setPolicyCommand is the command that sets policy p, with a new challenge
// key while the log has none (the first one applied is kept) and every
// server reads it (safe: readsChallenges).
func (n *Node) setPolicyCommand(p *sluicev1.Policy, safe bool) *raftv1.SetPolicy {
	c := &raftv1.SetPolicy{Policy: p}
	if n.fsm.ChallengeKey() == nil && safe {
		c.ChallengeKey = make([]byte, fsm.ChallengeKeyLen)
		rand.Read(c.ChallengeKey)
	}
	return c
}

// ensurePolicy proposes the configured policy when the log's differs.
func (n *Node) ensurePolicy(ctx context.Context) error {
	want := n.cfg.Policy
	if want == nil && n.cfg.InitialPolicy != nil && proto.Size(n.fsm.Policy()) == 0 {
		want = n.cfg.InitialPolicy
	}
	if want == nil || proto.Equal(want, n.fsm.Policy()) {
		return n.chall.ensureChallengeKey(ctx)
	}
	safe := n.chall.readsChallenges(ctx)
	if policyHasChallenges(want) && !safe {
		// gateBatches runs this again once every server reads them.
		n.policyNeeds.Store(challengeFormat)
		n.policyDeferred.Store(true)
		n.log.Info("the configured policy has CHALLENGE rules: it waits until every server reads log format 4", "format", challengeFormat)
		return nil
	}
	if field := sizeReservation(want); field != "" && !n.chall.readsFormat(ctx, sizesFormat) {
		if !n.policyDeferred.Swap(true) || n.policyNeeds.Swap(sizesFormat) != sizesFormat {
			n.log.Info("the configured policy reserves by size: it waits until every server reads log format 5", "field", field, "format", sizesFormat)
		}
		n.policyNeeds.Store(sizesFormat)
		return nil
	}
	res, err := n.propose(ctx, fsm.CmdSetPolicy, n.setPolicyCommand(want, safe))
	if err != nil {
		return err
	}
	if res.Err != nil {
		return res.Err
	}
	n.log.Info("policy applied", "tenants", len(want.Tenants), "models", len(want.Models))
	if want.GetAdminTokenSha256() == "" {
		// The operator's own file is applied as given (the simulator's have no token); the
		// admin API refuses such a policy unless forced.
		n.log.Warn("the policy has no admin_token_sha256: every admin command will be refused until a policy with one is applied with --policy")
	}
	return nil
}
