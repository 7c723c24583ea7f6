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

// challengeBook is that half: the key (nil until a SetPolicy brought one)
// and the answered challenges by id, with when each expires.
type challengeBook struct {
	key   []byte
	spent map[[challenge.IDLen]byte]int64
}

// ChallengeKey is the key that signs challenges and passes; nil until a
// SetPolicy brought one.
func (r ConfigReads) ChallengeKey() challenge.Key {
	return r.f.challenges.key
}

// takeKey keeps the first key a SetPolicy brings.
func (b *challengeBook) takeKey(k []byte) {
	if len(b.key) == 0 && len(k) >= ChallengeKeyLen {
		b.key = bytes.Clone(k)
	}
}

// spendable checks a Submit's answered challenge before its admission: not
// answered before, not expired at now. It returns the rules the Submit is
// exempt from (the command's, and the answered challenge's).
func (b *challengeBook) spendable(c *raftv1.Submit, now int64) ([]string, error) {
	sp := c.Spend
	if sp == nil {
		return c.Exempt, nil
	}
	id, ok := spentID(sp.Id)
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: a challenge id of %d bytes", ErrBadCommand, len(sp.Id))
	case b.spent[id] != 0:
		return nil, &LimitError{Rule: sp.Rule, Verdict: VerdictReplayed, Detail: "this challenge was answered before; a challenge admits once"}
	case sp.ExpiresNs <= now:
		return nil, &LimitError{Rule: sp.Rule, Verdict: VerdictExpired, Detail: "the challenge expired before the answer was applied"}
	}
	return append(slices.Clip(c.Exempt), strings.Split(sp.Rule, policy.ChallengeRuleSep)...), nil
}

// spend records an admitted Submit's answered challenge.
func (b *challengeBook) spend(sp *raftv1.ChallengeSpend) {
	if id, ok := spentID(sp.GetId()); ok {
		if b.spent == nil {
			b.spent = make(map[[challenge.IDLen]byte]int64)
		}
		b.spent[id] = sp.ExpiresNs
	}
}

func spentID(b []byte) (id [challenge.IDLen]byte, ok bool) {
	if len(b) != challenge.IDLen {
		return id, false
	}
	return [challenge.IDLen]byte(b), true
}

// sweep forgets answered challenges expired at now: an answer to one is
// refused as expired anyway.
func (b *challengeBook) sweep(now int64) {
	for id, exp := range b.spent {
		if exp <= now {
			delete(b.spent, id)
		}
	}
}

// spentList is the spent set as the snapshot holds it, sorted by id.
func (b *challengeBook) spentList() []*raftv1.ChallengeSpend {
	out := make([]*raftv1.ChallengeSpend, 0, len(b.spent))
	for id, exp := range b.spent {
		out = append(out, &raftv1.ChallengeSpend{Id: bytes.Clone(id[:]), ExpiresNs: exp})
	}
	slices.SortFunc(out, func(a, b *raftv1.ChallengeSpend) int { return bytes.Compare(a.Id, b.Id) })
	return out
}
