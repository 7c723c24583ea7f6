package fsm

import (
	"bytes"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/challenge"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// The replicated half of CHALLENGE rules (issue 26): the key that signs
// challenges and passes, and the set of answered challenges. Verifying an
// answer or a pass needs no state (package challenge) and happens before a
// Submit is proposed; that an answer admits only once is decided here, in
// log order, so it holds across nodes and leader changes.

// ChallengeKeyLen is the length of the key a SetPolicy brings.
const ChallengeKeyLen = 32

// ChallengeRuleSep joins, in a challenge, a pass and a ChallengeSpend, the
// names of the CHALLENGE rules one challenge covers (a request over two at
// once gets one challenge for both); no CHALLENGE rule's name contains it.
const ChallengeRuleSep = "\n"

// Defaults and bounds of a rule's ChallengeSettings.
const (
	DefaultChallengeDifficulty = 18
	DefaultChallengeTTL        = 5 * time.Minute
	DefaultPassTTL             = 10 * time.Minute
	maxChallengeTTL            = time.Hour
	maxPassTTL                 = 24 * time.Hour
	// difficultyHeadroom is how far a challenge's difficulty rises over its
	// base unless the rule says.
	difficultyHeadroom = 6
)

// ChallengeRule is a CHALLENGE rule's settings with the defaults filled in.
type ChallengeRule struct {
	Difficulty, MaxDifficulty uint8
	TTL, PassTTL              time.Duration
	Verifier                  *sluicev1.Verifier // nil: proof of work
}

// ChallengeOf is r's challenge settings, defaults filled in; false when r's
// action is not CHALLENGE.
func ChallengeOf(r *sluicev1.Rule) (ChallengeRule, bool) {
	if r.GetAction() != sluicev1.OverLimitAction_OVER_LIMIT_ACTION_CHALLENGE {
		return ChallengeRule{}, false
	}
	s := r.GetChallenge()
	c := ChallengeRule{Difficulty: uint8(s.GetDifficulty()), MaxDifficulty: uint8(s.GetMaxDifficulty()),
		TTL: s.GetTtl().AsDuration(), PassTTL: s.GetPassTtl().AsDuration()}
	if s.GetVerifier().GetUrl() != "" {
		c.Verifier = s.Verifier
	}
	if c.Difficulty == 0 {
		c.Difficulty = DefaultChallengeDifficulty
	}
	if c.MaxDifficulty == 0 {
		c.MaxDifficulty = min(c.Difficulty+difficultyHeadroom, challenge.MaxDifficulty)
	}
	if c.TTL <= 0 {
		c.TTL = DefaultChallengeTTL
	}
	if c.PassTTL <= 0 {
		c.PassTTL = DefaultPassTTL
	}
	return c, true
}

// validateChallenge checks rule r's challenge settings, under field.
func validateChallenge(r *sluicev1.Rule, field string) error {
	s := r.GetChallenge()
	if r.Action != sluicev1.OverLimitAction_OVER_LIMIT_ACTION_CHALLENGE {
		if s != nil {
			return fmt.Errorf("%s.challenge: set for action %v; it is for action OVER_LIMIT_ACTION_CHALLENGE", field, r.Action)
		}
		return nil
	}
	if strings.Contains(r.Name, ChallengeRuleSep) {
		return fmt.Errorf("%s.name: a CHALLENGE rule's name may not contain a newline", field)
	}
	field += ".challenge"
	c, _ := ChallengeOf(r)
	switch {
	case s.GetDifficulty() > challenge.MaxDifficulty:
		return fmt.Errorf("%s.difficulty: %d exceeds %d bits", field, s.GetDifficulty(), challenge.MaxDifficulty)
	case s.GetMaxDifficulty() > challenge.MaxDifficulty:
		return fmt.Errorf("%s.max_difficulty: %d exceeds %d bits", field, s.GetMaxDifficulty(), challenge.MaxDifficulty)
	case c.MaxDifficulty < c.Difficulty:
		return fmt.Errorf("%s.max_difficulty: %d is below the difficulty, %d", field, c.MaxDifficulty, c.Difficulty)
	}
	if err := boundedDuration(field+".ttl", s.GetTtl(), maxChallengeTTL); err != nil {
		return err
	}
	if err := boundedDuration(field+".pass_ttl", s.GetPassTtl(), maxPassTTL); err != nil {
		return err
	}
	if v := s.GetVerifier(); v != nil {
		if err := validVerifierURL(v.Url); err != nil {
			return fmt.Errorf("%s.verifier.url: %w", field, err)
		}
		if v.Secret == "" {
			return fmt.Errorf("%s.verifier.secret: missing (the vendor's secret key)", field)
		}
	}
	return nil
}

// boundedDuration checks an optional duration: unset, or between 0 and most.
func boundedDuration(field string, d *durationpb.Duration, most time.Duration) error {
	if d == nil {
		return nil
	}
	if err := d.CheckValid(); err != nil || d.AsDuration() < 0 || d.AsDuration() > most {
		return fmt.Errorf("%s: must be between 0 (the default) and %v", field, most)
	}
	return nil
}

// validVerifierURL accepts https URLs, and http ones to a loopback host.
func validVerifierURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q is not an absolute URL", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if ip := net.ParseIP(u.Hostname()); (ip != nil && ip.IsLoopback()) || u.Hostname() == "localhost" {
			return nil
		}
		return fmt.Errorf("%q: http is allowed only to a loopback host; use https", raw)
	}
	return fmt.Errorf("%q: the scheme must be https", raw)
}

// ChallengeKey is the key that signs challenges and passes; nil until a
// SetPolicy brought one.
func (f *FSM) ChallengeKey() challenge.Key {
	f.mu.RLock()
	defer f.mu.RUnlock()
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
	return append(slices.Clip(c.Exempt), strings.Split(sp.Rule, ChallengeRuleSep)...), nil
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
