package node

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/fsm"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// RaftTiming holds the raft settings Sluice tunes; see docs/cluster.md for
// how they were chosen.
type RaftTiming struct {
	// HeartbeatTimeout: a follower that hears nothing for this long starts
	// an election (default 500ms).
	HeartbeatTimeout time.Duration
	// ElectionTimeout: a candidate waits this long for votes (default 500ms).
	ElectionTimeout time.Duration
	// LeaderLeaseTimeout: a leader that cannot reach a quorum for this long
	// steps down (default 250ms).
	LeaderLeaseTimeout time.Duration
	// MaxAppendEntries: entries per AppendEntries RPC and per batch applied
	// (default 512).
	MaxAppendEntries int
	// SnapshotThreshold: log entries, or commands applied (a batch entry's
	// each count), since the last snapshot before the next (default 65536);
	// that is checked at a random point of every SnapshotInterval to twice
	// that (default 10s), as raft checks its own.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	// TrailingLogs: entries kept after a snapshot so that a slow follower
	// catches up from the log rather than a snapshot (default 10240).
	TrailingLogs uint64
}

func (t RaftTiming) apply(c *raft.Config) {
	c.HeartbeatTimeout = orDefault(t.HeartbeatTimeout, 500*time.Millisecond)
	c.ElectionTimeout = orDefault(t.ElectionTimeout, 500*time.Millisecond)
	c.LeaderLeaseTimeout = orDefault(t.LeaderLeaseTimeout, 250*time.Millisecond)
	c.CommitTimeout = 5 * time.Millisecond
	c.MaxAppendEntries = orDefault(t.MaxAppendEntries, 512)
	c.BatchApplyCh = true
	c.SnapshotThreshold = orDefault(t.SnapshotThreshold, 65536)
	c.SnapshotInterval = orDefault(t.SnapshotInterval, 10*time.Second)
	c.TrailingLogs = orDefault(t.TrailingLogs, 10240)
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// setTerm records the context of this node's current term of leadership.
func (n membership) setTerm(ctx context.Context) {
	n.termMu.Lock()
	n.termCtx = ctx
	n.termMu.Unlock()
}

// term is the context of the current term of leadership; nil when this node
// does not lead.
func (n membership) term() context.Context {
	n.termMu.Lock()
	defer n.termMu.Unlock()
	if n.termCtx == nil || n.termCtx.Err() != nil {
		return nil
	}
	return n.termCtx
}

// ensureMember records this node's HTTP address in the log when it leads
// and the log has another (or none), so that followers can forward to it.
func (n membership) ensureMember(ctx context.Context) error {
	want := &raftv1.SetMember{Id: n.cfg.ID, RaftAddress: string(n.transport.LocalAddr()), HttpAddress: n.Addr()}
	if have, ok := n.fsm.Member(n.cfg.ID); ok && proto.Equal(have, want) {
		return nil
	}
	res, err := n.propose(ctx, fsm.CmdSetMember, want)
	if err != nil {
		return err
	}
	return res.Err
}

// handOver gives leadership to another voter before this node stops, so
// that the cluster does not wait out an election timeout.
func (n membership) handOver() {
	if n.raft == nil || n.raft.State() != raft.Leader {
		return
	}
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	voters := 0
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	if voters < 2 {
		return
	}
	if err := n.raft.LeadershipTransfer().Error(); err != nil && !errors.Is(err, raft.ErrNotLeader) {
		n.log.Warn("leadership transfer before stopping", "err", err)
		return
	}
	n.log.Info("handed leadership over before stopping", "to", n.leaderID())
}

// join adds a voter and records its addresses; only the leader calls it.
func (n membership) join(ctx context.Context, id, raftAddr, httpAddr string) error {
	if err := n.checkPeerTLS(ctx, id, raftAddr); err != nil {
		return err
	}
	if err := n.checkJoiner(ctx, id, httpAddr); err != nil {
		return err
	}
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	for _, s := range f.Configuration().Servers {
		switch {
		case s.ID == raft.ServerID(id) && s.Address == raft.ServerAddress(raftAddr):
			// Already a member (a retried join): only the HTTP address may change.
		case s.ID == raft.ServerID(id) || s.Address == raft.ServerAddress(raftAddr):
			if err := n.raft.RemoveServer(s.ID, 0, n.cfg.ApplyTimeout).Error(); err != nil {
				return fmt.Errorf("replace %s: %w", s.ID, err)
			}
		}
	}
	if err := n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, n.cfg.ApplyTimeout).Error(); err != nil {
		return fmt.Errorf("add voter %s: %w", id, err)
	}
	res, err := n.propose(ctx, fsm.CmdSetMember, &raftv1.SetMember{Id: id, RaftAddress: raftAddr, HttpAddress: httpAddr})
	if err != nil {
		return err
	}
	return res.Err
}

