package sim

import (
	"encoding/binary"

	"github.com/sluicehq/sluice/limiter"
	"github.com/sluicehq/sluice/policy"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
)

// CHALLENGE rules in the simulator: the server's part is the state
// machine's own (exemptions, the spent set); the clients' part is the
// tenant's ChallengeSpec: who answers, and how long it takes.

// exemptions are what tenant t's submission p carries: the rules its
// valid passes name, and the challenge it answers.
func (e clients) exemptions(t *tenantState, p pendingSubmit) ([]string, *raftv1.ChallengeSpend) {
	t.exempt = t.exempt[:0]
	for _, r := range e.challengeRules {
		if t.passes[r] > e.now {
			t.exempt = append(t.exempt, r)
		}
	}
	if p.answer == "" {
		return t.exempt, nil
	}
	e.challengeSeq++
	id := binary.BigEndian.AppendUint64(make([]byte, 8, 16), e.challengeSeq)
	// The leader's pre-check lets the answered rule through (the node
	// verified the answer); the log spends it.
	return append(t.exempt, p.answer), &raftv1.ChallengeSpend{Id: id, Rule: p.answer, ExpiresNs: p.expires}
}

// challenged is a submission refused with a challenge of rule: a person
// answers it later, a bot never does.
func (e clients) challenged(p pendingSubmit, rule string, retryAt int64) error {
	t := &e.tenants[p.tenant]
	if e.base+p.arrived >= e.warmAt {
		t.tally.challenged++
	}
	c := t.spec.Challenge
	if c == nil || t.solver == nil || t.solver.Float64() >= c.Solve || e.stopped {
		return e.refused(p, rule, retryAt)
	}
	cr, _ := policy.ChallengeOf(e.rules[rule])
	p.answer, p.expires = rule, e.now+int64(cr.TTL)
	e.ev.push(event{at: e.now + int64(c.After), kind: evResubmit, a: e.newPending(p)})
	return nil
}

// answered notes what an admitted submission's decision says of challenge
// rules: its answer earned a pass; a shadow challenge rule would have
// challenged it.
func (e clients) answered(t *tenantState, p pendingSubmit, rules []limiter.RuleResult, measured bool) {
	if p.answer != "" {
		cr, _ := policy.ChallengeOf(e.rules[p.answer])
		if t.passes == nil {
			t.passes = map[string]int64{}
		}
		t.passes[p.answer] = e.now + int64(cr.PassTTL)
		if measured {
			t.tally.solved++
		}
	}
	if !measured {
		return
	}
	for i := range rules {
		if r := &rules[i]; r.Shadow && !r.Allowed && r.Action == limiter.Challenge {
			t.tally.shadowChallenged++
			return
		}
	}
}
