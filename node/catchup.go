package node

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"
)

// A node judges an API key (or the admin or executor token) only from a
// replica that holds the policy the cluster holds. One that has just started
// holds its last snapshot until the leader sends it the rest of the log, and
// one just elected applies its predecessors' entries first: either may lack
// a key that exists. Such a node answers unavailable (retryable, naming the
// leader), never unauthenticated.

// catchUp marks the node caught up once it has applied what the leader had
// applied when asked (or it leads, with its log applied), and marks it behind
// again at every change of leader (a new leader, or none: a node cut off
// from the cluster may miss keys added meanwhile). It runs until the node
// stops.
func (n leaderDuty) catchUp() {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var reminded time.Time // when inCluster was last asked
	for {
		epoch := n.leaderEpoch()
		var target uint64
		for !n.caughtUp.Load() && epoch.Err() == nil {
			select {
			case <-n.ctx.Done():
				return
			case <-epoch.Done():
				continue
			case <-tick.C:
			}
			if n.Leading() {
				n.caughtUp.Store(true)
				break
			}
			if target == 0 {
				target = n.leaderApplied()
			}
			// Asked at most every 30 s: raft answers GetConfiguration on its
			// main loop, not worth a call each tick of an election.
			if time.Since(reminded) > 30*time.Second {
				reminded = time.Now()
				if !n.inCluster() {
					n.log.Warn(notInClusterHint(n.cfg.ID, n.RaftAddr(), n.Addr()))
				}
			}
			if target > 0 && n.fsm.LastIndex() >= target {
				n.caughtUp.Store(true)
			}
		}
		select {
		case <-n.ctx.Done():
			return
		case <-epoch.Done():
			n.caughtUp.Store(false)
		}
	}
}

// leaderApplied asks the leader how far it has applied its log; 0 when there
// is no leader or it cannot be asked.
func (n leaderDuty) leaderApplied() uint64 {
	_, id := n.raft.LeaderWithID()
	if id == "" || id == raft.ServerID(n.cfg.ID) {
		return 0
	}
	m, ok := n.fsm.Member(string(id))
	if !ok || m.HttpAddress == "" {
		return 0
	}
	h, err := n.cluster.askHealth(n.ctx, m.HttpAddress)
	if err != nil {
		return 0
	}
	if h.applied == 0 {
		// A leader from before the header: what it has committed, as far as
		// this follower has heard.
		return n.raft.CommitIndex()
	}
	return h.applied
}

// canJudgeKeys reports whether a key this node does not know is unknown to
// the cluster: the node leads with its log applied, or it follows and has
// caught up with the leader it follows. (A key added a moment ago may still
// be on its way to a follower: it is refused there for that moment.)
func (n leaderDuty) canJudgeKeys() bool {
	if n.raft.State() == raft.Leader {
		return n.Leading()
	}
	return n.caughtUp.Load()
}

// notCaughtUpError answers a credential this node cannot judge yet. The call
// was not applied, so a forwarding node may retry it elsewhere.
func (n leaderDuty) notCaughtUpError() *connect.Error {
	e := connect.NewError(connect.CodeUnavailable, errors.New("authorization: this node has not caught up with the raft log yet and cannot check credentials; retry shortly"))
	e.Meta().Set(notLeaderHeader, n.cfg.ID)
	e.Meta().Set("Retry-After", "1")
	if base, err := n.route.leaderBase(); err == nil {
		e.Meta().Set(leaderHeader, base)
	}
	return e
}

// leaderEpoch is a context canceled when this node next sees the leadership
// change (a new leader, or none); forwarded calls end with it.
func (n leaderDuty) leaderEpoch() context.Context {
	n.epochMu.Lock()
	defer n.epochMu.Unlock()
	return n.epoch
}

// watchLeader renews the leader epoch on every leadership change raft
// reports, until the node stops.
func (n leaderDuty) watchLeader(changes <-chan raft.Observation) {
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-changes:
		}
		ctx, cancel := context.WithCancel(n.ctx)
		n.epochMu.Lock()
		end := n.endEpoch
		n.epoch, n.endEpoch = ctx, cancel
		n.epochMu.Unlock()
		end()
	}
}

// inCluster reports whether this node's raft configuration has any server:
// false for a node started without --bootstrap that no member has joined.
func (n leaderDuty) inCluster() bool {
	f := n.raft.GetConfiguration()
	return f.Error() == nil && len(f.Configuration().Servers) > 0
}

func notInClusterHint(id, raftAddr, httpAddr string) string {
	return "this node is not part of a cluster yet: start the first node with --bootstrap, or join this one from a member: " +
		"sluice admin join --id " + id + " --raft " + raftAddr + " --http " + httpAddr
}
