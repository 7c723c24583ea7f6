package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	peerv1 "github.com/sluicehq/sluice/proto/gen/sluice/peer/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// Batched forwarding. A follower sends the Submits its clients make to the
// leader in batches (ForwardService.SubmitBatch, api_forward.go), by the
// rule the leader's proposer puts writes into log entries (propose.go): at
// most ForwardInflight batches are in flight; while any is, a batch that is
// not full (ForwardBatch Submits, one log entry's worth, or
// forwardBatchBytes) waits for more Submits or for them all to be answered,
// and a full one goes beside them. One client alone never waits: its Submit
// goes at once, in a batch of its own; under load a batch becomes one log
// entry at the leader. Sent one HTTP call each, forwarded Submits cost the
// two nodes several times the CPU of Submits sent to the leader
// (bench/README.md, "Forwarding in batches"). A Submit with a webhook goes
// alone, as before: the leader may look up the webhook's host, which would
// hold up a whole batch.
//
// Each Submit keeps the guarantees of a forwarded call (forward.go): the
// leader runs it as if its client had sent it there and answers it on its
// own; it is retried only when it cannot have been applied (the leader
// refused the batch or the Submit as a non-leader, could not be dialled, or
// the Submit was still waiting here when the leadership changed); a batch
// that failed midway, or was in flight when this node saw the leadership
// change, is unavailable for each of its Submits.

const (
	// A full batch is one log entry's worth at the leader's default
	// (--propose-batch).
	defaultForwardBatch    = defaultProposeBatch
	defaultForwardInflight = 4
	// forwardBatchBytes bounds a batch's encoded Submits; a larger Submit
	// goes alone.
	forwardBatchBytes = MaxRequestBytes
	// forwardQueue bounds the Submits waiting for a batch: one more waits
	// until there is room or its caller gives up.
	forwardQueue = 4096
	// unbatchedFor is how long a leader without SubmitBatch (a build from
	// before it) is sent one Submit per call before it is asked again.
	unbatchedFor = time.Minute
)

// Where a forwarded Submit is: waiting here, in a batch sent to the
// leader, or given up by its caller before it was sent.
const (
	itemWaiting int32 = iota
	itemSent
	itemAbandoned
)

type forwardItem struct {
	sub      peerv1.ForwardedSubmit
	base     string    // the leader it is for
	deadline time.Time // the client's; zero: none
	size     int
	state    atomic.Int32
	done     chan forwardReply // buffered: the sender never blocks on a caller
}

// forwardReply is the leader's answer to one Submit, or the batch call's
// error.
type forwardReply struct {
	outcome *peerv1.SubmitOutcome
	err     error
}

type submitForwarder struct {
	n        *Node
	in       chan *forwardItem
	slots    chan struct{} // one per batch in flight
	freed    chan struct{} // a slot was given back (buffered, 1)
	maxItems int
	// unbatched is the last leader found to take no batches, sent one Submit
	// per call until a time.
	unbatched atomic.Pointer[unbatchedLeader]
}

type unbatchedLeader struct {
	base  string
	until time.Time
}

func newSubmitForwarder(n *Node, batch, inflight int) *submitForwarder {
	return &submitForwarder{
		n:        n,
		in:       make(chan *forwardItem, forwardQueue),
		slots:    make(chan struct{}, max(orDefault(inflight, defaultForwardInflight), 1)),
		freed:    make(chan struct{}, 1),
		maxItems: max(orDefault(batch, defaultForwardBatch), 1),
	}
}

// errLeaderChanged is the reason a Submit that never left this node is
// tried again; errLeaderChangedInFlight why one that had left is given up.
var (
	errLeaderChanged         = errors.New("the leadership changed before the call was sent")
	errLeaderChangedInFlight = errors.New("this node saw the leadership change while the call was in flight")
	// errNoBatches: the leader has no SubmitBatch; send the Submit alone.
	errNoBatches = errors.New("the leader does not take batched Submits")
)

// forwardSubmit sends a Submit to the leader in the next batch (alone when
// it has a webhook, or to a leader that takes no batches). serveHere is
// true when this node leads.
func (n leaderRoute) forwardSubmit(ctx context.Context, h http.Header, clientIP string, msg *sluicev1.SubmitRequest) (res *connect.Response[sluicev1.SubmitResponse], serveHere bool, err error) {
	f := n.forwarder
	serveHere, err = n.toLeader(ctx, func(epoch context.Context, base string) (retry bool, err error) {
		batches := f.batches(base) && msg.GetSpec().GetWebhook() == nil
		if batches {
			res, retry, err = f.submit(ctx, epoch, base, h.Get("Authorization"), clientIP, msg)
			batches = !errors.Is(err, errNoBatches)
		}
		if !batches {
			res, retry, err = forwardOnce(ctx, epoch, n.Node, base, msg, h, clientIP, submitCall)
		}
		n.countForwarded(retry, err)
		return retry, err
	})
	return res, serveHere, err
}

func submitCall(ctx context.Context, c leaderClients, r *connect.Request[sluicev1.SubmitRequest]) (*connect.Response[sluicev1.SubmitResponse], error) {
	return c.jobs.Submit(ctx, r)
}

