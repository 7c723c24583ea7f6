package node

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/challenge"
	"github.com/sluicehq/sluice/fsm"
	"github.com/sluicehq/sluice/limiter"
	"github.com/sluicehq/sluice/policy"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// CHALLENGE rules at the edge (issue 26). Over such a rule's limit a Submit
// is refused with a challenge: a token signed with the cluster's key
// (fsm.ConfigReads.ChallengeKey) naming the rule, the caller (its tenant, or its IP for
// a rule keyed per IP), a difficulty and an expiry. The leader verifies an
// answer, or a pass, before it proposes the Submit, with no state of its
// own; the log decides that an answer admits once (fsm.spendable).

// Headers of a challenge refusal and of a request's pass.
const (
	challengeHeader           = "Sluice-Challenge"            // the token
	challengeRuleHeader       = "Sluice-Challenge-Rule"       // the rule that asks
	challengeKindHeader       = "Sluice-Challenge-Kind"       // proof-of-work or captcha
	challengeDifficultyHeader = "Sluice-Challenge-Difficulty" // leading zero bits
	challengePassHeader       = "Sluice-Challenge-Pass"       // a pass, on a request
)

// challengeHeaders are relayed from the leader with its answer.
var challengeHeaders = []string{challengeHeader, challengeRuleHeader, challengeKindHeader, challengeDifficultyHeader}

// maxPasses bounds the passes one Submit may carry.
const maxPasses = 8

// ruleSep joins the names of the rules one challenge or pass covers.
const ruleSep = policy.ChallengeRuleSep

// covered is a CHALLENGE rule a token names, with its settings.
type covered struct {
	rule *sluicev1.Rule
	c    policy.ChallengeRule
}

// coveredRules are the rules names (joined by ruleSep) that still
// challenge; rules removed or changed since are left out.
func (n challenger) coveredRules(names string) []covered {
	var out []covered
	for name := range strings.SplitSeq(names, ruleSep) {
		if r, c, ok := n.challengeRule(name); ok {
			out = append(out, covered{r, c})
		}
	}
	return out
}

// challengeSubject is who a challenge or pass covering rules is bound to:
// for each rule, the client's IP if the rule is keyed per IP, else the
// tenant; the distinct ones joined by "+".
func challengeSubject(rules []covered, tenant, ip string) string {
	var subjects []string
	for _, r := range rules {
		s := "tenant:" + tenant
		if r.rule.GetScope() == sluicev1.RuleScope_RULE_SCOPE_CLIENT_IP {
			s = "ip:" + ip
		}
		if !slices.Contains(subjects, s) {
			subjects = append(subjects, s)
		}
	}
	return strings.Join(subjects, "+")
}

// ruleNames are the names of rules.
func ruleNames(rules []covered) []string {
	out := make([]string, len(rules))
	for i, r := range rules {
		out[i] = r.rule.Name
	}
	return out
}

// challengesBeforeRise is how many challenges a caller may get in a minute
// under one rule before their difficulty rises (a bit per doubling past it).
const challengesBeforeRise = 4

// Challenge outcomes, as metrics and usage count them.
const (
	challengeIssued   = "issued"
	challengePassed   = "passed"
	challengeFailed   = "failed"
	challengeReplayed = "replayed"
	challengePassUsed = "pass_used"
)

// challengeBook is the leader's soft state of challenges: each caller's
// counts per rule (for usage; reset when the node becomes leader, as the
// rejections are), and how many of a caller's requests were challenged in
// the current minute (a challenge's difficulty rises with it).
type challengeBook struct {
	mu     sync.Mutex
	counts map[ruleCaller]*sluicev1.ChallengeCounts
	over   map[ruleCaller]int64
	minute int64
}

type ruleCaller struct{ rule, caller string }

// maxChallengeCallers bounds each of the book's maps; past it, new callers
// are not counted (and their challenges start at the rule's difficulty).
const maxChallengeCallers = 100_000

