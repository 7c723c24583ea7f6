package node

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/sluicehq/sluice/challenge"
	"github.com/sluicehq/sluice/fsm"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// BenchmarkVerifyChallenges is what a Submit that carries an answer, or a
// pass, costs its leader before the log (verifyChallenges: the key and the
// rule from the state machine, the token's signature, binding, expiry and,
// for an answer, its proof of work). Issue 26 asks under 5 µs for each.
func BenchmarkVerifyChallenges(b *testing.B) {
	f := fsm.New()
	key := bytes.Repeat([]byte{9}, fsm.ChallengeKeyLen)
	if r := f.Apply(1, fsm.MustEncode(fsm.CmdSetPolicy, 1, &raftv1.SetPolicy{Policy: humanPolicy(&sluicev1.ChallengeSettings{Difficulty: 8}), ChallengeKey: key})); r.Err != nil {
		b.Fatal(r.Err)
	}
	n := wire(&Node{fsm: newState(f)})
	alice, _ := f.Reads().Tenant("alice")
	k := challenge.Key(key)
	expires := time.Now().Add(time.Hour).UnixNano()
	c := challenge.Challenge{Rule: "human", Subject: "tenant:alice", Difficulty: 8, Expires: expires}
	token := k.Token(c)
	nonce, _ := challenge.Solve(token, 8, 1<<20)
	pass := k.PassToken(challenge.Pass{Rule: "human", Subject: "tenant:alice", Expires: expires})
	for _, bc := range []struct {
		name   string
		answer *sluicev1.ChallengeAnswer
		passes []string
	}{
		{"answer", &sluicev1.ChallengeAnswer{Challenge: token, Nonce: nonce}, nil},
		{"pass", nil, []string{pass}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sub := submission{tenant: alice, clientIP: "192.0.2.1", answer: bc.answer, passes: bc.passes}
				if err := n.chall.verifyChallenges(context.Background(), &sub); err != nil || len(sub.exempt) != 1 {
					b.Fatalf("%v, exempt %v", err, sub.exempt)
				}
			}
		})
	}
}
