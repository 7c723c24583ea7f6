package limiter

import "fmt"

// MaxRulesPerRequest is how many rules a Decision holds; NewEngine refuses rule sets under
// which more could match one request.
const MaxRulesPerRequest = 16

// Request is what the rules match on and charge: the caller's attributes and the cost.
type Request struct {
	Tenant, APIKey, Tier, ClientIP, Method, Model string
	// Key is a gateway's other attributes ("generic_key=images"), for rules matching or
	// scoped on it.
	Key string
	// Exempt names rules that do not refuse this request (their challenge was answered, or
	// the caller holds a pass): they are decided and, where they allow it, charged, but over
	// their limit they charge nothing and refuse nothing, as a shadow rule.
	Exempt []string
	// Cost is what the request weighs in the policy's unit (tokens, images,
	// milli-GPU-seconds); rules that count requests count it as 1. Cost 0 only checks:
	// it is decided like any other request and charges nothing.
	Cost int64
}

// Verdict is the overall outcome of a Decision.
type Verdict uint8

const (
	// Rejected: some rule refused; nothing was charged. The zero Verdict, so that a Decision
	// nobody filled in admits nothing.
	Rejected Verdict = iota
	// Admitted: every rule passed and was charged; start now.
	Admitted
	// Delayed: admitted and charged, to start at Decision.At (a Delay rule, or a LeakyQueue).
	Delayed
	// Degraded: a Degrade rule refused; nothing was charged; re-check with Decision.Fallback.
	Degraded
	// Challenged: a Challenge rule refused (and no Reject or Degrade rule did); nothing was
	// charged. Answering the challenge exempts the request from Decision.Rule.
	Challenged
)

var verdictNames = [...]string{"rejected", "admitted", "delayed", "degraded", "challenged"}

func (v Verdict) String() string {
	if int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return fmt.Sprintf("Verdict(%d)", v)
}

// RuleResult is one matched rule's part of a Decision.
type RuleResult struct {
	Rule string // the rule's name
	// Result is the rule's own decision. For a delayed rule Allowed is true and ServeAt and
	// RetryAt are when the request fits; for a shadow rule Allowed false means "would have
	// rejected".
	Result
	Action Action
	Shadow bool
	// Exempt: the request was exempt from the rule (Request.Exempt); Allowed false means it
	// would have been refused.
	Exempt   bool
	Overflow bool // the rule's key table was full: the key shares its overflow state
}

// Decision is the Engine's answer for one request. The caller owns it and passes it back in,
// so that deciding allocates nothing; it is overwritten by every Check and Admit.
type Decision struct {
	Verdict Verdict
	// At is when an admitted request may start: now, or later when Delayed.
	At int64
	// RetryAt, for a refused request, is the earliest time every refusing rule would let it
	// through (Never if some never will, 0 if unknown, e.g. waiting on a concurrency cap).
	RetryAt int64
	// Rule names the rule that refused, degraded or challenged the request (the first, in
	// rule order), or the one that delays it most; "" when admitted to start now.
	Rule string
	// Fallback is the model to re-check with, when Degraded.
	Fallback string

	results [MaxRulesPerRequest]RuleResult
	n       int
	idx     [MaxRulesPerRequest]int32 // matched rules, in rule order
	refs    [MaxRulesPerRequest]ref
	keys    [MaxRulesPerRequest]hkey // each rule's key, hashed once for evaluate and charge
	delayed uint32                   // bit j: rule j is charged by force, as of its RetryAt
}

// Rules returns each matched rule's result, in rule order. The slice aliases the Decision.
func (d *Decision) Rules() []RuleResult { return d.results[:d.n] }

// Allowed reports whether the request was admitted, now or for later.
func (d *Decision) Allowed() bool { return d.Verdict == Admitted || d.Verdict == Delayed }

// laterRetry combines two rules' RetryAt: the later, with 0 (unknown) yielding to a known time.
func laterRetry(a, b int64) int64 {
	if a == 0 {
		return b
	}
	if b == 0 {
		return a
	}
	return max(a, b)
}