func (b *challengeBook) note(rule, tenant, outcome string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := ruleCaller{rule, tenant}
	c, ok := b.counts[k]
	if !ok {
		if b.counts == nil {
			b.counts = map[ruleCaller]*sluicev1.ChallengeCounts{}
		}
		if len(b.counts) >= maxChallengeCallers {
			return
		}
		c = &sluicev1.ChallengeCounts{}
		b.counts[k] = c
	}
	switch outcome {
	case challengeIssued:
		c.Issued++
	case challengePassed:
		c.Passed++
	case challengeFailed:
		c.Failed++
	case challengeReplayed:
		c.Replayed++
	case challengePassUsed:
		c.PassUsed++
	}
}

// challenged counts a challenge to subject under rule at now and returns
// how many it has had this minute.
func (b *challengeBook) challenged(rule, subject string, now time.Time) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if m := now.Unix() / 60; m != b.minute || b.over == nil {
		b.minute, b.over = m, map[ruleCaller]int64{}
	}
	k := ruleCaller{rule, subject}
	if _, ok := b.over[k]; !ok && len(b.over) >= maxChallengeCallers {
		return 1
	}
	b.over[k]++
	return b.over[k]
}

func (b *challengeBook) of(rule, tenant string) *sluicev1.ChallengeCounts {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.counts[ruleCaller{rule, tenant}]
	if !ok {
		return &sluicev1.ChallengeCounts{}
	}
	return &sluicev1.ChallengeCounts{Issued: c.Issued, Passed: c.Passed, Failed: c.Failed, Replayed: c.Replayed, PassUsed: c.PassUsed}
}

func (b *challengeBook) reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.counts, b.over = nil, nil
}

func (n challenger) noteChallenge(rule, tenant, outcome string) {
	n.challenges.note(rule, tenant, outcome)
	n.metrics.Challenge(rule, outcome)
}

// challengeRule is a CHALLENGE rule by name, with its settings.
func (n challenger) challengeRule(name string) (*sluicev1.Rule, policy.ChallengeRule, bool) {
	r, ok := n.fsm.Rule(name)
	if !ok {
		return nil, policy.ChallengeRule{}, false
	}
	c, ok := policy.ChallengeOf(r)
	return r, c, ok
}

