package node

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/challenge"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

// humanPolicy is the demo policy with one CHALLENGE rule: two Submits an
// hour per tenant, then a challenge of difficulty 8.
func humanPolicy(settings *sluicev1.ChallengeSettings) *sluicev1.Policy {
	p := DemoPolicy()
	p.Rules = []*sluicev1.Rule{{Name: "human", Action: sluicev1.OverLimitAction_OVER_LIMIT_ACTION_CHALLENGE, Challenge: settings,
		Limit: &sluicev1.Rule_TokenBucket{TokenBucket: &sluicev1.TokenBucketLimit{Count: 1, Burst: 2, Per: durationpb.New(time.Hour)}}}}
	return p
}

func sdxl() *sluicev1.SubmitRequest {
	return &sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "sdxl"}}
}

// challenged submits req and expects a challenge, which it returns.
func challenged(t *testing.T, c sluicev1connect.JobServiceClient, req *sluicev1.SubmitRequest) *sluicev1.Challenge {
	t.Helper()
	_, err := c.Submit(context.Background(), connect.NewRequest(req))
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeResourceExhausted {
		t.Fatalf("want a challenge, got %v", err)
	}
	for _, d := range ce.Details() {
		if v, _ := d.Value(); v != nil {
			if ch, ok := v.(*sluicev1.Challenge); ok {
				if ce.Meta().Get(challengeHeader) != ch.Token || ce.Meta().Get(challengeRuleHeader) != ch.Rule {
					t.Fatalf("headers %v do not name the challenge %v", ce.Meta(), ch)
				}
				return ch
			}
		}
	}
	t.Fatalf("no challenge in %v", ce)
	return nil
}

func wantCode(t *testing.T, err error, code connect.Code, msg string) {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != code || !strings.Contains(ce.Message(), msg) {
		t.Fatalf("got %v, want %v with %q", err, code, msg)
	}
}

// overTheRule spends alice's two Submits under humanPolicy's rule and
// returns her client and the challenge her third gets.
func overTheRule(t *testing.T, n *Node) (sluicev1connect.JobServiceClient, *sluicev1.Challenge) {
	t.Helper()
	alice := jobClient(n, DemoAliceKey)
	for range 2 {
		if _, err := alice.Submit(context.Background(), connect.NewRequest(sdxl())); err != nil {
			t.Fatal(err)
		}
	}
	return alice, challenged(t, alice, sdxl())
}

// forge changes one letter of a token inside its signed body.
func forge(token string) string {
	b := []byte(token)
	if b[10] == 'A' {
		b[10] = 'B'
	} else {
		b[10] = 'A'
	}
	return string(b)
}

// solve answers a proof-of-work challenge.
func solve(t *testing.T, ch *sluicev1.Challenge) *sluicev1.ChallengeAnswer {
	t.Helper()
	nonce, ok := challenge.Solve(ch.Token, uint8(ch.Difficulty), 1<<30)
	if !ok {
		t.Fatalf("cannot solve %v", ch)
	}
	return &sluicev1.ChallengeAnswer{Challenge: ch.Token, Nonce: nonce}
}