// batches reports whether the leader at base is sent batches.
func (f *submitForwarder) batches(base string) bool {
	u := f.unbatched.Load()
	return u == nil || u.base != base || time.Now().After(u.until)
}

// submit queues one Submit for the leader at base and waits for its answer:
// the leader's, relayed, or retry when it cannot have been applied. ctx is
// the client's; epoch ends when this node sees the leadership change.
func (f *submitForwarder) submit(ctx, epoch context.Context, base, authorization, clientIP string, msg *sluicev1.SubmitRequest) (*connect.Response[sluicev1.SubmitResponse], bool, error) {
	it := &forwardItem{base: base, done: make(chan forwardReply, 1)}
	it.sub.Request, it.sub.Authorization, it.sub.ClientIp = msg, authorization, clientIP
	it.size = proto.Size(&it.sub)
	it.deadline, _ = ctx.Deadline()
	select {
	case f.in <- it:
	default:
		select {
		case f.in <- it:
		case <-ctx.Done():
			return notSent(ctx)
		case <-epoch.Done():
			return notSent(ctx)
		case <-f.n.ctx.Done():
			return nil, false, connect.NewError(connect.CodeUnavailable, errStopping)
		}
	}
	select {
	case r := <-it.done:
		return f.answer(ctx, base, r)
	case <-ctx.Done():
	case <-epoch.Done():
	case <-f.n.ctx.Done():
	}
	if it.state.CompareAndSwap(itemWaiting, itemAbandoned) {
		if f.n.ctx.Err() != nil {
			return nil, false, connect.NewError(connect.CodeUnavailable, errStopping)
		}
		return notSent(ctx)
	}
	// In a batch in flight: the leader may or may not apply it.
	var cause error
	switch {
	case ctx.Err() != nil:
		cause = ctx.Err()
	case epoch.Err() != nil:
		cause = errLeaderChangedInFlight
	default:
		cause = errStopping
	}
	return nil, false, relayError(ctx, base, cause)
}

// notSent answers a Submit that never left this node: the client's own
// cancel or deadline, or else try again (the leadership changed).
func notSent(ctx context.Context) (*connect.Response[sluicev1.SubmitResponse], bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, relayError(ctx, "", err)
	}
	return nil, true, errLeaderChanged
}

// answer turns the leader's answer to one Submit of a batch into the
// Submit's result, as forwardOnce does for a call of its own.
func (f *submitForwarder) answer(ctx context.Context, base string, r forwardReply) (*connect.Response[sluicev1.SubmitResponse], bool, error) {
	switch {
	case r.err == nil:
	case connect.CodeOf(r.err) == connect.CodeUnimplemented:
		// Nothing at the leader took the call: a build from before batches.
		f.unbatched.Store(&unbatchedLeader{base: base, until: time.Now().Add(unbatchedFor)})
		f.n.log.Info("the leader takes no batched Submits: forwarding one per call", "leader", base, "for", unbatchedFor)
		return nil, true, errNoBatches
	case retryableForward(r.err):
		return nil, true, r.err
	default:
		return nil, false, relayError(ctx, base, r.err)
	}
	res, err := relayOutcome(r.outcome)
	var ce *connect.Error
	if errors.As(err, &ce) && ce.Meta().Get(notLeaderHeader) != "" {
		return nil, true, err
	}
	return res, false, err
}

// run forms the batches; it returns when the node stops (the callers of the
// Submits still waiting give up on the node's context).
func (f *submitForwarder) run() {
	var waiting []*forwardItem // taken from f.in, not yet sent
	for {
		if len(waiting) == 0 {
			select {
			case it := <-f.in:
				waiting = append(waiting, it)
			case <-f.n.ctx.Done():
				return
			}
		}
		gather(f.n.ctx, f.in, f.slots, f.freed, len(waiting) >= f.maxItems, func(it *forwardItem) bool {
			waiting = append(waiting, it)
			return len(waiting) >= f.maxItems
		})
		// Then wait for room: what arrives meanwhile waits for the next batch.
		select {
		case f.slots <- struct{}{}:
		case <-f.n.ctx.Done():
			return
		}
		var batch []*forwardItem
		batch, waiting = f.take(waiting)
		if len(batch) == 0 {
			f.release()
			continue
		}
		f.n.wg.Add(1)
		go func() {
			defer f.n.wg.Done()
			defer f.release()
			f.send(batch)
		}()
	}
}

// release gives back a batch's slot.
func (f *submitForwarder) release() {
	<-f.slots
	select {
	case f.freed <- struct{}{}:
	default:
	}
}

// take makes the next batch of waiting: the Submits for the first one's
// leader, in order, up to maxItems and forwardBatchBytes (a larger Submit
// goes alone), leaving out those whose callers gave up. It returns the
// batch and the Submits left waiting.
func (f *submitForwarder) take(waiting []*forwardItem) (batch, rest []*forwardItem) {
	base, size := "", 0
	for _, it := range waiting {
		switch {
		case base != "" && it.base != base, len(batch) == f.maxItems, len(batch) > 0 && size+it.size > forwardBatchBytes:
			rest = append(rest, it)
		case it.state.CompareAndSwap(itemWaiting, itemSent):
			base = it.base
			batch = append(batch, it)
			size += it.size
		}
	}
	return batch, rest
}

