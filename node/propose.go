package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/sluicehq/sluice/fsm"
)

// Group commit. Every write a handler proposes goes through one goroutine
// that hands raft at most ProposeInflight log entries at a time; the
// commands that arrive while those are being committed go into the next
// entry together (fsm.CmdBatch, at most ProposeBatch of them). At low load
// an entry carries one command and nothing waits; under load a log entry,
// its msgpack encoding, its place in the log store, its replication and
// raft's bookkeeping are paid once per batch instead of once per write. raft
// itself already commits the entries that reach it together with one
// fsync; this takes the per-entry costs off as well.
//
// A batch that is not full waits for the pipeline to empty before it goes;
// only full batches go beside entries in flight. Otherwise, at a few dozen
// clients, each of the entries in flight would carry a handful of commands,
// and every entry costs each replica an fsync of its log (two with the
// bolt log store, with which this was measured): at 16 clients on 3 nodes
// this rule gave 2530–3209 writes/s against 1954–2182 with up to 4 partial
// entries in flight, at 61–73 % of the servers' CPU per write
// (bench/README.md, "Group commit").

type proposal struct {
	data []byte
	done chan proposed // buffered: the proposer never blocks on a caller
	// more are the rest of a group (submitGroup): they follow this one into
	// the same entry, as far as it has room, and answer on the same done,
	// each with its place in the group (i).
	more []proposal
	i    int
}

type proposed struct {
	res fsm.Result
	err error
	i   int // the proposal's place in its group
}

func (pr *proposal) answer(res fsm.Result, err error) {
	pr.done <- proposed{res: res, err: err, i: pr.i}
}

type proposer struct {
	n        *Node
	in       chan *proposal
	slots    chan struct{}          // one per entry in flight
	freed    chan struct{}          // a slot was given back (buffered, 1)
	enabled  atomic.Bool            // every server of configuration `verified` reads batches
	verified atomic.Pointer[string] // configKey of the membership gateBatches checked
	// format is the lowest log format the servers of `verified` reported
	// (this build's own included), when enabled.
	format   atomic.Int32
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
		freed:    make(chan struct{}, 1),
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

// submitGroup hands several encoded commands to the proposer at once, so
// that they go into the same entry as far as it has room, and waits for
// their results, as submit does.
func (p *proposer) submitGroup(ctx context.Context, data [][]byte) []proposed {
	done := make(chan proposed, len(data))
	group := make([]proposal, len(data))
	for i, d := range data {
		group[i] = proposal{data: d, done: done, i: i}
	}
	group[0].more = group[1:]
	out := make([]proposed, len(data))
	select {
	case p.in <- &group[0]:
	case <-ctx.Done():
		return failed(out, ctx.Err())
	case <-p.n.ctx.Done():
		return failed(out, errStopping)
	}
	answered := make([]bool, len(data))
	for range data {
		select {
		case r := <-done:
			out[r.i], answered[r.i] = r, true
		case <-p.n.ctx.Done():
			for i := range out {
				if !answered[i] {
					out[i] = proposed{err: errStopping}
				}
			}
			return out
		}
	}
	return out
}

// expand appends pr and the rest of its group to pending.
func (pr *proposal) expand(pending []*proposal) []*proposal {
	pending = append(pending, pr)
	for i := range pr.more {
		pending = append(pending, &pr.more[i])
	}
	return pending
}

// failed gives every result in out the error err, and returns out.
func failed(out []proposed, err error) []proposed {
	for i := range out {
		out[i] = proposed{err: err}
	}
	return out
}

// run is the proposer's loop; it returns when the node stops.
func (p *proposer) run() {
	// pending: commands taken from p.in that are in no entry yet (the rest
	// of a group, or what did not fit the last entry).
	var pending []*proposal
	for {
		if len(pending) == 0 {
			select {
			case pr := <-p.in:
				pending = pr.expand(pending)
			case <-p.n.ctx.Done():
				return
			}
		}
		batch := make([]*proposal, 0, p.maxBatch)
		size := 0
		// fill moves pending commands into the batch while they fit (the
		// first always does); it reports whether the batch is full.
		fill := func() bool {
			for len(pending) > 0 {
				pr := pending[0]
				if len(batch) > 0 && size+len(pr.data) > p.maxBytes {
					return true
				}
				batch = append(batch, pr)
				size += len(pr.data)
				pending = pending[1:]
				if len(batch) == p.maxBatch {
					return true
				}
			}
			return false
		}
		// The rest of a group that the last entry split goes at once, beside
		// its head: the group's callers wait for all of it, and little could
		// join it (a follower sends another batch meanwhile only when that
		// one is full, forwardbatch.go).
		rest := len(pending) > 0 && pending[0].i > 0
		full := fill() || rest
		gather(p.n.ctx, p.in, p.slots, p.freed, full, func(pr *proposal) bool {
			pending = pr.expand(pending)
			return fill()
		})
		// Then wait for room in the pipeline: what arrives meanwhile waits
		// for the next entry.
		if !p.acquire() {
			p.fail(append(batch, pending...), errStopping)
			return
		}
		p.propose(batch)
	}
}

// gather is group commit's wait. While batches are in flight (slots taken),
// one that is not full waits for more of what arrives on in (add takes it
// and reports whether the batch is now full) or for them all to be done
// (freed); a full batch goes at once, beside them. It returns when the
// batch is full, nothing is in flight, or ctx ends. The proposer forms log
// entries by it, and a follower its batches of forwarded Submits
// (forwardbatch.go).
func gather[T any](ctx context.Context, in <-chan T, slots chan struct{}, freed <-chan struct{}, full bool, add func(T) bool) {
	for !full {
		select {
		case v := <-in:
			full = add(v)
			continue
		default:
		}
		if len(slots) == 0 {
			return
		}
		select {
		case v := <-in:
			full = add(v)
		case <-freed:
		case <-ctx.Done():
			return
		}
	}
}

// acquire takes a slot for an entry. It fails once the node is stopping:
// a stopping node proposes nothing more, and its callers, told so, may
// retry elsewhere.
func (p *proposer) acquire() bool {
	if p.n.ctx.Err() != nil {
		return false
	}
	select {
	case p.slots <- struct{}{}:
		return true
	case <-p.n.ctx.Done():
		return false
	}
}

// release gives back an entry's slot.
func (p *proposer) release() {
	<-p.slots
	select {
	case p.freed <- struct{}{}:
	default:
	}
}

// batchesSafe reports whether a batch entry may be written now: the gate
// found that every server reads them, and the membership it checked is
// still the current one.
func (p *proposer) batchesSafe() bool {
	if !p.enabled.Load() {
		return false
	}
	f := p.n.raft.GetConfiguration()
	v := p.verified.Load()
	return f.Error() == nil && v != nil && configKey(f.Configuration()) == *v
}

// configKey identifies a membership: its servers, addresses and votes.
// (hashicorp/raft's GetConfiguration does not fill in the index.)
func configKey(c raft.Configuration) string {
	var b strings.Builder
	for _, s := range c.Servers {
		fmt.Fprintf(&b, "%s@%s/%d;", s.ID, s.Address, s.Suffrage)
	}
	return b.String()
}

// propose starts one log entry for the batch (holding a slot) and answers
// its callers when raft has applied it; when batches are not safe now, one
// entry per command, all under the one slot.
func (p *proposer) propose(batch []*proposal) {
	if len(batch) > 1 && !p.batchesSafe() {
		futs := make([]raft.ApplyFuture, len(batch))
		for i, pr := range batch {
			p.n.metrics.Batched(1)
			futs[i] = p.n.raft.Apply(pr.data, p.n.cfg.ApplyTimeout)
		}
		go func() {
			for i, pr := range batch {
				res, err := outcome(futs[i])
				pr.answer(res, err)
			}
			p.release()
		}()
		return
	}
	p.n.metrics.Batched(len(batch))
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
		res, err := outcome(fut)
		p.release()
		if err != nil {
			p.fail(batch, err)
			return
		}
		if len(batch) == 1 {
			batch[0].answer(res, nil)
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
			pr.answer(res.Batch[i], nil)
		}
	}()
}

