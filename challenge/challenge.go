// Package challenge is the stateless cryptographic core of CHALLENGE rules:
// HMAC-signed proof-of-work challenges bound to a subject and a rule, their
// hashcash solutions (SHA-256(token ‖ nonce) with N leading zero bits), and
// signed passes that exempt a subject until they expire. Spending each
// challenge once is the state machine's part. See docs/architecture.md.
package challenge

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"runtime"
	"strings"
)

// Errors of Verify and VerifyPass; each wraps the reason in words.
var (
	ErrMalformed = errors.New("malformed")
	ErrForged    = errors.New("not signed by this cluster")
	ErrExpired   = errors.New("expired")
	ErrSubject   = errors.New("issued to someone else")
	ErrRule      = errors.New("issued for another rule")
	ErrWork      = errors.New("the nonce does not solve it")
)

// MaxDifficulty bounds a challenge's difficulty in leading zero bits (2^32
// hashes on average: minutes of a browser's time).
const MaxDifficulty = 32

const (
	challengePrefix = "c1."
	passPrefix      = "p1."
	tagLen          = 16 // bytes of HMAC-SHA-256 kept: 128 bits
	// IDLen is the length of a challenge's ID.
	IDLen = 16
)

// Key signs and verifies challenges and passes: at least 32 random bytes,
// the same on every server.
type Key []byte

// Challenge is what a caller over a CHALLENGE rule is given to solve.
type Challenge struct {
	ID         [IDLen]byte // random: names it in the spent set
	Rule       string
	Subject    string // "tenant:alice" or "ip:203.0.113.9"
	Difficulty uint8
	Expires    int64 // unix ns
}

// Pass exempts Subject from Rule until Expires.
type Pass struct {
	Rule    string
	Subject string
	Expires int64
}

// body is the signed part: fixed fields, then the two strings with lengths.
func appendBody(b []byte, kind byte, id []byte, rule, subject string, difficulty uint8, expires int64) []byte {
	b = append(b, kind)
	b = append(b, id...)
	b = append(b, difficulty)
	b = binary.BigEndian.AppendUint64(b, uint64(expires))
	b = binary.AppendUvarint(b, uint64(len(rule)))
	b = append(b, rule...)
	b = binary.AppendUvarint(b, uint64(len(subject)))
	return append(b, subject...)
}

func (k Key) tag(body []byte) []byte {
	m := hmac.New(sha256.New, k)
	m.Write(body)
	return m.Sum(nil)[:tagLen]
}

var b64 = base64.RawURLEncoding

// Token is the challenge as the caller receives it and sends back.
func (k Key) Token(c Challenge) string {
	body := appendBody(make([]byte, 0, 64+len(c.Rule)+len(c.Subject)), 'c', c.ID[:], c.Rule, c.Subject, c.Difficulty, c.Expires)
	return challengePrefix + b64.EncodeToString(append(body, k.tag(body)...))
}

// PassToken is the pass as its holder presents it.
func (k Key) PassToken(p Pass) string {
	body := appendBody(make([]byte, 0, 48+len(p.Rule)+len(p.Subject)), 'p', nil, p.Rule, p.Subject, 0, p.Expires)
	return passPrefix + b64.EncodeToString(append(body, k.tag(body)...))
}

// open checks a token's prefix and signature and returns its body.
func (k Key) open(token, prefix string) ([]byte, error) {
	rest, ok := strings.CutPrefix(token, prefix)
	if !ok || len(rest) > 4096 {
		return nil, fmt.Errorf("%w: not a %q token", ErrMalformed, prefix)
	}
	raw, err := b64.DecodeString(rest)
	if err != nil || len(raw) < tagLen+1 {
		return nil, fmt.Errorf("%w: not base64url", ErrMalformed)
	}
	body, tag := raw[:len(raw)-tagLen], raw[len(raw)-tagLen:]
	if !hmac.Equal(tag, k.tag(body)) {
		return nil, ErrForged
	}
	return body, nil
}

// parse reads a body appendBody wrote.
func parse(body []byte, kind byte, idn int) (id []byte, rule, subject string, difficulty uint8, expires int64, err error) {
	bad := fmt.Errorf("%w: truncated", ErrMalformed)
	if len(body) < 1+idn+1+8 || body[0] != kind {
		return nil, "", "", 0, 0, bad
	}
	id, body = body[1:1+idn], body[1+idn:]
	difficulty, expires, body = body[0], int64(binary.BigEndian.Uint64(body[1:9])), body[9:]
	str := func() (string, bool) {
		n, w := binary.Uvarint(body)
		if w <= 0 || n > uint64(len(body)-w) {
			return "", false
		}
		s := string(body[w : w+int(n)])
		body = body[w+int(n):]
		return s, true
	}
	var ok1, ok2 bool
	rule, ok1 = str()
	subject, ok2 = str()
	if !ok1 || !ok2 || len(body) != 0 {
		return nil, "", "", 0, 0, bad
	}
	return id, rule, subject, difficulty, expires, nil
}

