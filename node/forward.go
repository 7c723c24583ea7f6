package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/sluicehq/sluice/proto/gen/sluice/peer/v1/peerv1connect"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

// Writes reach the leader: a follower forwards them over the same Connect
// API (typed, so a gRPC client's call goes on as Connect), Submits in
// batches (forwardbatch.go). It waits up to ForwardHold for a leader to be
// known, and retries only when the call cannot have been applied: there was
// no leader, the leader's address could not be dialled, or the node it
// reached says it no longer leads. A call that failed midway is returned as
// unavailable, naming the leader this node knows (leaderHint); the client
// retries it with its idempotency key, which makes the retry return the
// same job.

// notLeaderHeader marks a refusal by a node that does not lead, so that a
// forwarding node knows the call was not applied and may go elsewhere.
const notLeaderHeader = "Sluice-Not-Leader"

// leaderHeader names the leader's API base URL on a refusal by a node that
// does not lead; executors follow it (gpuexec.LeaderHeader is the same).
const leaderHeader = "Sluice-Leader"

// forwardedForHeader carries the client's IP from the node that took the
// call to the leader, for rules keyed on client IP.
const forwardedForHeader = "Sluice-Forwarded-For"

// errNoLeader is returned when no leader is known within the hold time.
var errNoLeader = errors.New("no raft leader is known")

// leaderBase is the leader's API base URL, or an error when there is no
// leader, this node leads, or the leader's address is not recorded yet.
func (n leaderRoute) leaderBase() (string, error) {
	_, id := n.raft.LeaderWithID()
	switch {
	case id == "":
		return "", errNoLeader
	case id == raft.ServerID(n.cfg.ID):
		return "", errLeaderIsSelf
	}
	m, ok := n.fsm.Member(string(id))
	if !ok || m.HttpAddress == "" {
		return "", fmt.Errorf("leader %s: its HTTP address is not known yet", id)
	}
	return n.peerURL(m.HttpAddress), nil
}

var errLeaderIsSelf = errors.New("this node leads")

// newPeerClient is the HTTP client for node-to-node calls: cleartext HTTP/2
// when asked (streams), HTTP/1.1 otherwise; with TLS, HTTP/2 or HTTP/1.1
// over TLS, presenting this node's certificate, and trusting only the peer
// CA when there is one.
func newPeerClient(tlsc *nodeTLS) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	// Keep a connection per concurrent forwarded call: reopening them under
	// load cost more than the forwarding itself (bench/README.md, cluster).
	t.MaxIdleConnsPerHost = 1024
	p := new(http.Protocols)
	p.SetHTTP1(true)
	if tlsc == nil {
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP2(true)
		if tlsc.peerPool != nil {
			t.TLSClientConfig = tlsc.peerClientConfig()
		} else {
			// No peer CA: present no certificate. A leader that verifies client
			// certificates against an executor CA would refuse this node's own
			// (another CA signed it), and every forwarded call with it.
			t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
	}
	t.Protocols = p
	return &http.Client{Transport: t}
}

type leaderClients struct {
	jobs     sluicev1connect.JobServiceClient
	admin    sluicev1connect.AdminServiceClient
	executor sluicev1connect.ExecutorServiceClient
	forward  peerv1connect.ForwardServiceClient
	limits   sluicev1connect.LimitServiceClient
	rls      *connect.Client[rlsv3.RateLimitRequest, rlsv3.RateLimitResponse]
}

// clientsFor returns the clients for a peer's API, made once per address:
// forwarding is on the write path of every call a follower takes.
func (n leaderRoute) clientsFor(base string) leaderClients {
	n.peerMu.Lock()
	defer n.peerMu.Unlock()
	if c, ok := n.peerClients[base]; ok {
		return c
	}
	c := leaderClients{
		jobs:     sluicev1connect.NewJobServiceClient(n.peers, base),
		admin:    sluicev1connect.NewAdminServiceClient(n.peers, base),
		executor: sluicev1connect.NewExecutorServiceClient(n.peers, base),
		limits:   sluicev1connect.NewLimitServiceClient(n.peers, base),
		rls:      connect.NewClient[rlsv3.RateLimitRequest, rlsv3.RateLimitResponse](n.peers, base+rlsProcedure),
		// A batch's answer is well over the leader's gzip threshold; between
		// servers compressing it costs more CPU than it saves.
		forward: peerv1connect.NewForwardServiceClient(n.peers, base, connect.WithAcceptCompression("gzip", nil, nil)),
	}
	if n.peerClients == nil {
		n.peerClients = make(map[string]leaderClients)
	}
	n.peerClients[base] = c
	return c
}

