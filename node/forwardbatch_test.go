package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"

	peerv1 "github.com/sluicehq/sluice/proto/gen/sluice/peer/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/peer/v1/peerv1connect"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

func forwardClient(n *Node, hc *http.Client) peerv1connect.ForwardServiceClient {
	if hc == nil {
		hc = httpClientFor(n)
	}
	return peerv1connect.NewForwardServiceClient(hc, baseURL(n))
}

// TestSubmitBatchAnswersEachSubmitOnItsOwn sends the leader one batch that
// mixes good Submits with refused ones: each is answered as its own Submit
// would have been (code, message, details, headers), the refused ones do not
// fail the others, and two with one idempotency key are one job.
func TestSubmitBatchAnswersEachSubmitOnItsOwn(t *testing.T) {
	c := startClusterWith(t, 3, 0, func(cfg *Config) {
		if cfg.Policy != nil {
			// One Submit a day per tenant from 203.0.113.7: the client's IP travels
			// with its Submit.
			cfg.Policy.Rules = append(cfg.Policy.Rules, &sluicev1.Rule{Name: "one-from-doc-ip",
				Match: &sluicev1.RuleMatch{ClientIp: "203.0.113.7"}, Limit: &sluicev1.Rule_Quota{Quota: &sluicev1.QuotaLimit{Limit: 1}}})
		}
	})
	l := c.waitLeader()
	bob, alice := "Bearer "+DemoBobKey, "Bearer "+DemoAliceKey
	spec := func(model, key string) *sluicev1.SubmitRequest {
		return &sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: model, IdempotencyKey: key}}
	}
	items := []*peerv1.ForwardedSubmit{
		{Request: spec("llama-8b", "batch-a"), Authorization: bob, ClientIp: "203.0.113.7"},
		{Request: spec("no-such-model", ""), Authorization: bob},
		{Request: spec("llama-8b", ""), Authorization: "Bearer not-a-key"},
		{Request: spec("llama-8b", "")},
		{Request: spec("llama-8b", "batch-a"), Authorization: bob},
		{Request: spec("sdxl", ""), Authorization: alice},
		{Authorization: bob},
		{Request: spec("llama-8b", ""), Authorization: bob, ClientIp: "203.0.113.7"},
		{Request: spec("llama-8b", ""), Authorization: bob, ClientIp: "203.0.113.8"},
	}
	res, err := forwardClient(l, nil).SubmitBatch(context.Background(), connect.NewRequest(&peerv1.SubmitBatchRequest{Submits: items}))
	if err != nil {
		t.Fatal(err)
	}
	out := res.Msg.Outcomes
	if len(out) != len(items) {
		t.Fatalf("%d outcomes for %d Submits", len(out), len(items))
	}
	jobs := make([]*sluicev1.SubmitResponse, len(out))
	for i, o := range out {
		if b := o.GetResponse(); b != nil {
			jobs[i] = new(sluicev1.SubmitResponse)
			if err := proto.Unmarshal(b, jobs[i]); err != nil {
				t.Fatalf("outcome %d: %v", i, err)
			}
			want := []string{appliedIndexHeader, "RateLimit", "RateLimit-Policy"}
			if jobs[i].Deduplicated {
				want = want[:1] // counted by no rule
			}
			for _, h := range want {
				if !hasHeader(o, h) {
					t.Errorf("outcome %d has no %s: %v", i, h, o.Headers)
				}
			}
		}
	}
	wantCode := map[int]connect.Code{1: connect.CodeInvalidArgument, 2: connect.CodeUnauthenticated, 3: connect.CodeUnauthenticated,
		6: connect.CodeInvalidArgument, 7: connect.CodeResourceExhausted}
	for i, o := range out {
		want, refused := wantCode[i]
		switch {
		case refused && connect.Code(o.GetError().GetCode()) != want:
			t.Errorf("outcome %d: %v, want %v", i, o, want)
		case !refused && jobs[i].GetJob().GetId() == "":
			t.Errorf("outcome %d: %v, want a job", i, o)
		}
	}
	if jobs[0].Job.Id != jobs[4].Job.Id || jobs[0].Deduplicated || !jobs[4].Deduplicated {
		t.Errorf("one idempotency key in one batch: jobs %s and %s (deduplicated %v, %v), want one job",
			jobs[0].Job.Id, jobs[4].Job.Id, jobs[0].Deduplicated, jobs[4].Deduplicated)
	}
	if jobs[5].Job.Id == jobs[0].Job.Id || jobs[5].Job.Tenant != "alice" {
		t.Errorf("alice's Submit gave %v", jobs[5].Job)
	}
	// The refusal keeps its details: the field that is wrong.
	e := relayedError(t, out[1])
	if !strings.Contains(e.Message(), "spec.model") || len(e.Details()) != 1 {
		t.Fatalf("unknown model: %v (details %v)", e, e.Details())
	}
	v, err := e.Details()[0].Value()
	if br, ok := v.(*errdetails.BadRequest); err != nil || !ok || br.FieldViolations[0].Field != "spec.model" {
		t.Fatalf("unknown model: detail %v %v, want a BadRequest on spec.model", v, err)
	}
	// A rule keyed on the client's IP refused the second Submit from it, with
	// the headers a refusal carries.
	e = relayedError(t, out[7])
	if !strings.Contains(e.Message(), "one-from-doc-ip") || e.Meta().Get("Retry-After") == "" || e.Meta().Get("RateLimit") == "" {
		t.Fatalf("second Submit from 203.0.113.7: %v (headers %v)", e, e.Meta())
	}
}

