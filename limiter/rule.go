package limiter

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// DefaultMaxKeys is a rule's key table bound when its MaxKeys is 0.
const DefaultMaxKeys = 100_000

// maxMaxKeys keeps slot indices within an int32.
const maxMaxKeys = 1<<31 - 1

// Rule is one limit, the requests it applies to, and what happens over it.
type Rule struct {
	// Name identifies the rule in decisions, usage and snapshots; unique in an Engine.
	Name string
	// Match selects the requests the rule applies to; the zero Match applies to all.
	Match Match
	// Scope says which attribute keys the rule's state: one state per tenant, per IP, … or
	// one for all (Global). Scope PerModel with Match{Tier: "free"} is "per model, for free".
	// A rule keyed on an attribute applies only to requests that have it (not empty).
	Scope Scope
	// Algorithm is the limit, e.g. TokenBucket{Rate: Rate{10, time.Minute}, Burst: 10}.
	Algorithm Algorithm
	// Counts says whether a request counts 1 or its Cost against the limit.
	Counts Counts
	// Action is what happens to a request over the limit.
	Action Action
	// MaxWait bounds a Delay: a request that would fit within MaxWait is admitted to start
	// then; one that would wait longer is rejected.
	MaxWait time.Duration
	// Fallback is the model a Degrade rule sends the caller to.
	Fallback string
	// Shadow rules decide and count, and report what they would have done, but never reject
	// or delay anything: for trying a limit on live traffic.
	Shadow bool
	// Replaces names a rule this one overrides: where both match a request, only this one
	// applies (e.g. tenant carol's own limit instead of her tier's); where the replaced rule
	// does not match, neither does this one. An override cannot itself be replaced.
	Replaces string
	// MaxKeys bounds the rule's key table (DefaultMaxKeys when 0). When it is full of keys
	// that are not idle, new keys share one overflow state (Concurrency rules reject them).
	MaxKeys int
}

// Match selects requests by attribute; an empty field matches anything. ClientIP is an
// address or a CIDR prefix ("10.0.0.0/8").
type Match struct {
	Tenant, APIKey, Tier, ClientIP, Method, Model string
	// Key is a gateway's other request attributes ("generic_key=images"), matched exactly.
	Key string
}

// Scope is the request attribute that keys a rule's state.
type Scope uint8

const (
	Global      Scope = iota // one state for every matching request
	PerTenant                // one state per Request.Tenant
	PerAPIKey                // one state per Request.APIKey
	PerTier                  // one state per Request.Tier
	PerClientIP              // one state per Request.ClientIP
	PerMethod                // one state per Request.Method
	PerModel                 // one state per Request.Model
	PerKey                   // one state per Request.Key
)

var scopeNames = [...]string{"global", "per tenant", "per API key", "per tier", "per client IP", "per method", "per model", "per key"}

func (s Scope) String() string {
	if int(s) < len(scopeNames) {
		return scopeNames[s]
	}
	return fmt.Sprintf("Scope(%d)", s)
}

// Action is what a rule does with a request over its limit.
type Action uint8

const (
	// Reject refuses the request; nothing is charged anywhere.
	Reject Action = iota
	// Delay admits the request to start at the time it fits, if that is within MaxWait, and
	// charges it as of then (a TokenBucket goes into debt, a GCRA advances its arrival time).
	// Only TokenBucket and GCRA can do that; on other algorithms Delay rejects, with RetryAt
	// saying when to come back (a LeakyQueue delays every admitted hit anyway).
	Delay
	// Degrade refuses the request but names the rule's Fallback model to re-check with.
	Degrade
	// Challenge refuses the request with a challenge for the caller to answer (the caller's
	// part: package challenge); a request exempt from the rule (Request.Exempt: it answered
	// one, or holds a pass) is not refused by it.
	Challenge
)

var actionNames = [...]string{"reject", "delay", "degrade", "challenge"}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("Action(%d)", a)
}

// Counts is what a request counts against a rule's limit.
type Counts uint8

const (
	CountRequests Counts = iota // 1 per request (0 for a request of cost 0, which only checks)
	CountCost                   // the request's Cost: tokens, images, milli-GPU-seconds, …
)

// attr names a request attribute.
type attr uint8

const (
	attrTenant attr = iota
	attrAPIKey
	attrModel
	attrTier
	attrMethod
	attrClientIP
	attrKey
	numAttrs
)

var attrFields = [numAttrs]string{"tenant", "api_key", "model", "tier", "method", "client_ip", "key"}

func (m *Match) attr(a attr) string {
	switch a {
	case attrTenant:
		return m.Tenant
	case attrAPIKey:
		return m.APIKey
	case attrModel:
		return m.Model
	case attrTier:
		return m.Tier
	case attrMethod:
		return m.Method
	case attrKey:
		return m.Key
	}
	return m.ClientIP
}

func (r *Request) attr(a attr) string {
	switch a {
	case attrTenant:
		return r.Tenant
	case attrAPIKey:
		return r.APIKey
	case attrModel:
		return r.Model
	case attrTier:
		return r.Tier
	case attrMethod:
		return r.Method
	case attrKey:
		return r.Key
	}
	return r.ClientIP
}

var scopeAttrs = [...]attr{PerTenant: attrTenant, PerAPIKey: attrAPIKey, PerTier: attrTier,
	PerClientIP: attrClientIP, PerMethod: attrMethod, PerModel: attrModel, PerKey: attrKey}