// verifyChallenges checks a Submit's passes and challenge answer on the
// node that proposes it, once (a CAPTCHA vendor's token can be checked only
// once), and records what they earn in sub: the rules it is exempt from and
// the challenge to spend. A pass that has expired, names rules that no
// longer challenge, or was issued to another caller (a client whose IP
// changed) is ignored; one this cluster did not sign refuses the Submit, as
// does any answer that is not right.
func (n challenger) verifyChallenges(ctx context.Context, sub *submission) error {
	if sub.answer == nil && len(sub.passes) == 0 {
		return nil
	}
	if len(sub.passes) > maxPasses {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("challenge_passes: %d exceed the limit of %d", len(sub.passes), maxPasses))
	}
	key := n.fsm.ChallengeKey()
	if key == nil {
		return connect.NewError(connect.CodeFailedPrecondition, errors.New("challenge: this cluster has issued no challenges (no policy has been set since it was upgraded); send the request without an answer or pass"))
	}
	now := time.Now()
	t := sub.tenant
	for i, tok := range sub.passes {
		p, err := key.OpenPass(tok)
		if err != nil {
			return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("challenge_passes[%d]: %w", i, err))
		}
		rules := n.coveredRules(p.Rule)
		if len(rules) == 0 {
			continue // the rules are gone, or no longer challenge: nothing to exempt from
		}
		if p.Check(p.Rule, challengeSubject(rules, t.Name, sub.clientIP), now.UnixNano()) != nil {
			continue // expired, or another caller's: decided as if it were not there
		}
		for _, r := range rules {
			sub.exempt = append(sub.exempt, r.rule.Name)
			sub.passUsed = append(sub.passUsed, r.rule.Name)
		}
	}
	a := sub.answer
	if a == nil {
		return nil
	}
	c, err := key.Open(a.GetChallenge())
	if err != nil {
		n.noteChallenge("", t.Name, challengeFailed)
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("challenge_answer.challenge: %w", err))
	}
	rules := n.coveredRules(c.Rule)
	fail := func(code connect.Code, err error) error {
		for _, r := range rules {
			n.noteChallenge(r.rule.Name, t.Name, challengeFailed)
		}
		return connect.NewError(code, err)
	}
	if len(rules) == 0 {
		return fail(connect.CodeFailedPrecondition, fmt.Errorf("challenge_answer.challenge: rule %q no longer challenges; send the request without an answer", strings.ReplaceAll(c.Rule, ruleSep, ", ")))
	}
	set := challengeSet(rules)
	if set.Verifier == nil && c.Difficulty < set.Difficulty {
		// Issued while a rule asked for a CAPTCHA (difficulty 0), which it no longer does.
		return fail(connect.CodeFailedPrecondition, fmt.Errorf("challenge_answer.challenge: issued for difficulty %d, the rule asks %d now; send the request without an answer for a new challenge", c.Difficulty, set.Difficulty))
	}
	subject := challengeSubject(rules, t.Name, sub.clientIP)
	if err := c.Check(a.Challenge, a.Nonce, c.Rule, subject, now.UnixNano()); err != nil {
		code := connect.CodeInvalidArgument
		switch {
		case errors.Is(err, challenge.ErrExpired):
			code, err = connect.CodeFailedPrecondition, fmt.Errorf("%w; send the request without an answer for a new challenge", err)
		case errors.Is(err, challenge.ErrSubject):
			code, err = connect.CodePermissionDenied, fmt.Errorf("%w, not to %s", err, subject)
		}
		field := "challenge_answer.challenge"
		if errors.Is(err, challenge.ErrWork) {
			field = "challenge_answer.nonce"
		}
		return fail(code, fmt.Errorf("%s: %w", field, err))
	}
	if set.Verifier != nil {
		if err := n.siteverify(ctx, set.Verifier, a.GetCaptchaResponse(), sub.clientIP); err != nil {
			var ce *connect.Error
			if errors.As(err, &ce) && ce.Code() == connect.CodeUnavailable {
				return err // the verifier's fault, not the caller's
			}
			if errors.As(err, &ce) {
				return fail(ce.Code(), ce.Unwrap())
			}
			return fail(connect.CodePermissionDenied, err)
		}
	}
	sub.exempt = append(sub.exempt, ruleNames(rules)...)
	sub.spend = &raftv1.ChallengeSpend{Id: c.ID[:], Rule: c.Rule, ExpiresNs: c.Expires}
	sub.subject = subject
	return nil
}

// challengeSet is one challenge's settings for several rules: the highest
// difficulties, the shortest lifetimes, and the first verifier (a CAPTCHA
// answers for every rule).
func challengeSet(rules []covered) policy.ChallengeRule {
	set := rules[0].c
	for _, r := range rules[1:] {
		set.Difficulty, set.MaxDifficulty = max(set.Difficulty, r.c.Difficulty), max(set.MaxDifficulty, r.c.MaxDifficulty)
		set.TTL, set.PassTTL = min(set.TTL, r.c.TTL), min(set.PassTTL, r.c.PassTTL)
		if set.Verifier == nil {
			set.Verifier = r.c.Verifier
		}
	}
	return set
}

// maxCaptchaResponse bounds a CAPTCHA widget's token (Turnstile's are up to
// 2048 characters).
const maxCaptchaResponse = 4096

// siteverifyClient calls CAPTCHA verifiers.
var siteverifyClient = &http.Client{Timeout: 5 * time.Second}