// Open reads a challenge token this cluster signed; it does not check the
// expiry, the subject or any solution (Verify does).
func (k Key) Open(token string) (Challenge, error) {
	body, err := k.open(token, challengePrefix)
	if err != nil {
		return Challenge{}, err
	}
	id, rule, subject, difficulty, expires, err := parse(body, 'c', IDLen)
	if err != nil {
		return Challenge{}, err
	}
	c := Challenge{Rule: rule, Subject: subject, Difficulty: difficulty, Expires: expires}
	copy(c.ID[:], id)
	return c, nil
}

// Verify checks a solution: token is a challenge this cluster signed for
// rule and subject, not expired at now, and nonce solves it. It returns the
// challenge (its ID, for the spent set).
func (k Key) Verify(token string, nonce uint64, rule, subject string, now int64) (Challenge, error) {
	c, err := k.Open(token)
	if err == nil {
		err = c.Check(token, nonce, rule, subject, now)
	}
	return c, err
}

// Check is Verify for a challenge Open read from token: that it was issued
// for rule and subject, has not expired at now, and nonce solves it.
func (c Challenge) Check(token string, nonce uint64, rule, subject string, now int64) error {
	if err := bound(c.Rule, c.Subject, c.Expires, rule, subject, now); err != nil {
		return err
	}
	if z := LeadingZeros(token, nonce); z < int(c.Difficulty) {
		return fmt.Errorf("%w: %d leading zero bits, %d needed", ErrWork, z, c.Difficulty)
	}
	return nil
}

// bound checks that a token issued for rule r, subject s until expires is
// presented for rule and subject before it expires.
func bound(r, s string, expires int64, rule, subject string, now int64) error {
	switch {
	case r != rule:
		return fmt.Errorf("%w: %q, not %q", ErrRule, r, rule)
	case s != subject:
		return fmt.Errorf("%w: %s", ErrSubject, s)
	case now >= expires:
		return ErrExpired
	}
	return nil
}

// VerifyPass checks that token is a pass this cluster signed for rule and
// subject, valid at now.
func (k Key) VerifyPass(token, rule, subject string, now int64) (Pass, error) {
	p, err := k.OpenPass(token)
	if err == nil {
		err = p.Check(rule, subject, now)
	}
	return p, err
}

// Check is VerifyPass for a pass OpenPass read: that it was issued for rule
// and subject and has not expired at now.
func (p Pass) Check(rule, subject string, now int64) error {
	return bound(p.Rule, p.Subject, p.Expires, rule, subject, now)
}

// OpenPass reads a pass this cluster signed, to learn its rule; it does
// not check the expiry or the subject (VerifyPass does).
func (k Key) OpenPass(token string) (Pass, error) {
	body, err := k.open(token, passPrefix)
	if err != nil {
		return Pass{}, err
	}
	_, rule, subject, _, expires, err := parse(body, 'p', 0)
	if err != nil {
		return Pass{}, err
	}
	return Pass{Rule: rule, Subject: subject, Expires: expires}, nil
}

// LeadingZeros is the number of leading zero bits of SHA-256(token ‖ nonce),
// the nonce as 8 bytes big-endian.
func LeadingZeros(token string, nonce uint64) int {
	h := sha256.New()
	h.Write([]byte(token))
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], nonce)
	h.Write(n[:])
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	z := 0
	for i := 0; i < len(sum); i += 8 {
		w := binary.BigEndian.Uint64(sum[i:])
		z += bits.LeadingZeros64(w)
		if w != 0 {
			break
		}
	}
	return z
}

// Solve finds the first nonce from 0 that solves token at difficulty: what
// a client does (2^difficulty hashes on average). It gives up after limit
// tries, returning false.
func Solve(token string, difficulty uint8, limit uint64) (uint64, bool) {
	for n := uint64(0); n < limit; n++ {
		if LeadingZeros(token, n) >= int(difficulty) {
			return n, true
		}
	}
	return 0, false
}

// SolveContext is Solve on every core, until ctx ends: worker i tries
// nonces i, i+workers, i+2·workers, … and the first found wins (not
// always the least).
func SolveContext(ctx context.Context, token string, difficulty uint8) (uint64, error) {
	workers := runtime.GOMAXPROCS(0)
	found := make(chan uint64, workers)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for w := range workers {
		go func() {
			for n := uint64(w); ; n += uint64(workers) {
				if n%4096 < uint64(workers) && ctx.Err() != nil {
					return
				}
				if LeadingZeros(token, n) >= int(difficulty) {
					found <- n
					return
				}
			}
		}()
	}
	select {
	case n := <-found:
		return n, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Difficulty is a challenge's difficulty for a caller who has been
// challenged over times lately: base, plus one bit for each doubling of
// over past limit (over/limit = 2 adds 2 bits, 4 adds 3, …), up to
// MaxDifficulty. A person challenged now and then solves in a moment; a
// script hammering the rule pays exponentially more.
func Difficulty(base uint8, over, limit int64) uint8 {
	d := int(base)
	if limit > 0 && over > limit {
		d += bits.Len64(uint64(over / limit))
	}
	return uint8(min(d, MaxDifficulty))
}
