package fsm

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/policy"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

func challengeRule() *sluicev1.Rule {
	r := bucket("free-human", "free", 1, 2, time.Minute)
	r.Action = sluicev1.OverLimitAction_OVER_LIMIT_ACTION_CHALLENGE
	return r
}

func limitErr(t *testing.T, r Result) *LimitError {
	t.Helper()
	var le *LimitError
	if !errors.As(r.Err, &le) {
		t.Fatalf("want a LimitError, got %v", r.Err)
	}
	return le
}

func TestChallengeRuleChallengesAndAnAnswerAdmitsOnce(t *testing.T) {
	key := bytes.Repeat([]byte{7}, ChallengeKeyLen)
	m := &machine{f: New()}
	if r := m.apply(CmdSetPolicy, 0, &raftv1.SetPolicy{Policy: withRules(challengeRule()), ChallengeKey: key}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if !bytes.Equal(m.f.Reads().ChallengeKey(), key) {
		t.Fatal("the first SetPolicy's key was not kept")
	}
	// A later SetPolicy's key does not replace it: passes stay valid.
	if r := m.apply(CmdSetPolicy, 0, &raftv1.SetPolicy{Policy: withRules(challengeRule()), ChallengeKey: bytes.Repeat([]byte{8}, ChallengeKeyLen)}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if !bytes.Equal(m.f.Reads().ChallengeKey(), key) {
		t.Fatal("a later SetPolicy replaced the key")
	}
	spec := func() *sluicev1.JobSpec { return &sluicev1.JobSpec{Model: "sdxl"} }
	m.submit(t, sec, "alice", spec())
	m.submit(t, sec, "alice", spec())
	le := limitErr(t, m.apply(CmdSubmit, sec, &raftv1.Submit{Tenant: "alice", Spec: spec()}))
	if le.Verdict != VerdictChallenged || le.Rule != "free-human" {
		t.Fatalf("burst over the rule: %+v, want challenged by free-human", le)
	}
	answer := &raftv1.ChallengeSpend{Id: bytes.Repeat([]byte{1}, 16), Rule: "free-human", ExpiresNs: 5 * sec}
	r := m.apply(CmdSubmit, sec, &raftv1.Submit{Tenant: "alice", Spec: spec(), Spend: answer})
	if r.Err != nil {
		t.Fatalf("an answered challenge: %v", r.Err)
	}
	if rs := r.Limits; len(rs) != 1 || !rs[0].Exempt || rs[0].Allowed {
		t.Fatalf("the rule's result %+v, want exempt and over", rs)
	}
	// The same answer again, even with a pass's exemption besides, is refused.
	le = limitErr(t, m.apply(CmdSubmit, sec, &raftv1.Submit{Tenant: "alice", Spec: spec(), Spend: answer, Exempt: []string{"free-human"}}))
	if le.Verdict != VerdictReplayed || !strings.Contains(le.Error(), "answered before") {
		t.Fatalf("a replayed answer: %+v", le)
	}
	// A pass's exemption alone admits.
	if r := m.apply(CmdSubmit, sec, &raftv1.Submit{Tenant: "alice", Spec: spec(), Exempt: []string{"free-human"}}); r.Err != nil {
		t.Fatalf("with a pass: %v", r.Err)
	}
	// The spent set survives a snapshot, and the key with it.
	n := New()
	if err := n.Restore(m.f.Snapshot()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(n.Reads().ChallengeKey(), key) || len(n.challenges.spent) != 1 {
		t.Fatalf("restored key %x, %d spent", n.Reads().ChallengeKey(), len(n.challenges.spent))
	}
	m.f = n
	le = limitErr(t, m.apply(CmdSubmit, 2*sec, &raftv1.Submit{Tenant: "alice", Spec: spec(), Spend: answer}))
	if le.Verdict != VerdictReplayed {
		t.Fatalf("a replay after a restore: %+v", le)
	}
	// An answer that reaches the log after its challenge expired is refused;
	// and a sweep forgets spent challenges once they have expired.
	late := &raftv1.ChallengeSpend{Id: bytes.Repeat([]byte{2}, 16), Rule: "free-human", ExpiresNs: 5 * sec}
	le = limitErr(t, m.apply(CmdSubmit, 2*int64(time.Minute), &raftv1.Submit{Tenant: "alice", Spec: spec(), Spend: late}))
	if le.Verdict != VerdictExpired || !strings.Contains(le.Error(), "expired") {
		t.Fatalf("a late answer: %+v", le)
	}
	if len(m.f.challenges.spent) != 0 {
		t.Fatalf("%d spent challenges kept past their expiry", len(m.f.challenges.spent))
	}
}

func TestChallengeSettingsAreChecked(t *testing.T) {
	for _, tc := range []struct {
		edit func(*sluicev1.Rule)
		want string
	}{
		{func(r *sluicev1.Rule) { r.Challenge = &sluicev1.ChallengeSettings{Difficulty: 40} }, "rules[0].challenge.difficulty: 40 exceeds 32 bits"},
		{func(r *sluicev1.Rule) { r.Challenge = &sluicev1.ChallengeSettings{Difficulty: 20, MaxDifficulty: 10} }, "rules[0].challenge.max_difficulty: 10 is below the difficulty, 20"},
		{func(r *sluicev1.Rule) {
			r.Challenge = &sluicev1.ChallengeSettings{PassTtl: durationpb.New(48 * time.Hour)}
		}, "rules[0].challenge.pass_ttl: must be between 0 (the default) and 24h0m0s"},
		{func(r *sluicev1.Rule) {
			r.Challenge = &sluicev1.ChallengeSettings{Verifier: &sluicev1.Verifier{Url: "http://captcha.example/siteverify", Secret: "s"}}
		}, "rules[0].challenge.verifier.url: \"http://captcha.example/siteverify\": http is allowed only to a loopback host"},
		{func(r *sluicev1.Rule) {
			r.Challenge = &sluicev1.ChallengeSettings{Verifier: &sluicev1.Verifier{Url: "https://captcha.example/siteverify"}}
		}, "rules[0].challenge.verifier.secret: missing"},
		{func(r *sluicev1.Rule) {
			r.Action = sluicev1.OverLimitAction_OVER_LIMIT_ACTION_REJECT
			r.Challenge = &sluicev1.ChallengeSettings{}
		}, "rules[0].challenge: set for action OVER_LIMIT_ACTION_REJECT"},
	} {
		r := challengeRule()
		tc.edit(r)
		_, err := policy.LimiterRules(withRules(r))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
	r := challengeRule()
	r.Challenge = &sluicev1.ChallengeSettings{Difficulty: 20, Verifier: &sluicev1.Verifier{Url: "http://127.0.0.1:9/siteverify", Secret: "s"}}
	if _, err := policy.LimiterRules(withRules(r)); err != nil {
		t.Fatal(err)
	}
	c, _ := policy.ChallengeOf(r)
	if c.Difficulty != 20 || c.MaxDifficulty != 26 || c.TTL != policy.DefaultChallengeTTL || c.PassTTL != policy.DefaultPassTTL || c.Verifier == nil {
		t.Fatalf("defaults: %+v", c)
	}
}
