package policy

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/challenge"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

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