// remove takes a server out of the group and forgets its addresses.
func (n membership) remove(ctx context.Context, id string) error {
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, n.cfg.ApplyTimeout).Error(); err != nil {
		return fmt.Errorf("remove %s: %w", id, err)
	}
	res, err := n.propose(ctx, fsm.CmdSetMember, &raftv1.SetMember{Id: id, Remove: true})
	if err != nil {
		return err
	}
	return res.Err
}

// isMemberHost reports whether host runs a member's API.
func (n membership) isMemberHost(host string) bool {
	for _, m := range n.fsm.Members() {
		h, _, err := net.SplitHostPort(m.HttpAddress)
		if err == nil && h == host {
			return true
		}
	}
	return false
}

// recoverPeers applies <data>/peers.json when an operator wrote one to
// recover from losing a majority: the file names the servers of the new
// cluster (hashicorp/raft's JSON format, version 3), the node rewrites its
// configuration to it, and the file is renamed so that it applies once.
func (n membership) recoverPeers(conf *raft.Config, st *stores, snaps raft.SnapshotStore, trans raft.Transport) error {
	path := filepath.Join(n.cfg.DataDir, "peers.json")
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	cfg, err := raft.ReadConfigJSON(path)
	if err != nil {
		return fmt.Errorf("node: %s: %w", path, err)
	}
	if err := raft.RecoverCluster(conf, raftFSM{f: newState(fsm.New())}, st.log, st.stable, snaps, trans, cfg); err != nil {
		return fmt.Errorf("node: recover from %s: %w", path, err)
	}
	n.log.Warn("recovered the raft configuration from peers.json", "servers", len(cfg.Servers))
	return os.Rename(path, path+".recovered")
}

// onPoolEvent follows the gossip pool. An executor the pool declares gone
// (left, or failed its probes) loses its lease at once and its attempts are
// requeued, without waiting for missed heartbeats; an update refreshes its
// warm models and free GPU memory in the leader's placement view.
func (n membership) onPoolEvent(e PoolEvent) {
	if e.Meta != nil && e.Meta.Role != sluicev1.GossipMeta_ROLE_EXECUTOR {
		return
	}
	switch e.Kind {
	case "leave":
		n.wg.Add(1)
		go func() { // the pool calls us synchronously; proposing may block
			defer n.wg.Done()
			if n.term() == nil {
				return
			}
			held, ok := n.execs.detachByName(e.Name)
			if !ok {
				return
			}
			n.metrics.Lost()
			n.log.Warn("executor left the gossip pool", "executor", e.Name, "attempts", len(held))
			for _, a := range held {
				n.duty.requeue(a.Job, a.Attempt, fmt.Sprintf("executor %s left the gossip pool (stopped or failed)", e.Name))
			}
		}()
	case "update", "join":
		if e.Meta != nil {
			n.execs.gossiped(e.Name, e.Meta)
		}
	}
}

// snapshotByCommands takes a snapshot once SnapshotThreshold commands have
// been applied since the last one. raft's own threshold counts log
// entries, and with group commit one entry carries up to ProposeBatch
// commands: counted in entries alone, the log (and the replay after a
// restart) would grow that many times longer between snapshots.
//
// It checks at a random point of every second interval, as raft's own
// snapshot loop does: replicas started together, with the same state and
// the same fixed period, would otherwise all encode their whole state at
// the same moment, and on hosts that share CPUs or a disk every write
// waits for that at once.
func (n membership) snapshotByCommands() {
	threshold := orDefault(n.cfg.Raft.SnapshotThreshold, 65536)
	every := orDefault(n.cfg.Raft.SnapshotInterval, 10*time.Second)
	t := time.NewTimer(jittered(every))
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
			t.Reset(jittered(every))
		}
		if n.fsm.CommandsApplied()-n.snapAt.Load() < threshold {
			continue
		}
		if err := n.raft.Snapshot().Error(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) && n.ctx.Err() == nil {
			n.log.Warn("snapshot by commands applied", "err", err)
		}
	}
}

// jittered is a random duration in [d, 2d).
func jittered(d time.Duration) time.Duration {
	return d + rand.N(d)
}