func hasHeader(o *peerv1.SubmitOutcome, name string) bool {
	for _, h := range o.Headers {
		if h.Name == name && h.Value != "" {
			return true
		}
	}
	return false
}

func relayedError(t *testing.T, o *peerv1.SubmitOutcome) *connect.Error {
	t.Helper()
	_, err := relayOutcome(o)
	ce, ok := err.(*connect.Error)
	if !ok {
		t.Fatalf("outcome %v relays as %v, want an error", o, err)
	}
	return ce
}

// TestSubmitBatchIsForPeersOnly: only a caller that forwarded client
// addresses are believed from may call SubmitBatch (a member's host, and
// with a peer CA a peer's certificate), so a client cannot use it to make
// the leader believe a client IP of its choosing.
func TestSubmitBatchIsForPeersOnly(t *testing.T) {
	req := &peerv1.SubmitBatchRequest{Submits: []*peerv1.ForwardedSubmit{{
		Request:       &sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "sdxl"}},
		Authorization: "Bearer " + DemoAliceKey, ClientIp: "198.51.100.1",
	}}}
	call := func(n *Node, hc *http.Client) error {
		res, err := forwardClient(n, hc).SubmitBatch(context.Background(), connect.NewRequest(req))
		if err == nil && res.Msg.Outcomes[0].GetResponse() == nil {
			return fmt.Errorf("the Submit was refused: %v", res.Msg.Outcomes[0])
		}
		return err
	}
	t.Run("plaintext", func(t *testing.T) {
		n := startNode(t, 0)
		dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
		outsider := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
		if err := call(n, outsider); connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Fatalf("SubmitBatch from 127.0.0.2, not a member's host: %v, want permission_denied", err)
		}
		if err := call(n, nil); err != nil {
			t.Fatalf("SubmitBatch from the member's host: %v", err)
		}
	})
	t.Run("mutual TLS", func(t *testing.T) {
		ca := sharedCA()
		n := startClusterWith(t, 1, 0, func(cfg *Config) { cfg.TLS = mtlsFiles(t, ca, cfg.ID) }).nodes[0]
		dir := t.TempDir()
		for _, cert := range []*tls.Certificate{nil, execCert(t, ca, dir, "x-1")} {
			if err := call(n, tlsClient(ca, cert, false)); connect.CodeOf(err) != connect.CodePermissionDenied {
				t.Fatalf("SubmitBatch from the member's host without a peer certificate: %v, want permission_denied", err)
			}
		}
		peerCert, peerKey := writeCert(t, ca, dir, "n9", NodeCert)
		if err := call(n, tlsClient(ca, loadPair(t, peerCert, peerKey), false)); err != nil {
			t.Fatalf("SubmitBatch with a peer certificate: %v", err)
		}
	})
}