func (p *proposer) fail(batch []*proposal, err error) {
	for _, pr := range batch {
		pr.answer(fsm.Result{}, err)
	}
}

// The log format gate. A node built before group commit cannot apply a
// batch entry (it would drop its commands and diverge), and once batch
// entries exist its job ids would collide with theirs. So a leader batches
// only after every server in the raft configuration has reported, on
// /healthz, that it reads this log format; and no node that does not is
// let in by join while group commit is on.

// logFormat is the log format this build reads and writes: 2 adds
// fsm.CmdBatch and job ids past the entry's index, 3 fsm.CmdCheck (gateway
// checks, served only once every server reads them: checksSafe), 4
// CHALLENGE rules, a Submit's challenge exemptions and answer, and the
// challenge key (challengesSafe), 5 reservations by size (a model's
// size.reserve: the state machine's size lines, readsFormat(sizesFormat)).
const logFormat = 5

// Each feature waits for the log format that brought it: batches and
// gateway checks for 3 (batchFormat), challenges for 4 (challengeFormat),
// reservations by size for 5 (sizesFormat).
const (
	batchFormat     = 3
	challengeFormat = 4
	sizesFormat     = 5
)

// logFormatHeader, nodeIDHeader and appliedHeader carry logFormat, the
// node's raft id and the last log index it applied on /healthz replies.
const (
	logFormatHeader = "Sluice-Log-Format"
	nodeIDHeader    = "Sluice-Node-Id"
	appliedHeader   = "Sluice-Applied"
)

// peerHealth is what a node says of itself on /healthz.
type peerHealth struct {
	format  int    // 0 from a build before group commit
	id      string // its raft id
	applied uint64 // 0 from a build that does not say
}