// send makes one SubmitBatch call and hands each Submit its answer. The
// call ends when this node sees the leadership change.
func (f *submitForwarder) send(batch []*forwardItem) {
	n := f.n
	base := batch[0].base
	ctx, cancel := context.WithCancel(n.ctx)
	defer cancel()
	defer context.AfterFunc(n.duty.leaderEpoch(), cancel)()
	req := &peerv1.SubmitBatchRequest{Submits: make([]*peerv1.ForwardedSubmit, len(batch))}
	now := time.Now()
	for i, it := range batch {
		if !it.deadline.IsZero() {
			it.sub.TimeoutMs = max(it.deadline.Sub(now).Milliseconds(), 1)
		}
		req.Submits[i] = &it.sub
	}
	res, err := n.route.clientsFor(base).forward.SubmitBatch(ctx, connect.NewRequest(req))
	if err == nil && len(res.Msg.GetOutcomes()) != len(batch) {
		err = fmt.Errorf("the leader answered %d of %d Submits", len(res.Msg.GetOutcomes()), len(batch))
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		// Every item's caller reads this one error: Meta makes its map on the
		// first call, here, before the sends below publish it.
		ce.Meta()
	}
	for i, it := range batch {
		r := forwardReply{err: err}
		if err == nil {
			r.outcome = res.Msg.Outcomes[i]
		}
		it.done <- r
	}
}

// forwardedHeaders are the headers of a Submit's answer that travel in a
// batch's outcome: those a forwarding node relays, and the mark of a
// refusal that never reached the log.
var forwardedHeaders = slices.Concat(relayedHeaders, []string{notLeaderHeader})

// outcomes writes a batch's answers; the responses' encodings share one
// buffer.
type outcomes struct{ buf []byte }

// of is a Submit's answer, the response msg with the headers h or err, as
// the leader sends it in a batch.
func (w *outcomes) of(msg *sluicev1.SubmitResponse, h http.Header, err error) *peerv1.SubmitOutcome {
	out := &peerv1.SubmitOutcome{}
	if err == nil {
		start := len(w.buf)
		b, merr := proto.MarshalOptions{}.MarshalAppend(w.buf, msg)
		if merr == nil {
			w.buf = b
			out.Result = &peerv1.SubmitOutcome_Response{Response: b[start:len(b):len(b)]}
		} else {
			err = connect.NewError(connect.CodeInternal, merr)
		}
	}
	if err != nil {
		ce := new(connect.Error)
		if !errors.As(err, &ce) {
			ce = connect.NewError(connect.CodeUnknown, err)
		}
		fe := &peerv1.ForwardedError{Code: uint32(ce.Code()), Message: ce.Message()}
		for _, d := range ce.Details() {
			fe.Details = append(fe.Details, detailAny(d))
		}
		out.Result = &peerv1.SubmitOutcome_Error{Error: fe}
		h = ce.Meta()
	}
	for _, k := range forwardedHeaders {
		if v := h.Get(k); v != "" {
			out.Headers = append(out.Headers, &peerv1.Header{Name: k, Value: v})
		}
	}
	return out
}

// relayOutcome is the answer to one Submit of a batch as this node relays
// it: what the leader would have answered its client, with the headers a
// forwarding node passes on (and the non-leader mark, which is never
// relayed: the Submit is tried again). The response is not decoded: its
// bytes ride along as the message's unknown fields, which the binary codec
// writes out as they are and the JSON codec decodes first
// (strictJSONCodec).
func relayOutcome(o *peerv1.SubmitOutcome) (*connect.Response[sluicev1.SubmitResponse], error) {
	var h http.Header
	var err error
	var res *connect.Response[sluicev1.SubmitResponse]
	switch r := o.GetResult().(type) {
	case *peerv1.SubmitOutcome_Response:
		msg := new(sluicev1.SubmitResponse)
		msg.ProtoReflect().SetUnknown(r.Response)
		res = connect.NewResponse(msg)
		h = res.Header()
	case *peerv1.SubmitOutcome_Error:
		code := connect.Code(r.Error.GetCode())
		if code == 0 {
			code = connect.CodeUnknown
		}
		ce := connect.NewError(code, errors.New(r.Error.GetMessage()))
		for _, d := range r.Error.GetDetails() {
			if ed, derr := connect.NewErrorDetail(d); derr == nil {
				ce.AddDetail(ed)
			}
		}
		h, err = ce.Meta(), ce
	default:
		return nil, connect.NewError(connect.CodeInternal, errors.New("the leader answered a Submit with neither a response nor an error"))
	}
	for _, kv := range o.GetHeaders() {
		if slices.Contains(forwardedHeaders, kv.GetName()) {
			h.Set(kv.GetName(), kv.GetValue())
		}
	}
	return res, err
}