// forward sends a call to the leader. serveHere is true when this node
// leads: the caller serves the call itself.
func forward[Req, Res any](ctx context.Context, n *Node, in *connect.Request[Req],
	call func(context.Context, leaderClients, *connect.Request[Req]) (*connect.Response[Res], error)) (res *connect.Response[Res], serveHere bool, err error) {
	serveHere, err = n.route.toLeader(ctx, func(epoch context.Context, base string) (retry bool, err error) {
		res, retry, err = forwardOnce(ctx, epoch, n, base, in.Msg, in.Header(), n.checks.clientIP(in.Peer().Addr, in.Header()), call)
		n.route.countForwarded(retry, err)
		return retry, err
	})
	return res, serveHere, err
}

// forwardOnce sends one call, msg with the client's headers h and IP, to the
// leader at base: its answer as this node relays it, or retry when the call
// cannot have been applied. ctx is the client's; the call ends with epoch.
func forwardOnce[Req, Res any](ctx, epoch context.Context, n *Node, base string, msg *Req, h http.Header, clientIP string,
	call func(context.Context, leaderClients, *connect.Request[Req]) (*connect.Response[Res], error)) (res *connect.Response[Res], retry bool, err error) {
	out := connect.NewRequest(msg)
	n.route.setForwardHeaders(ctx, out.Header(), h, clientIP)
	callCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(epoch, cancel)()
	r, err := call(callCtx, n.route.clientsFor(base), out)
	switch {
	case err == nil:
		return relayResponse(r), false, nil
	case retryableForward(err):
		return nil, true, err
	}
	return nil, false, relayError(ctx, base, err)
}

// countForwarded counts a forwarded call's answer; a refusal that will be
// retried is not an answer.
func (n leaderRoute) countForwarded(retry bool, err error) {
	switch {
	case retry:
	case err == nil:
		n.metrics.Forwarded("ok")
	default:
		n.metrics.Forwarded(connect.CodeOf(err).String())
	}
}

// setForwardHeaders sets, on a call this node forwards, the client's
// credentials from in and the client's IP.
func (n leaderRoute) setForwardHeaders(ctx context.Context, out, in http.Header, clientIP string) {
	for _, h := range []string{"Authorization", "Content-Type"} {
		if v := in.Get(h); v != "" {
			out.Set(h, v)
		}
	}
	out.Set(forwardedForHeader, clientIP)
	if name, ok := ctx.Value(certExecutorKey{}).(string); ok {
		// The leader believes this name because this node's peer
		// certificate vouches for it (withCallerCert).
		out.Set(executorCertHeader, name)
	}
}