func TestChallengeRuleAdmitsASolverAndItsPass(t *testing.T) {
	n := startNodeWith(t, 0, humanPolicy(&sluicev1.ChallengeSettings{Difficulty: 8, PassTtl: durationpb.New(2 * time.Second)}))
	alice, bob := jobClient(n, DemoAliceKey), jobClient(n, DemoBobKey)
	ctx := context.Background()
	for range 2 {
		if _, err := alice.Submit(ctx, connect.NewRequest(sdxl())); err != nil {
			t.Fatal(err)
		}
	}
	// A burst over the rule is challenged, without touching the log.
	commit := n.raft.LastIndex()
	ch := challenged(t, alice, sdxl())
	if ch.Rule != "human" || ch.Kind != sluicev1.ChallengeKind_CHALLENGE_KIND_PROOF_OF_WORK || ch.Difficulty < 8 || ch.PassTtl.AsDuration() != 2*time.Second {
		t.Fatalf("challenge %v", ch)
	}
	if n.raft.LastIndex() != commit {
		t.Fatal("a challenge touched the log")
	}
	// Wrong answers are refused, each naming what is wrong.
	bad := solve(t, ch)
	for bad.Nonce++; challenge.LeadingZeros(ch.Token, bad.Nonce) >= int(ch.Difficulty); bad.Nonce++ {
	}
	req := sdxl()
	req.ChallengeAnswer = bad
	_, err := alice.Submit(ctx, connect.NewRequest(req))
	wantCode(t, err, connect.CodeInvalidArgument, "challenge_answer.nonce: the nonce does not solve it")
	req.ChallengeAnswer = &sluicev1.ChallengeAnswer{Challenge: forge(ch.Token), Nonce: bad.Nonce}
	_, err = alice.Submit(ctx, connect.NewRequest(req))
	wantCode(t, err, connect.CodeInvalidArgument, "challenge_answer.challenge: not signed by this cluster")
	// Another tenant's answer is refused.
	req.ChallengeAnswer = solve(t, ch)
	_, err = bob.Submit(ctx, connect.NewRequest(req))
	wantCode(t, err, connect.CodePermissionDenied, "issued to someone else: tenant:alice, not to tenant:bob")
	// The right answer admits, and yields a pass.
	res, err := alice.Submit(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatalf("a solved challenge: %v", err)
	}
	pass := res.Msg.ChallengePass
	if pass.GetRule() != "human" || pass.GetToken() == "" {
		t.Fatalf("pass %v", pass)
	}
	// Only once.
	_, err = alice.Submit(ctx, connect.NewRequest(req))
	wantCode(t, err, connect.CodeFailedPrecondition, "answered before")
	// The pass exempts further requests, from the message or a header.
	for i := range 3 {
		req := sdxl()
		r := connect.NewRequest(req)
		if i == 0 {
			req.ChallengePasses = []string{pass.Token}
		} else {
			r.Header().Set(challengePassHeader, pass.Token)
		}
		if _, err := alice.Submit(ctx, r); err != nil {
			t.Fatalf("with the pass, %d: %v", i, err)
		}
	}
	// Not for bob: his request is decided as if it carried none (his own
	// bucket still has room), and it exempts him from nothing.
	req = sdxl()
	req.ChallengePasses = []string{pass.Token}
	if res, err := bob.Submit(ctx, connect.NewRequest(req)); err != nil || !strings.Contains(res.Header().Get("RateLimit"), `"human";r=1`) {
		t.Fatalf("bob with alice's pass: %v", err)
	}
	// A forged pass is refused.
	req.ChallengePasses = []string{forge(pass.Token)}
	_, err = alice.Submit(ctx, connect.NewRequest(req))
	wantCode(t, err, connect.CodeInvalidArgument, "challenge_passes[0]: not signed by this cluster")
	// Until it expires: then a challenge again.
	time.Sleep(time.Until(pass.ExpiresAt.AsTime()) + 50*time.Millisecond)
	req = sdxl()
	req.ChallengePasses = []string{pass.Token}
	challenged(t, alice, req)
	// Usage counts it all (the forged token names no rule it can be counted
	// under, and bob's failure is bob's).
	u, err := alice.GetUsage(ctx, connect.NewRequest(&sluicev1.GetUsageRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	got := u.Msg.Rules[0].GetChallenges()
	if got.GetIssued() != 2 || got.GetPassed() != 1 || got.GetFailed() != 1 || got.GetReplayed() != 1 || got.GetPassUsed() != 3 {
		t.Fatalf("alice's challenge counts %v, want 2 issued, 1 passed, 1 failed, 1 replayed, 3 by pass", got)
	}
}

func TestChallengeExpiresAndIsRefusedOverPlainHTTP(t *testing.T) {
	n := startNodeWith(t, 0, humanPolicy(&sluicev1.ChallengeSettings{Difficulty: 4, Ttl: durationpb.New(time.Second)}))
	post := func(body string) *http.Response { return postSubmitJSON(t, n, body) }
	post(`{"spec":{"model":"sdxl"}}`)
	post(`{"spec":{"model":"sdxl"}}`)
	res := post(`{"spec":{"model":"sdxl"}}`)
	token := res.Header.Get(challengeHeader)
	if res.StatusCode != http.StatusTooManyRequests || !strings.HasPrefix(token, "c1.") ||
		res.Header.Get(challengeKindHeader) != "proof-of-work" || res.Header.Get(challengeDifficultyHeader) != "4" {
		t.Fatalf("%d, headers %v", res.StatusCode, res.Header)
	}
	nonce, _ := challenge.Solve(token, 4, 1<<20)
	time.Sleep(1100 * time.Millisecond)
	req := sdxl()
	req.ChallengeAnswer = &sluicev1.ChallengeAnswer{Challenge: token, Nonce: nonce}
	_, err := jobClient(n, DemoAliceKey).Submit(context.Background(), connect.NewRequest(req))
	wantCode(t, err, connect.CodeFailedPrecondition, "challenge_answer.challenge: expired")
}

// A local siteverify endpoint stands in for Turnstile, hCaptcha and
// reCAPTCHA: it accepts one response token, once.
func TestCaptchaVerifierAcceptsAndRefuses(t *testing.T) {
	var mu sync.Mutex
	var forms []map[string]string
	used := map[string]bool{}
	verifier := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		mu.Lock()
		defer mu.Unlock()
		forms = append(forms, map[string]string{"secret": r.PostForm.Get("secret"), "response": r.PostForm.Get("response"), "remoteip": r.PostForm.Get("remoteip")})
		resp := r.PostForm.Get("response")
		ok := r.PostForm.Get("secret") == "vendor-secret" && resp == "human-token" && !used[resp]
		used[resp] = true
		out := map[string]any{"success": ok}
		if !ok {
			out["error-codes"] = []string{"invalid-input-response"}
		}
		json.NewEncoder(w).Encode(out)
	}))
	defer verifier.Close()
	n := startNodeWith(t, 0, humanPolicy(&sluicev1.ChallengeSettings{Verifier: &sluicev1.Verifier{
		Url: verifier.URL + "/siteverify", Secret: "vendor-secret", SiteKey: "site-key-1"}}))
	alice, ch := overTheRule(t, n)
	ctx := context.Background()
	if ch.Kind != sluicev1.ChallengeKind_CHALLENGE_KIND_CAPTCHA || ch.SiteKey != "site-key-1" || ch.VerifierUrl != verifier.URL+"/siteverify" || ch.Difficulty != 0 {
		t.Fatalf("challenge %v", ch)
	}
	req := sdxl()
	req.ChallengeAnswer = &sluicev1.ChallengeAnswer{Challenge: ch.Token, CaptchaResponse: "bot-token"}
	_, err := alice.Submit(ctx, connect.NewRequest(req))
	wantCode(t, err, connect.CodePermissionDenied, "the verifier refused it (invalid-input-response)")
	req.ChallengeAnswer.CaptchaResponse = "human-token"
	res, err := alice.Submit(ctx, connect.NewRequest(req))
	if err != nil || res.Msg.ChallengePass == nil {
		t.Fatalf("a verified CAPTCHA: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(forms) != 2 || forms[1]["secret"] != "vendor-secret" || forms[1]["remoteip"] != "127.0.0.1" {
		t.Fatalf("the verifier saw %v", forms)
	}
}

