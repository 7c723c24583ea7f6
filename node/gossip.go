package node

import (
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// The gossip pool (hashicorp/memberlist) is how executors and servers find
// each other: every member carries a small GossipMeta (its role, a
// server's API address, an executor's GPUs and free slots), refreshed
// every few seconds. The leader follows it to update its placement view
// and to end the lease of an executor the pool declares dead at once,
// without waiting for missed heartbeats.

// metaVersion is the first byte of every encoded GossipMeta.
const metaVersion = 1

// EncodeMeta encodes gossip metadata; memberlist refuses more than
// memberlist.MetaMaxSize (512) bytes.
func EncodeMeta(m *sluicev1.GossipMeta) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.MarshalAppend([]byte{metaVersion}, m)
	if err != nil {
		return nil, err
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("gossip metadata: %d bytes exceed memberlist's %d-byte limit", len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

// DecodeMeta decodes gossip metadata; garbage from the pool is an error,
// never a crash.
func DecodeMeta(b []byte) (*sluicev1.GossipMeta, error) {
	if len(b) == 0 {
		return nil, errors.New("gossip metadata: empty")
	}
	if b[0] != metaVersion {
		return nil, fmt.Errorf("gossip metadata: version %d, want %d", b[0], metaVersion)
	}
	m := &sluicev1.GossipMeta{}
	if err := proto.Unmarshal(b[1:], m); err != nil {
		return nil, fmt.Errorf("gossip metadata: %w", err)
	}
	return m, nil
}

// PoolEvent is a change in the pool.
type PoolEvent struct {
	Kind string // "join", "update" or "leave" (left or failed)
	Name string
	Meta *sluicev1.GossipMeta // nil when the metadata does not decode
}

// PoolConfig configures a pool member.
type PoolConfig struct {
	// Name is unique in the pool: a server's raft id, an executor's name.
	Name string
	// Bind is host:port for gossip (TCP and UDP); port 0 picks one.
	Bind string
	// Join lists members' gossip addresses to join through; empty starts
	// a new pool.
	Join []string
	// Meta returns the member's current metadata.
	Meta func() *sluicev1.GossipMeta
	// Events, if set, hears of joins, updates and leaves (synchronously:
	// keep it short).
	Events func(PoolEvent)
	// LogOutput receives memberlist's log (default: discarded).
	LogOutput io.Writer
	// KeyFile, when set, encrypts the pool with the keys it lists (see
	// LoadGossipKeys); members without a key it lists cannot join.
	KeyFile string
	// Logger hears of key reloads (default: discarded).
	Logger *slog.Logger
}

// Pool is this process's membership in the gossip pool.
type Pool struct {
	ml  *memberlist.Memberlist
	cfg PoolConfig
	log *slog.Logger

	mu        sync.Mutex // guards keyStamp; serialises key reloads
	ring      *memberlist.Keyring
	keyStamp  fileStamp
	stop      chan struct{}
	watchDone chan struct{}
}

// StartPool joins (or starts) the gossip pool.
func StartPool(cfg PoolConfig) (*Pool, error) {
	host, portStr, err := net.SplitHostPort(cfg.Bind)
	if err != nil {
		return nil, fmt.Errorf("--gossip: %q is not host:port", cfg.Bind)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("--gossip: port %q is not a number", portStr)
	}
	if port == 0 {
		// memberlist binds TCP and UDP to one port: find one free for TCP.
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, err
		}
		port = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
	}
	p := &Pool{cfg: cfg, log: cfg.Logger, stop: make(chan struct{}), watchDone: make(chan struct{})}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	c := memberlist.DefaultLANConfig()
	if cfg.KeyFile != "" {
		p.keyStamp = stampOf(cfg.KeyFile)
		keys, err := LoadGossipKeys(cfg.KeyFile)
		if err != nil {
			return nil, err
		}
		if p.ring, err = memberlist.NewKeyring(keys, keys[0]); err != nil {
			return nil, fmt.Errorf("--gossip-key-file %s: %w", cfg.KeyFile, err)
		}
		c.Keyring = p.ring
		c.GossipVerifyIncoming, c.GossipVerifyOutgoing = true, true
	}
	c.Name = cfg.Name
	c.BindAddr, c.BindPort = host, port
	c.AdvertiseAddr, c.AdvertisePort = host, port
	c.Delegate = p
	c.Events = p
	// Quicker than a LAN's defaults: a dead executor is noticed in about
	// a second or two on loopback and small clusters.
	c.ProbeInterval = 500 * time.Millisecond
	c.ProbeTimeout = 250 * time.Millisecond
	c.GossipInterval = 100 * time.Millisecond
	c.SuspicionMult = 2
	out := cfg.LogOutput
	if out == nil {
		out = io.Discard
	}
	c.Logger = log.New(out, "", log.LstdFlags)
	ml, err := memberlist.Create(c)
	if err != nil {
		return nil, &ListenError{What: "gossip", Addr: cfg.Bind, Err: err}
	}
	p.ml = ml
	if len(cfg.Join) > 0 {
		if _, err := ml.Join(cfg.Join); err != nil {
			ml.Shutdown()
			return nil, fmt.Errorf("--join %v: %w", cfg.Join, err)
		}
	}
	if p.ring != nil {
		go p.watchKeys()
	} else {
		close(p.watchDone)
	}
	return p, nil
}

// Join joins the pool through addrs again (a member whose peers all went
// away, e.g. its only server restarted, is otherwise alone for good).
func (p *Pool) Join(addrs []string) error {
	if len(addrs) == 0 {
		return errors.New("no addresses to join through")
	}
	_, err := p.ml.Join(addrs)
	return err
}

// Addr is the pool address others join through.
func (p *Pool) Addr() string {
	n := p.ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// Refresh re-reads this member's metadata and gossips it.
func (p *Pool) Refresh() error { return p.ml.UpdateNode(time.Second) }

// Members lists the live members whose metadata decodes.
func (p *Pool) Members() map[string]*sluicev1.GossipMeta {
	out := make(map[string]*sluicev1.GossipMeta)
	for _, n := range p.ml.Members() {
		if m, err := DecodeMeta(n.Meta); err == nil {
			out[n.Name] = m
		}
	}
	return out
}

// Close leaves the pool gracefully, then stops.
func (p *Pool) Close() error {
	close(p.stop)
	<-p.watchDone
	p.ml.Leave(time.Second)
	return p.ml.Shutdown()
}

// NodeMeta implements memberlist.Delegate.
func (p *Pool) NodeMeta(limit int) []byte {
	if p.cfg.Meta == nil {
		return nil
	}
	b, err := EncodeMeta(p.cfg.Meta())
	if err != nil || len(b) > limit {
		return []byte{metaVersion} // an empty but valid record rather than none
	}
	return b
}

func (p *Pool) NotifyMsg([]byte)                           {}
func (p *Pool) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (p *Pool) LocalState(join bool) []byte                { return nil }
func (p *Pool) MergeRemoteState(buf []byte, join bool)     {}

func (p *Pool) event(kind string, n *memberlist.Node) {
	if p.cfg.Events == nil {
		return
	}
	m, _ := DecodeMeta(n.Meta)
	p.cfg.Events(PoolEvent{Kind: kind, Name: n.Name, Meta: m})
}

// NotifyJoin, NotifyLeave and NotifyUpdate implement memberlist.EventDelegate.
func (p *Pool) NotifyJoin(n *memberlist.Node)   { p.event("join", n) }
func (p *Pool) NotifyLeave(n *memberlist.Node)  { p.event("leave", n) }
func (p *Pool) NotifyUpdate(n *memberlist.Node) { p.event("update", n) }
