package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/fsm"
)

// Group commit. Every write a handler proposes goes through one goroutine
// that hands raft at most ProposeInflight log entries at a time; the
// commands that arrive while those are being committed go into the next
// entry together (fsm.CmdBatch, at most ProposeBatch of them). At low load
// an entry carries one command and nothing waits; under load a log entry,
// its msgpack encoding, its bolt key, its replication and raft's
// bookkeeping are paid once per batch instead of once per write. raft
// itself already commits the entries that reach it together with one
// fsync; this takes the per-entry costs off as well.

type proposal struct {
	data []byte
	done chan proposed // buffered: the proposer never blocks on a caller
}

type proposed struct {
	res fsm.Result
	err error
}

type proposer struct {
	n        *Node
	in       chan *proposal
	slots    chan struct{} // one per entry in flight
	enabled  atomic.Bool   // this term's leader found every server reads batches
	maxBatch int
	maxBytes int
}

const (
	defaultProposeBatch    = 64
	defaultProposeInflight = 4
	// proposeMaxBytes bounds a batch entry's size (a Submit is ~100 bytes;
	// a SetPolicy may be large and then goes alone).
	proposeMaxBytes = 256 << 10
)

func newProposer(n *Node, batch, inflight int) *proposer {
	batch = max(orDefault(batch, defaultProposeBatch), 1)
	inflight = max(orDefault(inflight, defaultProposeInflight), 1)
	return &proposer{
		n:        n,
		in:       make(chan *proposal, 4096),
		slots:    make(chan struct{}, inflight),
		maxBatch: batch,
		maxBytes: proposeMaxBytes,
	}
}

// errStopping answers writes that arrive while the node shuts down.
var errStopping = errors.New("the node is shutting down")

// submit hands one encoded command to the proposer and waits for its
// result. It gives up on the caller's context only while the command
// waits to be handed over; after that it waits for the outcome, as raft's
// own Apply does: the command may still commit.
func (p *proposer) submit(ctx context.Context, data []byte) (fsm.Result, error) {
	pr := &proposal{data: data, done: make(chan proposed, 1)}
	select {
	case p.in <- pr:
	case <-ctx.Done():
		return fsm.Result{}, ctx.Err()
	case <-p.n.ctx.Done():
		return fsm.Result{}, errStopping
	}
	select {
	case r := <-pr.done:
		return r.res, r.err
	case <-p.n.ctx.Done():
		return fsm.Result{}, errStopping
	}
}

// run is the proposer's loop; it returns when the node stops.
func (p *proposer) run() {
	var carry *proposal // the command that did not fit the last entry
	for {
		first := carry
		carry = nil
		if first == nil {
			select {
			case first = <-p.in:
			case <-p.n.ctx.Done():
				return
			}
		}
		// Wait for room in the pipeline first: what arrives meanwhile joins
		// this entry.
		select {
		case p.slots <- struct{}{}:
		case <-p.n.ctx.Done():
			first.done <- proposed{err: errStopping}
			return
		}
		batch := append(make([]*proposal, 0, p.maxBatch), first)
		size := len(first.data)
	fill:
		for len(batch) < p.maxBatch {
			select {
			case pr := <-p.in:
				if size+len(pr.data) > p.maxBytes {
					carry = pr
					break fill
				}
				batch = append(batch, pr)
				size += len(pr.data)
			default:
				break fill
			}
		}
		p.propose(batch)
	}
}

// propose starts one log entry for the batch (holding a slot) and answers
// its callers when raft has applied it.
func (p *proposer) propose(batch []*proposal) {
	data := batch[0].data
	if len(batch) > 1 {
		cmds := make([][]byte, len(batch))
		for i, pr := range batch {
			cmds[i] = pr.data
		}
		data = fsm.EncodeBatch(time.Now().UnixNano(), cmds)
	}
	fut := p.n.raft.Apply(data, p.n.cfg.ApplyTimeout)
	go func() {
		err := fut.Error()
		<-p.slots
		if err != nil {
			p.fail(batch, proposeError(err))
			return
		}
		res, _ := fut.Response().(fsm.Result)
		if len(batch) == 1 {
			batch[0].done <- proposed{res: res}
			return
		}
		if len(res.Batch) != len(batch) {
			err := res.Err
			if err == nil {
				err = fmt.Errorf("node: a batch of %d commands gave %d results", len(batch), len(res.Batch))
			}
			p.fail(batch, err)
			return
		}
		for i, pr := range batch {
			pr.done <- proposed{res: res.Batch[i]}
		}
	}()
}

func (p *proposer) fail(batch []*proposal, err error) {
	for _, pr := range batch {
		pr.done <- proposed{err: err}
	}
}

// The log format gate. A node built before group commit cannot apply a
// batch entry (it would drop its commands and diverge), and once batch
// entries exist its job ids would collide with theirs. So a leader batches
// only after every server in the raft configuration has reported, on
// /healthz, that it reads this log format; and no node that does not is
// let in by join while group commit is on.

// logFormat is the log format this build reads and writes: 2 adds
// fsm.CmdBatch and job ids past the entry's index.
const logFormat = 2

// logFormatHeader carries logFormat on /healthz replies.
const logFormatHeader = "Sluice-Log-Format"

// peerLogFormat asks the node at httpAddr which log format it reads; 0
// when it does not say (a build from before the header) or cannot be
// reached.
func (n *Node) peerLogFormat(ctx context.Context, httpAddr string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/healthz", nil)
	if err != nil {
		return 0, err
	}
	res, err := n.peers.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(res.Body, 1<<10))
	res.Body.Close()
	v, _ := strconv.Atoi(res.Header.Get(logFormatHeader))
	return v, nil
}

// clusterReadsBatches reports whether every other server in the raft
// configuration has a recorded HTTP address and reports logFormat or later.
func (n *Node) clusterReadsBatches(ctx context.Context) bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == n.cfg.ID {
			continue
		}
		m, ok := n.fsm.Member(string(s.ID))
		if !ok || m.HttpAddress == "" {
			return false
		}
		if v, err := n.peerLogFormat(ctx, m.HttpAddress); err != nil || v < logFormat {
			return false
		}
	}
	return true
}

// gateBatches turns group commit on for this term of leadership once the
// whole cluster reads batch entries, checking every second until then; it
// returns when that is so or the term ends (ctx).
func (n *Node) gateBatches(ctx context.Context) {
	if n.proposer.maxBatch <= 1 {
		return
	}
	for {
		if n.clusterReadsBatches(ctx) {
			n.proposer.enabled.Store(true)
			n.log.Info("group commit on: every server reads batch entries")
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// checkJoiner refuses a node that does not read this log format while
// group commit is on: the log it would replay may hold batch entries.
func (n *Node) checkJoiner(ctx context.Context, id, httpAddr string) error {
	if n.proposer.maxBatch <= 1 {
		return nil
	}
	v, err := n.peerLogFormat(ctx, httpAddr)
	if err != nil {
		return fmt.Errorf("cannot check node %s's version at http://%s/healthz (%v): start it before joining it", id, httpAddr, err)
	}
	if v < logFormat {
		return fmt.Errorf("node %s at %s reads log format %d, this cluster writes %d (group commit): upgrade it, or run every server with --propose-batch 1", id, httpAddr, v, logFormat)
	}
	return nil
}