// TestBatchedForwardingKeepsEachSubmitsAnswer sends concurrent Submits
// through a follower that has one batch in flight at a time, so that they
// travel to the leader together: each gets its own answer (those the
// follower refuses, those the leader refuses by a rule with the rule's
// headers and details, and the good ones their jobs), the follower reads
// each job right after its Submit returns, a retry with the same
// idempotency key through either node is the same job, a JSON client gets
// the whole job, and a Submit with a webhook goes alone.
func TestBatchedForwardingKeepsEachSubmitsAnswer(t *testing.T) {
	const aliceQuota = 5
	c := startClusterWith(t, 3, 0, func(cfg *Config) {
		cfg.ForwardInflight = 1
		if p := cfg.Policy; p != nil {
			for _, tn := range p.Tenants {
				tn.WebhookSecrets = []string{testWebhookSecret}
			}
			p.Webhooks = &sluicev1.WebhookSettings{AllowHttp: true, AllowPrivate: true}
			p.Rules = append(p.Rules, &sluicev1.Rule{Name: "alice-daily", Match: &sluicev1.RuleMatch{Tenant: "alice"},
				Limit: &sluicev1.Rule_Quota{Quota: &sluicev1.QuotaLimit{Limit: aliceQuota}}})
		}
	})
	l := c.waitLeader()
	f := c.followers()[0]
	waitFor(t, f.cfg.ID+" to judge API keys", f.duty.canJudgeKeys)
	const count = 48
	// Submit i: bob's good one, an unknown model, an unknown key, or alice's
	// (a rule admits aliceQuota of those).
	apiKey := func(i int) string {
		switch i % 4 {
		case 2:
			return "not-a-key"
		case 3:
			return DemoAliceKey
		}
		return DemoBobKey
	}
	spec := func(i int) *sluicev1.JobSpec {
		model := "llama-8b"
		if i%4 == 1 {
			model = "no-such-model"
		}
		return &sluicev1.JobSpec{Model: model, IdempotencyKey: fmt.Sprintf("batched-%d", i)}
	}
	type answer struct {
		id  string
		err error
	}
	answers := make([]answer, count)
	var wg sync.WaitGroup
	for i := range count {
		wg.Go(func() {
			jc := jobClient(f, apiKey(i))
			res, err := jc.Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: spec(i)}))
			if err != nil {
				answers[i].err = err
				return
			}
			answers[i].id = res.Msg.Job.Id
			if _, err := jc.GetJob(context.Background(), connect.NewRequest(&sluicev1.GetJobRequest{Id: res.Msg.Job.Id})); err != nil {
				t.Errorf("GetJob %s on %s right after submitting it there: %v", res.Msg.Job.Id, f.cfg.ID, err)
			}
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	aliceAdmitted := 0
	for i, a := range answers {
		code := connect.CodeOf(a.err)
		switch {
		case i%4 == 1 && code == connect.CodeInvalidArgument, i%4 == 2 && code == connect.CodeUnauthenticated:
		case i%4 == 3 && code == connect.CodeResourceExhausted:
			var ce *connect.Error
			errors.As(a.err, &ce)
			if !strings.Contains(ce.Message(), "alice-daily") || ce.Meta().Get("Retry-After") == "" || ce.Meta().Get("RateLimit") == "" || len(ce.Details()) == 0 {
				t.Errorf("alice's Submit %d refused by her quota: %v (headers %v, %d details)", i, a.err, ce.Meta(), len(ce.Details()))
			}
		case a.err == nil && a.id != "" && !seen[a.id] && (i%4 == 0 || i%4 == 3):
			seen[a.id] = true
			if i%4 == 3 {
				aliceAdmitted++
			}
		default:
			t.Errorf("Submit %d through %s: job %q, %v", i, f.cfg.ID, a.id, a.err)
		}
	}
	if aliceAdmitted != aliceQuota {
		t.Errorf("%d of alice's Submits admitted, her quota is %d", aliceAdmitted, aliceQuota)
	}
	calls := apiCalls(t, l, peerv1connect.ForwardServiceSubmitBatchProcedure)
	if calls == 0 || calls > count {
		t.Fatalf("%d SubmitBatch calls for %d Submits", calls, count)
	}
	t.Logf("%d Submits through %s reached the leader in %d SubmitBatch calls", count, f.cfg.ID, calls)

	for _, n := range []*Node{f, l} {
		for i, a := range answers {
			if a.id == "" {
				continue
			}
			res, err := jobClient(n, apiKey(i)).Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: spec(i)}))
			if err != nil || res.Msg.Job.Id != a.id || !res.Msg.Deduplicated {
				t.Fatalf("retry of Submit %d through %s: %v %v, want job %s again", i, n.cfg.ID, res, err, a.id)
			}
		}
	}

	js := jobClient(f, DemoBobKey, connect.WithProtoJSON())
	res, err := js.Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "llama-8b"}}))
	if err != nil || res.Msg.Job.GetId() == "" || res.Msg.Job.GetSpec().GetModel() != "llama-8b" {
		t.Fatalf("JSON Submit through %s: %v %v", f.cfg.ID, res, err)
	}

	batches := apiCalls(t, l, peerv1connect.ForwardServiceSubmitBatchProcedure)
	alone := apiCalls(t, l, sluicev1connect.JobServiceSubmitProcedure)
	res, err = jobClient(f, DemoBobKey).Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{
		Model: "llama-8b", Webhook: &sluicev1.Webhook{Url: "http://127.0.0.1:9/hook"}}}))
	if err != nil || res.Msg.Job.GetSpec().GetWebhook() == nil {
		t.Fatalf("Submit with a webhook through %s: %v %v", f.cfg.ID, res, err)
	}
	if apiCalls(t, l, peerv1connect.ForwardServiceSubmitBatchProcedure) != batches ||
		apiCalls(t, l, sluicev1connect.JobServiceSubmitProcedure) != alone+1 {
		t.Fatalf("a Submit with a webhook went to the leader in a batch, not alone: SubmitBatch calls %d → %d, Submit calls %d → %d",
			batches, apiCalls(t, l, peerv1connect.ForwardServiceSubmitBatchProcedure), alone, apiCalls(t, l, sluicev1connect.JobServiceSubmitProcedure))
	}
}