// askHealth reads the /healthz reply of the node at httpAddr.
func (n membership) askHealth(ctx context.Context, httpAddr string) (peerHealth, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.peerURL(httpAddr)+"/healthz", nil)
	if err != nil {
		return peerHealth{}, err
	}
	res, err := n.peers.Do(req)
	if err != nil {
		return peerHealth{}, err
	}
	io.Copy(io.Discard, io.LimitReader(res.Body, 1<<10))
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return peerHealth{}, fmt.Errorf("GET /healthz: %s", res.Status)
	}
	h := peerHealth{id: res.Header.Get(nodeIDHeader)}
	h.format, _ = strconv.Atoi(res.Header.Get(logFormatHeader))
	h.applied, _ = strconv.ParseUint(res.Header.Get(appliedHeader), 10, 64)
	return h, nil
}

// clusterReadsBatches checks every other server of the current raft
// configuration: it must have a recorded HTTP address at which a node of
// that raft id reports batchFormat or later. It returns the configuration's
// configKey, the lowest format reported (logFormat at most), and why not
// when a server fails the check.
func (n membership) clusterReadsBatches(ctx context.Context) (key string, format int, why error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return "", 0, err
	}
	key, format = configKey(f.Configuration()), logFormat
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == n.cfg.ID {
			continue
		}
		m, ok := n.fsm.Member(string(s.ID))
		if !ok || m.HttpAddress == "" {
			return key, 0, fmt.Errorf("server %s has no recorded HTTP address", s.ID)
		}
		h, err := n.askHealth(ctx, m.HttpAddress)
		switch {
		case err != nil:
			return key, 0, fmt.Errorf("server %s at %s: %w", s.ID, m.HttpAddress, err)
		case h.id != string(s.ID):
			return key, 0, fmt.Errorf("server %s: %s answers as %q", s.ID, m.HttpAddress, h.id)
		case h.format < batchFormat:
			return key, 0, fmt.Errorf("server %s at %s reads log format %d, not %d", s.ID, m.HttpAddress, h.format, batchFormat)
		}
		format = min(format, h.format)
	}
	return key, format, nil
}

// gateBatches runs for a term of leadership: group commit is on only while
// the membership it last checked is the current one and every server in it
// reads batch entries; it checks again each second while it is off and
// whenever the membership changes.
//
// The same check gates gateway checks (checksSafe), so it runs with group
// commit off too.
func (n membership) gateBatches(ctx context.Context) {
	var last string
	for {
		// Checked again while off, and while some server reads batches but
		// not challenges (until it is upgraded).
		if safe := n.proposer.batchesSafe(); !safe || n.proposer.format.Load() < logFormat {
			key, format, why := n.clusterReadsBatches(ctx)
			switch {
			case why == nil:
				n.proposer.verified.Store(&key)
				n.proposer.format.Store(int32(format))
				n.proposer.enabled.Store(true)
				if msg := fmt.Sprintf("%s %d", key, format); msg != last {
					n.log.Info("group commit on, and gateway checks: every server reads log format 3 or later", "servers", key, "lowest_format", format, "challenges", format >= challengeFormat, "reservations_by_size", format >= sizesFormat)
					last = msg
				}
				if format >= challengeFormat {
					// The challenge key, and a configured policy that
					// ensurePolicy held back until every server reads what it
					// needs, may go in now.
					go func() {
						err := n.chall.ensureChallengeKey(ctx)
						if need := n.policyNeeds.Load(); need > 0 && format >= int(need) && n.policyDeferred.Swap(false) {
							err = n.ensurePolicy(ctx)
						}
						if err != nil && ctx.Err() == nil {
							n.log.Error("cannot apply the configured policy or the challenge key", "err", err)
						}
					}()
				}
			case !safe:
				n.proposer.enabled.Store(false)
				if msg := why.Error(); msg != last && ctx.Err() == nil {
					n.log.Info("group commit off, and gateway checks, until every server reads log format 3 or later", "why", msg)
					last = msg
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// checkJoiner refuses a node that does not read this log format: the log
// it would replay may hold batch entries and gateway checks.
func (n membership) checkJoiner(ctx context.Context, id, httpAddr string) error {
	h, err := n.askHealth(ctx, httpAddr)
	if err != nil {
		return fmt.Errorf("cannot check node %s's version at %s/healthz: %w; start it before joining it", id, n.peerURL(httpAddr), err)
	}
	if h.id != id {
		return fmt.Errorf("node %s: %s answers as %q", id, n.peerURL(httpAddr), h.id)
	}
	if h.format < batchFormat {
		return fmt.Errorf("node %s at %s reads log format %d, this cluster writes %d (group commit, gateway checks): upgrade it", id, httpAddr, h.format, batchFormat)
	}
	if h.format < logFormat && (n.chall.hasChallengeRules() || n.fsm.ChallengeKey() != nil) {
		return fmt.Errorf("node %s at %s reads log format %d, this cluster writes %d (CHALLENGE rules, the challenge key): upgrade it", id, httpAddr, h.format, logFormat)
	}
	return nil
}