// toLeader runs attempt against the leader's API base URL until it is
// answered: it waits up to ForwardHold for a leader to be known, and tries
// again only when attempt reports (retry) that the call cannot have been
// applied. attempt gets the leader epoch in which it chose the leader: a
// leader that stops answering (paused, partitioned) would hold the call
// until the client gives up, so the call ends when this node sees the
// leadership change. serveHere is true when this node leads: the caller
// serves the call itself.
func (n leaderRoute) toLeader(ctx context.Context, attempt func(epoch context.Context, base string) (retry bool, err error)) (serveHere bool, err error) {
	start := time.Now()
	var hold *time.Timer // made on the first retry: most calls need none
	for {
		if n.IsLeader() {
			return true, nil
		}
		epoch := n.duty.leaderEpoch()
		base, lerr := n.leaderBase()
		if errors.Is(lerr, errLeaderIsSelf) {
			return true, nil
		}
		if lerr == nil {
			retry, err := attempt(epoch, base)
			if !retry {
				return false, n.leaderHint(ctx, err, base, epoch, start.Add(n.cfg.ForwardHold))
			}
			lerr = err
		}
		if hold == nil {
			hold = time.NewTimer(n.cfg.ForwardHold - time.Since(start))
			defer hold.Stop()
		}
		select {
		case <-ctx.Done():
			return false, connect.NewError(connect.CodeUnavailable, ctx.Err())
		case <-hold.C:
			return false, connect.NewError(connect.CodeUnavailable, fmt.Errorf("cannot reach the raft leader within %v (%v); retry shortly", n.cfg.ForwardHold, lerr))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// leaderHint names the leader in Sluice-Leader on an unavailable answer to
// a call forwarded to failed that does not name one yet: the leader this
// node knows, when that is not failed. When this node saw the leadership
// change during the call (epoch ended: the leader was cut off or paused), it
// first waits, until at most until, for the new leader to be known.
func (n leaderRoute) leaderHint(ctx context.Context, err error, failed string, epoch context.Context, until time.Time) error {
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeUnavailable || ce.Meta().Get(leaderHeader) != "" {
		return err
	}
	changed := epoch.Err() != nil
	for {
		base, lerr := n.leaderBase()
		if errors.Is(lerr, errLeaderIsSelf) {
			base, lerr = n.peerURL(n.Addr()), nil
		}
		if lerr == nil && (changed || base != failed) {
			ce.Meta().Set(leaderHeader, base)
			return ce
		}
		wait := time.Until(until)
		if !changed || wait <= 0 {
			return ce
		}
		t := time.NewTimer(wait)
		select {
		case <-n.duty.leaderEpoch().Done():
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		if ctx.Err() != nil {
			return ce
		}
	}
}

// retryableForward is true for failures that prove the call was not
// applied: the leader refused as a non-leader, or it could not be dialled.
func retryableForward(err error) bool {
	var ce *connect.Error
	if errors.As(err, &ce) && ce.Meta().Get(notLeaderHeader) != "" {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// notLeaderError refuses a call that only the leader may serve, naming the
// leader's API when known.
func (n leaderRoute) notLeaderError() *connect.Error {
	e := connect.NewError(connect.CodeUnavailable, fmt.Errorf("%w; retry shortly", errNotLeader))
	e.Meta().Set(notLeaderHeader, n.cfg.ID)
	if base, err := n.leaderBase(); err == nil {
		e.Meta().Set(leaderHeader, base)
	}
	return e
}

// relayedHeaders are the leader's response headers a forwarding node passes
// on; the others (content type, length, encoding) belong to the hop.
var relayedHeaders = append([]string{"Retry-After", "RateLimit", "RateLimit-Policy", leaderHeader, appliedIndexHeader}, challengeHeaders...)

func relayResponse[Res any](res *connect.Response[Res]) *connect.Response[Res] {
	out := connect.NewResponse(res.Msg)
	for _, h := range relayedHeaders {
		if v := res.Header().Get(h); v != "" {
			out.Header().Set(h, v)
		}
	}
	return out
}

// relayError rebuilds the leader's error for this hop: same code, message
// and details, and only the headers that mean something to the client. An
// error that did not come from the leader (the connection broke, the leader
// changed while the call was in flight) is this hop's: unavailable, as the
// call may or may not have been applied; the client's own cancel or deadline
// stays what it is.
func relayError(ctx context.Context, base string, err error) error {
	var ce *connect.Error
	if !errors.As(err, &ce) || !connect.IsWireError(err) {
		switch {
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			return connect.NewError(connect.CodeDeadlineExceeded, ctx.Err())
		case ctx.Err() != nil:
			return connect.NewError(connect.CodeCanceled, ctx.Err())
		}
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("the leader at %s did not answer (%v); the call may or may not have been applied: retry it (a Submit with the same idempotency_key)", base, errCause(err)))
	}
	out := connect.NewError(ce.Code(), errors.New(ce.Message()))
	for _, d := range ce.Details() {
		out.AddDetail(d)
	}
	for _, h := range relayedHeaders {
		if v := ce.Meta().Get(h); v != "" {
			out.Meta().Set(h, v)
		}
	}
	return out
}

// errCause is err's message without connect's code prefix.
func errCause(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}