// apiCalls is the API calls to procedure that n counted
// (sluice_api_requests_total, every code).
func apiCalls(t *testing.T, n *Node, procedure string) int {
	t.Helper()
	res, err := http.Get(baseURL(n) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "sluice_api_requests_total{") || !strings.Contains(line, `procedure="`+procedure+`"`) {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
			total += int(v)
		}
	}
	return total
}

// TestForwardedSubmitsCutOffFromTheirLeaderAreUnavailable cuts the leader
// off from the other two while 16 clients submit through a follower. The
// leader holds on to its leadership (a long lease, as a paused leader
// would), so the Submits in flight to it get no answer: the follower ends
// them when it sees the leadership change, unavailable (never canceled),
// naming the new leader in Sluice-Leader; the Submits still waiting there
// go to the new leader. Every idempotency key, retried, is one job.
func TestForwardedSubmitsCutOffFromTheirLeaderAreUnavailable(t *testing.T) {
	c := startClusterWith(t, 3, 0, func(cfg *Config) {
		if cfg.ID == "n1" {
			cfg.Raft.HeartbeatTimeout, cfg.Raft.ElectionTimeout, cfg.Raft.LeaderLeaseTimeout = 3*time.Second, 3*time.Second, 3*time.Second
		}
	})
	old := c.waitLeader()
	f := c.followers()[0]
	type answer struct {
		key, leader string
		err         error
		after       bool // answered after the partition
	}
	var (
		mu      sync.Mutex
		answers []answer
		cut     time.Time
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			jc := jobClient(f, DemoBobKey)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("cut-%d-%d", w, i)
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				_, err := jc.Submit(ctx, connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "llama-8b", IdempotencyKey: key}}))
				cancel()
				a := answer{key: key, err: err}
				var ce *connect.Error
				if errors.As(err, &ce) {
					a.leader = ce.Meta().Get(leaderHeader)
				}
				mu.Lock()
				a.after = !cut.IsZero()
				answers = append(answers, a)
				mu.Unlock()
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	cut = time.Now()
	mu.Unlock()
	c.nw.partition(old.RaftAddr())
	next := c.waitLeader(old)
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	c.nw.heal()

	unavailable, okAfter := 0, 0
	for _, a := range answers {
		switch code := connect.CodeOf(a.err); {
		case a.err == nil:
			if a.after {
				okAfter++
			}
		case code == connect.CodeUnavailable:
			unavailable++
			if a.leader != baseURL(next) {
				t.Errorf("Submit %s: %v, naming the leader %q; want %s, the new leader", a.key, a.err, a.leader, baseURL(next))
			}
		case code == connect.CodeUnknown:
		default:
			t.Errorf("Submit %s through %s while its leader was cut off: %v, want unavailable", a.key, f.cfg.ID, a.err)
		}
	}
	t.Logf("%d Submits: %d unavailable, %d ok after the cut (new leader %s)", len(answers), unavailable, okAfter, next.cfg.ID)
	if unavailable == 0 || okAfter == 0 {
		t.Fatalf("%d unavailable, %d answered ok after the cut: want some of each", unavailable, okAfter)
	}
	// Every key, retried until it is answered, names one job, and bob has
	// exactly those jobs.
	ids := map[string]bool{}
	for _, a := range answers {
		ids[submitKey(t, next, a.key)] = true
	}
	if len(ids) != len(answers) {
		t.Fatalf("%d idempotency keys gave %d jobs", len(answers), len(ids))
	}
	c.waitLeader()
	if got := c.waitLeader().fsm.JobCount("bob"); got != len(ids) {
		t.Fatalf("bob has %d jobs for %d idempotency keys", got, len(ids))
	}
}

