package node

import (
	"sync"
	"sync/atomic"
)

// changes wakes whoever waits for the replicated state to change (watches,
// the leader loop, the webhook sender): raftFSM notifies it after every
// Apply and Restore. A reader takes the channel first and reads the state
// after, so a change between the two still wakes it.
type changes struct {
	mu      sync.Mutex
	ch      chan struct{}
	watched atomic.Bool // someone holds ch: close it at the next change
}

func newChanges() *changes { return &changes{ch: make(chan struct{})} }

// wait returns a channel closed at the next change.
func (c *changes) wait() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.watched.Store(true)
	return c.ch
}

// notify closes the channel wait handed out, if anyone asked for it since
// the last change (nobody waiting costs one atomic swap).
func (c *changes) notify() {
	if c == nil || !c.watched.Swap(false) {
		return
	}
	c.mu.Lock()
	close(c.ch)
	c.ch = make(chan struct{})
	c.mu.Unlock()
}