// siteverify asks a CAPTCHA vendor whether response is a valid answer from
// the client at ip: a POST of the siteverify form (secret, response,
// remoteip), which Turnstile, hCaptcha and reCAPTCHA all accept, answered
// by {"success": …, "error-codes": […]}.
func (n challenger) siteverify(ctx context.Context, v *sluicev1.Verifier, response, ip string) error {
	switch {
	case response == "":
		return connect.NewError(connect.CodeInvalidArgument, errors.New("challenge_answer.captcha_response: missing (the CAPTCHA widget's response token)"))
	case len(response) > maxCaptchaResponse:
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("challenge_answer.captcha_response: %d bytes exceed the limit of %d", len(response), maxCaptchaResponse))
	}
	form := url.Values{"secret": {v.Secret}, "response": {response}, "remoteip": {ip}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, v.Url, strings.NewReader(form.Encode()))
	if err != nil {
		return connect.NewError(connect.CodeInternal, fmt.Errorf("challenge verifier: %w", err))
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	res, err := siteverifyClient.Do(req)
	if err != nil {
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("challenge verifier %s: %w; retry", v.Url, err))
	}
	defer res.Body.Close()
	var out struct {
		Success    bool     `json:"success"`
		ErrorCodes []string `json:"error-codes"`
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if err == nil && res.StatusCode != http.StatusOK {
		err = errors.New(res.Status)
	}
	if err == nil {
		err = json.Unmarshal(body, &out)
	}
	if err != nil {
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("challenge verifier %s: %w; retry", v.Url, err))
	}
	if !out.Success {
		why := strings.Join(out.ErrorCodes, ", ")
		if why == "" {
			why = "no reason given"
		}
		return fmt.Errorf("challenge_answer.captcha_response: the verifier refused it (%s)", why)
	}
	return nil
}

// challengeError is the refusal of a Submit by CHALLENGE rule name: the
// limit's refusal, with a fresh challenge covering every CHALLENGE rule the
// request is over (rules).
func (n challenger) challengeError(sub submission, name string, retryAt int64, rules []limiter.RuleResult) *connect.Error {
	key := n.fsm.ChallengeKey()
	var over []covered
	for _, rr := range rules {
		if rr.Action == limiter.Challenge && !rr.Allowed && !rr.Shadow && !rr.Exempt {
			if r, c, ok := n.challengeRule(rr.Rule); ok && !strings.Contains(rr.Rule, ruleSep) {
				over = append(over, covered{r, c})
			}
		}
	}
	if key == nil || len(over) == 0 {
		return n.checks.limitError(sub.tenant.Name, name, retryAt, rules, "no challenge can be issued: the cluster has no challenge key yet")
	}
	set := challengeSet(over)
	names := ruleNames(over)
	now := time.Now()
	c := challenge.Challenge{Rule: strings.Join(names, ruleSep), Subject: challengeSubject(over, sub.tenant.Name, sub.clientIP), Expires: now.Add(set.TTL).UnixNano()}
	rand.Read(c.ID[:])
	kind, kindName, detail := sluicev1.ChallengeKind_CHALLENGE_KIND_CAPTCHA, "captcha", "answer the challenge (a CAPTCHA) to go on"
	if set.Verifier == nil {
		count := n.challenges.challenged(c.Rule, c.Subject, now)
		c.Difficulty = min(challenge.Difficulty(set.Difficulty, count, challengesBeforeRise), set.MaxDifficulty)
		kind, kindName, detail = sluicev1.ChallengeKind_CHALLENGE_KIND_PROOF_OF_WORK, "proof-of-work", fmt.Sprintf("answer the challenge (proof of work, difficulty %d) to go on", c.Difficulty)
	}
	token := key.Token(c)
	err := n.checks.limitError(sub.tenant.Name, name, retryAt, rules, detail)
	d := &sluicev1.Challenge{Rule: strings.Join(names, ", "), Token: token, Kind: kind, Difficulty: uint32(c.Difficulty),
		ExpiresAt: timestamppb.New(time.Unix(0, c.Expires)), PassTtl: durationpb.New(set.PassTTL)}
	if set.Verifier != nil {
		d.SiteKey, d.VerifierUrl = set.Verifier.SiteKey, set.Verifier.Url
	}
	if ed, derr := connect.NewErrorDetail(d); derr == nil {
		err.AddDetail(ed)
	}
	err.Meta().Set(challengeHeader, token)
	err.Meta().Set(challengeRuleHeader, d.Rule)
	err.Meta().Set(challengeKindHeader, kindName)
	err.Meta().Set(challengeDifficultyHeader, strconv.Itoa(int(c.Difficulty)))
	for _, r := range names {
		n.noteChallenge(r, sub.tenant.Name, challengeIssued)
	}
	return err
}

