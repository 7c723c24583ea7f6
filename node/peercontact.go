package node

import (
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// peerContact is when this node last heard from each other server, and
// whether it can reach it now, for `sluice admin members`. raft keeps each
// follower's last contact inside the leader's replication loop and does not
// export it; it does report a failed heartbeat (with that time) and the
// first one that succeeds again. A status probe (fillPeers) that a member
// answers, or does not, is the other source, on any node.
type peerContact struct {
	mu      sync.Mutex
	heard   map[string]time.Time // last contact, from heartbeats or probes
	failing map[string]bool      // the leader's heartbeats to it fail
}

func newPeerContact() *peerContact {
	return &peerContact{heard: make(map[string]time.Time), failing: make(map[string]bool)}
}

// observer records heartbeat observations. It does its work in the filter,
// which raft calls synchronously, and passes nothing on (no channel): no
// goroutine to own, and nothing dropped when the reader is slow.
func (p *peerContact) observer() *raft.Observer {
	return raft.NewObserver(nil, false, func(o *raft.Observation) bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		switch d := o.Data.(type) {
		case raft.FailedHeartbeatObservation:
			p.failing[string(d.PeerID)] = true
			if d.LastContact.After(p.heard[string(d.PeerID)]) {
				p.heard[string(d.PeerID)] = d.LastContact
			}
		case raft.ResumedHeartbeatObservation:
			delete(p.failing, string(d.PeerID))
			p.heard[string(d.PeerID)] = time.Now()
		case raft.LeaderObservation:
			// Heartbeat failures are the old leader's view; a new leader reports its own.
			clear(p.failing)
		}
		return false
	})
}

// answered records that a peer answered a status probe at the given time.
func (p *peerContact) answered(id string, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if at.After(p.heard[id]) {
		p.heard[id] = at
	}
}

// view is what this node knows of a peer: when it last heard from it (zero
// if never) and whether the leader's heartbeats to it are failing.
func (p *peerContact) view(id string) (heard time.Time, failing bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.heard[id], p.failing[id]
}
