package fsm

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	"github.com/sluicehq/sluice/challenge"
	"github.com/sluicehq/sluice/policy"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
)

// The replicated half of CHALLENGE rules (issue 26): the key that signs
// challenges and passes, and the set of answered challenges. Verifying an
// answer or a pass needs no state (package challenge) and happens before a
// Submit is proposed; that an answer admits only once is decided here, in
// log order, so it holds across nodes and leader changes.

// ChallengeKeyLen is the length of the key a SetPolicy brings.
const ChallengeKeyLen = 32

// ChallengeKey is the key that signs challenges and passes; nil until a
// SetPolicy brought one.
func (f *FSM) ChallengeKey() challenge.Key {
	return f.challengeKey
}

// takeChallengeKey keeps the first key a SetPolicy brings.
func (f *FSM) takeChallengeKey(k []byte) {
	if len(f.challengeKey) == 0 && len(k) >= ChallengeKeyLen {
		f.challengeKey = bytes.Clone(k)
	}
}

// spendable checks a Submit's answered challenge before its admission: not
// answered before, not expired. It returns the rules the Submit is exempt
// from (the command's, and the answered challenge's).
func (f *FSM) spendable(c *raftv1.Submit) ([]string, error) {
	sp := c.Spend
	if sp == nil {
		return c.Exempt, nil
	}
	id, ok := spentID(sp.Id)
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: a challenge id of %d bytes", ErrBadCommand, len(sp.Id))
	case f.spent[id] != 0:
		return nil, &LimitError{Rule: sp.Rule, Verdict: VerdictReplayed, Detail: "this challenge was answered before; a challenge admits once"}
	case sp.ExpiresNs <= f.now:
		return nil, &LimitError{Rule: sp.Rule, Verdict: VerdictExpired, Detail: "the challenge expired before the answer was applied"}
	}
	return append(slices.Clip(c.Exempt), strings.Split(sp.Rule, policy.ChallengeRuleSep)...), nil
}

// spend records an admitted Submit's answered challenge.
func (f *FSM) spend(sp *raftv1.ChallengeSpend) {
	if id, ok := spentID(sp.GetId()); ok {
		if f.spent == nil {
			f.spent = make(map[[challenge.IDLen]byte]int64)
		}
		f.spent[id] = sp.ExpiresNs
	}
}

func spentID(b []byte) (id [challenge.IDLen]byte, ok bool) {
	if len(b) != challenge.IDLen {
		return id, false
	}
	return [challenge.IDLen]byte(b), true
}

// sweepSpent forgets answered challenges that have expired: an answer to
// one is refused as expired anyway.
func (f *FSM) sweepSpent() {
	for id, exp := range f.spent {
		if exp <= f.now {
			delete(f.spent, id)
		}
	}
}

// spentList is the spent set as the snapshot holds it, sorted by id.
func (f *FSM) spentList() []*raftv1.ChallengeSpend {
	out := make([]*raftv1.ChallengeSpend, 0, len(f.spent))
	for id, exp := range f.spent {
		out = append(out, &raftv1.ChallengeSpend{Id: bytes.Clone(id[:]), ExpiresNs: exp})
	}
	slices.SortFunc(out, func(a, b *raftv1.ChallengeSpend) int { return bytes.Compare(a.Id, b.Id) })
	return out
}
