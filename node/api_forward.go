package node

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/sluicehq/sluice/fsm"
	peerv1 "github.com/sluicehq/sluice/proto/gen/sluice/peer/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/peer/v1/peerv1connect"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// forwardService is the leader's side of batched forwarding
// (forwardbatch.go): it serves other servers only.
type forwardService struct {
	peerv1connect.UnimplementedForwardServiceHandler
	n *Node
}

const (
	// maxForwardBatch is the most Submits the leader takes in one batch
	// (--forward-batch's limit).
	maxForwardBatch = 4096
	// forwardBodyMax bounds a batch's request body: a follower fills a batch
	// up to forwardBatchBytes, and one Submit, itself at most
	// MaxRequestBytes, may go past that.
	forwardBodyMax = forwardBatchBytes + MaxRequestBytes
)

// SubmitBatch runs each Submit of the batch as if its client had sent it
// here, and answers each on its own: the checks one by one, then the
// admitted ones to the proposer together, so that they share log entries.
func (s *forwardService) SubmitBatch(ctx context.Context, req *connect.Request[peerv1.SubmitBatchRequest]) (*connect.Response[peerv1.SubmitBatchResponse], error) {
	n := s.n
	host := hostOf(req.Peer().Addr)
	if !n.route.fromPeer(ctx, host) {
		if !n.duty.canJudgeKeys() {
			// The members are in the log: a restarted node that has not applied
			// it yet cannot tell a member from a stranger (the caller retries).
			return nil, n.duty.notCaughtUpError()
		}
		return nil, connect.NewError(connect.CodePermissionDenied, fmt.Errorf(
			"SubmitBatch is for the servers of this cluster only: %s is not a member's host, or (with --peer-ca) did not present a peer certificate", host))
	}
	items := req.Msg.GetSubmits()
	if len(items) > maxForwardBatch {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("submits: %d exceed the %d-Submit limit", len(items), maxForwardBatch))
	}
	if !n.IsLeader() {
		return nil, n.route.notLeaderError()
	}
	received := time.Now()
	type checked struct {
		sub submission
		res *connect.Response[sluicev1.SubmitResponse]
		err error
	}
	checks := make([]checked, len(items))
	check := func(i int) {
		c := &checks[i]
		c.sub, c.res, c.err = n.route.checkForwarded(ctx, host, items[i], received)
	}
	if slices.ContainsFunc(items, func(it *peerv1.ForwardedSubmit) bool {
		return it.GetRequest().GetChallengeAnswer().GetCaptchaResponse() != ""
	}) {
		// A CAPTCHA answer is checked with its vendor (up to 5 s): the
		// batch's other Submits do not wait in line behind it.
		var wg sync.WaitGroup
		for i := range items {
			wg.Go(func() { check(i) })
		}
		wg.Wait()
	} else {
		for i := range items {
			check(i)
		}
	}
	out := make([]*peerv1.SubmitOutcome, len(items))
	w := &outcomes{buf: make([]byte, 0, 512*len(items))}
	var admit []int
	var cmds []proto.Message
	for i, c := range checks {
		switch {
		case c.err != nil:
			out[i] = w.of(nil, nil, c.err)
		case c.res != nil:
			out[i] = w.of(c.res.Msg, c.res.Header(), nil)
		default:
			admit = append(admit, i)
			cmds = append(cmds, c.sub.command())
		}
	}
	if len(cmds) > 0 {
		h := make(http.Header, len(forwardedHeaders))
		for j, r := range n.proposeAll(ctx, fsm.CmdSubmit, cmds) {
			i := admit[j]
			clear(h)
			msg, err := n.desk.answerSubmit(checks[i].sub, r.res, r.err, h)
			out[i] = w.of(msg, h, err)
		}
	}
	return connect.NewResponse(&peerv1.SubmitBatchResponse{Outcomes: out}), nil
}

// checkForwarded runs the checks before the log on one Submit of a batch
// from the peer at host, received then: with its client's credentials and
// IP (the peer's own when the batch names none). A Submit whose client's
// deadline passed meanwhile is not proposed.
func (n leaderRoute) checkForwarded(ctx context.Context, host string, it *peerv1.ForwardedSubmit, received time.Time) (submission, *connect.Response[sluicev1.SubmitResponse], error) {
	ip := host
	if p := net.ParseIP(it.GetClientIp()); p != nil {
		ip = p.String()
	}
	sub, res, err := n.desk.checkSubmit(ctx, it.GetAuthorization(), ip, it.GetRequest())
	if res != nil || err != nil {
		return sub, res, err
	}
	if err := n.chall.verifyChallenges(ctx, &sub); err != nil {
		return sub, nil, err
	}
	if err := n.desk.precheckSubmit(sub); err != nil {
		return sub, nil, err
	}
	if ms := it.GetTimeoutMs(); ms > 0 && time.Since(received) >= time.Duration(ms)*time.Millisecond {
		return sub, nil, writeError(context.DeadlineExceeded)
	}
	return sub, nil, nil
}

// fromPeer reports whether a call from host comes from another server of
// the cluster, by the rule that makes a forwarded client address believed
// (clientIP, withCallerCert): a member's host, and with a peer CA a peer's
// certificate as well.
func (n leaderRoute) fromPeer(ctx context.Context, host string) bool {
	if n.tls != nil && n.tls.peerPool != nil && !callerCertOf(ctx).peer {
		return false
	}
	return n.cluster.isMemberHost(host)
}

// hostOf is the host of a host:port address (the address itself when it has
// no port).
func hostOf(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}

// detailAny is an error detail as the Any it travels in.
func detailAny(d *connect.ErrorDetail) *anypb.Any {
	return &anypb.Any{TypeUrl: "type.googleapis.com/" + d.Type(), Value: d.Bytes()}
}