// rule is a validated Rule with its key table.
type rule struct {
	Rule
	table   table
	maxKeys int
	base    int32 // index of the rule this one replaces, or -1
	isCap   bool  // a Concurrency rule: Release applies, Settle does not
	prefix  netip.Prefix
}

func (r *rule) key(req *Request) string {
	if r.Scope == Global {
		return ""
	}
	return req.attr(scopeAttrs[r.Scope])
}

// units is what req counts against r.
func (r *rule) units(req *Request) int64 {
	c := clampCost(req.Cost)
	if r.Counts == CountRequests && c > 0 {
		return 1
	}
	return c
}

// lazyAddr parses the request's client IP once, and only if a prefix rule needs it.
type lazyAddr struct {
	parsed bool
	addr   netip.Addr
}

func (l *lazyAddr) get(s string) netip.Addr {
	if !l.parsed {
		l.addr, _ = netip.ParseAddr(s)
		l.addr = l.addr.Unmap()
		l.parsed = true
	}
	return l.addr
}

func (r *rule) matches(req *Request, ip *lazyAddr) bool {
	m := &r.Match
	if r.Scope != Global && req.attr(scopeAttrs[r.Scope]) == "" {
		return false // keyed on what the request does not have (a gateway's descriptor without an IP)
	}
	if (m.Tenant != "" && m.Tenant != req.Tenant) ||
		(m.APIKey != "" && m.APIKey != req.APIKey) ||
		(m.Tier != "" && m.Tier != req.Tier) ||
		(m.Method != "" && m.Method != req.Method) ||
		(m.Model != "" && m.Model != req.Model) ||
		(m.Key != "" && m.Key != req.Key) {
		return false
	}
	switch {
	case m.ClientIP == "":
		return true
	case r.prefix.IsValid():
		a := ip.get(req.ClientIP)
		return a.IsValid() && r.prefix.Contains(a)
	}
	return m.ClientIP == req.ClientIP
}

// indexAttr is the attribute an Engine indexes r under: its first exact-match field, or
// numAttrs when it has none (it is then checked against every request).
func (r *rule) indexAttr() attr {
	for a := range numAttrs {
		if v := r.Match.attr(a); v != "" && !(a == attrClientIP && r.prefix.IsValid()) {
			return a
		}
	}
	return numAttrs
}

// compile validates rules and builds their tables; errors name the rule and the field.
func compile(rules []Rule) ([]rule, error) {
	out := make([]rule, len(rules))
	byName := make(map[string]int, len(rules))
	for i, rl := range rules {
		if rl.Name == "" {
			return nil, fmt.Errorf("rules[%d].name: must not be empty", i)
		}
		if _, dup := byName[rl.Name]; dup {
			return nil, fmt.Errorf("rules[%d].name: %q is used twice", i, rl.Name)
		}
		byName[rl.Name] = i
		if err := validateRule(&rl); err != nil {
			return nil, fmt.Errorf("rule %q: %w", rl.Name, err)
		}
		r := rule{Rule: rl, base: -1, maxKeys: rl.MaxKeys}
		if r.maxKeys == 0 {
			r.maxKeys = DefaultMaxKeys
		}
		if strings.Contains(rl.Match.ClientIP, "/") {
			p, err := netip.ParsePrefix(rl.Match.ClientIP)
			if err != nil {
				return nil, fmt.Errorf("rule %q: match.client_ip: %w", rl.Name, err)
			}
			r.prefix = p.Masked()
		}
		_, r.isCap = rl.Algorithm.(Concurrency)
		out[i] = r
	}
	for i := range out {
		r := &out[i]
		if r.Replaces == "" {
			continue
		}
		b, ok := byName[r.Replaces]
		switch {
		case !ok:
			return nil, fmt.Errorf("rule %q: replaces: no rule is named %q", r.Name, r.Replaces)
		case b == i:
			return nil, fmt.Errorf("rule %q: replaces: a rule cannot replace itself", r.Name)
		case out[b].Replaces != "":
			return nil, fmt.Errorf("rule %q: replaces: %q is itself an override", r.Name, r.Replaces)
		}
		r.base = int32(b)
	}
	return out, nil
}

func validateRule(r *Rule) error {
	if r.Algorithm == nil {
		return errors.New("algorithm: missing")
	}
	if err := r.Algorithm.Validate(); err != nil {
		return err
	}
	switch {
	case r.Scope > PerKey:
		return fmt.Errorf("scope: %v is not a scope", r.Scope)
	case r.Counts > CountCost:
		return fmt.Errorf("counts: %d is not requests or cost", r.Counts)
	case r.Action > Challenge:
		return fmt.Errorf("action: %v is not an action", r.Action)
	case r.MaxWait < 0:
		return fmt.Errorf("max_wait: %v must not be negative", r.MaxWait)
	case r.Action == Delay && r.MaxWait == 0:
		return errors.New("max_wait: a delay rule needs a positive max_wait")
	case r.Action == Degrade && r.Fallback == "":
		return errors.New("fallback: a degrade rule needs a fallback model")
	case r.MaxKeys < 0 || r.MaxKeys > maxMaxKeys:
		return fmt.Errorf("max_keys: %d must be between 0 (default %d) and %d", r.MaxKeys, DefaultMaxKeys, maxMaxKeys)
	}
	return nil
}