// challengePass is the pass an admitted Submit's answer earns: for every
// rule its challenge covered, for the shortest of their pass_ttl.
func (n challenger) challengePass(sub submission) *sluicev1.ChallengePass {
	key := n.fsm.ChallengeKey()
	rules := n.coveredRules(sub.spend.GetRule())
	if key == nil || len(rules) == 0 {
		return nil
	}
	p := challenge.Pass{Rule: sub.spend.Rule, Subject: sub.subject, Expires: time.Now().Add(challengeSet(rules).PassTTL).UnixNano()}
	return &sluicev1.ChallengePass{Rule: strings.Join(ruleNames(rules), ", "), Token: key.PassToken(p), ExpiresAt: timestamppb.New(time.Unix(0, p.Expires))}
}

// replayError refuses a Submit whose answered challenge the log had
// already spent, or saw expire (detail says which).
func replayError(detail string) *connect.Error {
	return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("challenge_answer.challenge: %s; send the request without an answer for a new challenge", detail))
}

// challengesSafe reports whether every server reads log format 4: a
// policy with a CHALLENGE rule, and the challenge key, go into the log only
// then (a server of an older build would not load the first and would drop
// the second).
func (n challenger) challengesSafe() bool {
	return n.checks.checksSafe() && n.proposer.format.Load() >= challengeFormat
}

// readsChallenges is challengesSafe, or when the gate has not said so yet
// (a leader's first moments), the same check made now.
func (n challenger) readsChallenges(ctx context.Context) bool {
	return n.readsFormat(ctx, challengeFormat)
}

// readsFormat reports whether every server reads log format want: as the gate
// last found, or when it has not said so yet (a leader's first moments),
// checked now.
func (n challenger) readsFormat(ctx context.Context, want int) bool {
	if n.checks.checksSafe() && n.proposer.format.Load() >= int32(want) {
		return true
	}
	_, format, why := n.cluster.clusterReadsBatches(ctx)
	return why == nil && format >= want
}

// sizeReservation names the first model of p that reserves by size
// (its field), "" when none does. A server older than log format 5 would
// charge such jobs another cost, so the admin API sets such a policy only
// once every server reads that format.
func sizeReservation(p *sluicev1.Policy) string {
	for i, m := range p.GetModels() {
		if m.GetSize().GetReserve() {
			return fmt.Sprintf("models[%d].size.reserve", i)
		}
	}
	return ""
}

// ensureChallengeKey gives the log a challenge key, with the policy it
// has, if it has a policy and no key and every server reads log format 4.
func (n challenger) ensureChallengeKey(ctx context.Context) error {
	p := n.fsm.Policy()
	if n.fsm.ChallengeKey() != nil || proto.Size(p) == 0 || !n.readsChallenges(ctx) {
		return nil
	}
	res, err := n.propose(ctx, fsm.CmdSetPolicy, n.setPolicyCommand(p, true))
	if err == nil {
		err = res.Err
	}
	return err
}

// hasChallengeRules reports whether the policy has a CHALLENGE rule.
func (n challenger) hasChallengeRules() bool { return policyHasChallenges(n.fsm.Policy()) }

// policyHasChallenges reports whether p has a CHALLENGE rule. A server
// older than log format 4 cannot load such a policy (nor apply a Submit's
// exemptions), so the admin API sets one only once every server has said it
// reads that format (the gate of group commit and gateway checks).
func policyHasChallenges(p *sluicev1.Policy) bool {
	for _, r := range p.GetRules() {
		if r.GetAction() == sluicev1.OverLimitAction_OVER_LIMIT_ACTION_CHALLENGE {
			return true
		}
	}
	return false
}