// A shadow CHALLENGE rule challenges nobody: it counts what it would have
// challenged, in the decisions metric and the response headers.
func TestShadowChallengeRuleChallengesNobody(t *testing.T) {
	p := humanPolicy(&sluicev1.ChallengeSettings{Difficulty: 8})
	p.Rules[0].Shadow = true
	n := startNodeWith(t, 0, p)
	alice := jobClient(n, DemoAliceKey)
	var last *connect.Response[sluicev1.SubmitResponse]
	for i := range 4 {
		res, err := alice.Submit(context.Background(), connect.NewRequest(sdxl()))
		if err != nil {
			t.Fatalf("submit %d under a shadow challenge rule: %v", i+1, err)
		}
		last = res
	}
	if got := last.Header().Get("RateLimit"); !strings.Contains(got, `"human";r=0`) {
		t.Fatalf("the shadow rule was not counted: RateLimit %q", got)
	}
	if u, err := alice.GetUsage(context.Background(), connect.NewRequest(&sluicev1.GetUsageRequest{})); err != nil || u.Msg.Rules[0].GetChallenges().GetIssued() != 0 {
		t.Fatalf("usage %v, %v: want no challenge issued", u, err)
	}
}

// A request over two CHALLENGE rules at once (one per tenant, one per IP)
// gets one challenge for both; its answer admits, and its pass exempts
// from both.
func TestOneChallengeCoversEveryRuleOver(t *testing.T) {
	p := humanPolicy(&sluicev1.ChallengeSettings{Difficulty: 6})
	ip := &sluicev1.Rule{Name: "per-ip", Scope: sluicev1.RuleScope_RULE_SCOPE_CLIENT_IP, Action: sluicev1.OverLimitAction_OVER_LIMIT_ACTION_CHALLENGE,
		Challenge: &sluicev1.ChallengeSettings{Difficulty: 8, PassTtl: durationpb.New(time.Minute)},
		Limit:     &sluicev1.Rule_FixedWindow{FixedWindow: &sluicev1.WindowLimit{Limit: 2, Window: durationpb.New(time.Hour)}}}
	p.Rules = append(p.Rules, ip)
	n := startNodeWith(t, 0, p)
	alice, ch := overTheRule(t, n)
	ctx := context.Background()
	if ch.Rule != "human, per-ip" || ch.Difficulty != 8 {
		t.Fatalf("challenge for %q at difficulty %d, want both rules at the higher difficulty, 8", ch.Rule, ch.Difficulty)
	}
	req := sdxl()
	req.ChallengeAnswer = solve(t, ch)
	res, err := alice.Submit(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatalf("the answer: %v", err)
	}
	pass := res.Msg.ChallengePass
	if pass.GetRule() != "human, per-ip" || time.Until(pass.ExpiresAt.AsTime()) > time.Minute {
		t.Fatalf("pass %v: want both rules, for the shorter pass_ttl", pass)
	}
	for i := range 2 {
		req := sdxl()
		req.ChallengePasses = []string{pass.Token}
		if _, err := alice.Submit(ctx, connect.NewRequest(req)); err != nil {
			t.Fatalf("with the pass, %d: %v", i+1, err)
		}
	}
}

// A CAPTCHA verifier that cannot be reached is the server's problem, not
// the caller's: unavailable, and the answer is not used up.
func TestCaptchaVerifierDownIsUnavailable(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	n := startNodeWith(t, 0, humanPolicy(&sluicev1.ChallengeSettings{Verifier: &sluicev1.Verifier{Url: down.URL, Secret: "s"}}))
	alice, ch := overTheRule(t, n)
	req := sdxl()
	req.ChallengeAnswer = &sluicev1.ChallengeAnswer{Challenge: ch.Token, CaptchaResponse: "human-token"}
	_, err := alice.Submit(context.Background(), connect.NewRequest(req))
	wantCode(t, err, connect.CodeUnavailable, "challenge verifier "+down.URL)
}
