package challenge

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

var (
	key   = Key("0123456789abcdef0123456789abcdef")
	other = Key("fedcba9876543210fedcba9876543210")
	t0    = time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC).UnixNano()
)

func issue(t testing.TB, d uint8) (Challenge, string) {
	c := Challenge{Rule: "burst", Subject: "tenant:alice", Difficulty: d, Expires: t0 + int64(time.Minute)}
	if _, err := rand.Read(c.ID[:]); err != nil {
		t.Fatal(err)
	}
	return c, key.Token(c)
}

func TestASolutionVerifiesAndNothingElseDoes(t *testing.T) {
	c, tok := issue(t, 12)
	nonce, ok := Solve(tok, c.Difficulty, 1<<24)
	if !ok {
		t.Fatal("no solution of difficulty 12 in 2^24 tries")
	}
	got, err := key.Verify(tok, nonce, "burst", "tenant:alice", t0)
	if err != nil || got.ID != c.ID || got.Difficulty != 12 {
		t.Fatalf("the solution: %v (%+v)", err, got)
	}
	// A nonce that does not reach the difficulty.
	bad := nonce + 1
	for LeadingZeros(tok, bad) >= 12 {
		bad++
	}
	forged := tok[:len(tok)-2] + map[bool]string{true: "AA", false: "AB"}[strings.HasSuffix(tok, "AB")]
	for _, c2 := range []struct {
		what, token, rule, subject string
		nonce                      uint64
		at                         int64
		want                       error
	}{
		{"a wrong nonce", tok, "burst", "tenant:alice", bad, t0, ErrWork},
		{"expired", tok, "burst", "tenant:alice", nonce, t0 + int64(time.Minute), ErrExpired},
		{"another tenant", tok, "burst", "tenant:bob", nonce, t0, ErrSubject},
		{"another rule", tok, "daily", "tenant:alice", nonce, t0, ErrRule},
		{"a forged signature", forged, "burst", "tenant:alice", nonce, t0, ErrForged},
		{"another cluster's key", other.Token(c), "burst", "tenant:alice", nonce, t0, ErrForged},
		{"garbage", "c1.!!!", "burst", "tenant:alice", nonce, t0, ErrMalformed},
		{"a pass as a challenge", key.PassToken(Pass{Rule: "burst", Subject: "tenant:alice", Expires: t0 + 1}), "burst", "tenant:alice", nonce, t0, ErrMalformed},
	} {
		if _, err := key.Verify(c2.token, c2.nonce, c2.rule, c2.subject, c2.at); !errors.Is(err, c2.want) {
			t.Errorf("%s: %v, want %v", c2.what, err, c2.want)
		}
	}
}

func TestAPassExemptsItsHolderUntilItExpires(t *testing.T) {
	p := Pass{Rule: "burst", Subject: "ip:203.0.113.9", Expires: t0 + int64(10*time.Minute)}
	tok := key.PassToken(p)
	if got, err := key.VerifyPass(tok, "burst", "ip:203.0.113.9", t0); err != nil || got != p {
		t.Fatalf("a fresh pass: %v (%+v)", err, got)
	}
	for _, c := range []struct {
		what, token, rule, subject string
		at                         int64
		want                       error
	}{
		{"expired", tok, "burst", "ip:203.0.113.9", p.Expires, ErrExpired},
		{"another IP", tok, "burst", "ip:203.0.113.10", t0, ErrSubject},
		{"another rule", tok, "daily", "ip:203.0.113.9", t0, ErrRule},
		{"another cluster's key", other.PassToken(p), "burst", "ip:203.0.113.9", t0, ErrForged},
		{"a challenge as a pass", key.Token(Challenge{Rule: "burst", Subject: "ip:203.0.113.9", Expires: p.Expires}), "burst", "ip:203.0.113.9", t0, ErrMalformed},
	} {
		if _, err := key.VerifyPass(c.token, c.rule, c.subject, c.at); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.what, err, c.want)
		}
	}
}

// Any change to a token's bytes is refused; tokens round-trip whatever the
// rule and subject hold.
func TestTokensRoundTripAndRefuseEveryChange(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := Challenge{Rule: rapid.String().Draw(t, "rule"), Subject: rapid.String().Draw(t, "subject"),
			Difficulty: rapid.Uint8Range(0, MaxDifficulty).Draw(t, "d"), Expires: rapid.Int64().Draw(t, "exp")}
		copy(c.ID[:], rapid.SliceOfN(rapid.Byte(), IDLen, IDLen).Draw(t, "id"))
		tok := key.Token(c)
		if got, err := key.Open(tok); err != nil || got != c {
			t.Fatalf("round trip: %v (%+v, want %+v)", err, got, c)
		}
		raw, _ := b64.DecodeString(strings.TrimPrefix(tok, challengePrefix))
		i := rapid.IntRange(0, len(raw)-1).Draw(t, "byte")
		raw[i] ^= byte(rapid.IntRange(1, 255).Draw(t, "flip"))
		if _, err := key.Open(challengePrefix + b64.EncodeToString(raw)); err == nil {
			t.Fatalf("a token with byte %d changed was accepted", i)
		}
	})
}

func TestDifficultyRisesWithHowFarOver(t *testing.T) {
	for _, c := range []struct {
		base        uint8
		over, limit int64
		want        uint8
	}{
		{16, 1, 10, 16}, {16, 10, 10, 16}, {16, 20, 10, 18}, {16, 100, 10, 20}, {16, 1 << 40, 1, MaxDifficulty}, {8, 5, 0, 8},
	} {
		if got := Difficulty(c.base, c.over, c.limit); got != c.want {
			t.Errorf("Difficulty(%d, %d over a limit of %d) = %d, want %d", c.base, c.over, c.limit, got, c.want)
		}
	}
}

// Verifying a solution and a pass is on the Submit path (issue 26: under
// 5 µs each; bench/README.md).
func BenchmarkVerify(b *testing.B) {
	c, tok := issue(b, 12)
	nonce, _ := Solve(tok, c.Difficulty, 1<<24)
	b.Run("solution", func(b *testing.B) {
		for b.Loop() {
			if _, err := key.Verify(tok, nonce, "burst", "tenant:alice", t0); err != nil {
				b.Fatal(err)
			}
		}
	})
	pass := key.PassToken(Pass{Rule: "burst", Subject: "tenant:alice", Expires: t0 + 1})
	b.Run("pass", func(b *testing.B) {
		for b.Loop() {
			if _, err := key.VerifyPass(pass, "burst", "tenant:alice", t0); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestSolveContextSolvesAndStops(t *testing.T) {
	token := "c1.any-token"
	n, err := SolveContext(context.Background(), token, 12)
	if err != nil || LeadingZeros(token, n) < 12 {
		t.Fatalf("nonce %d (%d zero bits), %v", n, LeadingZeros(token, n), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := SolveContext(ctx, token, MaxDifficulty+1); err == nil {
		t.Fatal("an unsolvable challenge was solved")
	}
}