// submitKey submits through n with the idempotency key, retrying while the
// answer is unavailable, and returns the job's id.
func submitKey(t *testing.T, n *Node, key string) string {
	t.Helper()
	for try := 0; ; try++ {
		res, err := jobClient(n, DemoBobKey).Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{
			Model: "llama-8b", IdempotencyKey: key}}))
		if err == nil {
			return res.Msg.Job.Id
		}
		if connect.CodeOf(err) != connect.CodeUnavailable || try > 100 {
			t.Fatalf("Submit %s through %s: %v", key, n.cfg.ID, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestALeaderWithoutSubmitBatchIsSentSubmitsOneByOne: a follower that finds
// no SubmitBatch at the leader (a build from before it answers 404) knows
// that nothing was applied, and sends that leader each Submit alone.
func TestALeaderWithoutSubmitBatchIsSentSubmitsOneByOne(t *testing.T) {
	c := startCluster(t, 3, 0)
	l := c.waitLeader()
	f := c.followers()[0]
	old := httptest.NewServer(http.NotFoundHandler())
	defer old.Close()
	msg := &sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "sdxl"}}
	_, retry, err := f.forwarder.submit(context.Background(), context.Background(), old.URL, "Bearer "+DemoAliceKey, "127.0.0.1", msg)
	if !retry || !errors.Is(err, errNoBatches) || f.forwarder.batches(old.URL) || !f.forwarder.batches(baseURL(l)) {
		t.Fatalf("a Submit to a leader without SubmitBatch: retry %v, %v; batches to it %v", retry, err, f.forwarder.batches(old.URL))
	}

	f.forwarder.unbatched.Store(&unbatchedLeader{base: baseURL(l), until: time.Now().Add(time.Minute)})
	batches := apiCalls(t, l, peerv1connect.ForwardServiceSubmitBatchProcedure)
	ids := submitAll(t, f, "one-by-one", 5)
	if got := apiCalls(t, l, peerv1connect.ForwardServiceSubmitBatchProcedure); got != batches {
		t.Fatalf("%d SubmitBatch calls after the leader was marked as taking none (%d before)", got, batches)
	}
	if again := submitKey(t, f, "one-by-one-0"); again != ids[0] {
		t.Fatalf("retry with the same key gave job %s, want %s", again, ids[0])
	}
}
