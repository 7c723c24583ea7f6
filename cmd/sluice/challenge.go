package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/challenge"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// A Submit over a CHALLENGE rule is refused with a challenge. `sluice
// submit` solves a proof-of-work one by itself, says so on stderr, and
// keeps the pass the answer earns in the user's cache directory, so that
// the next commands send it instead of solving again.

// submitSolving submits req; refused with a proof-of-work challenge, it
// solves it and submits again (unless solve is false).
func submitSolving(ctx context.Context, f *clientFlags, req *sluicev1.SubmitRequest, solve bool, stderr io.Writer) (*connect.Response[sluicev1.SubmitResponse], error) {
	store := loadPasses(f.key)
	req.ChallengePasses = store.tokens(time.Now())
	solving, waits := false, 0
	for try := 0; try < 3; try++ {
		res, err := f.jobs().Submit(ctx, connect.NewRequest(req))
		if solving && connect.CodeOf(err) == connect.CodeUnavailable && waits < 10 {
			// The answer stays good until the challenge expires: a cluster
			// that cannot take it this moment (a new member, a new leader)
			// gets it again shortly.
			waits++
			try--
			time.Sleep(500 * time.Millisecond)
			continue
		}
		if err == nil {
			if p := res.Msg.GetChallengePass(); p != nil {
				store.add(p)
				if serr := store.save(); serr != nil {
					fmt.Fprintf(stderr, "admitted (the pass for rule %q could not be saved: %v)\n", p.Rule, serr)
				} else {
					fmt.Fprintf(stderr, "admitted; a pass exempts you from rule %q until %s\n", p.Rule, p.ExpiresAt.AsTime().Local().Format(time.TimeOnly))
				}
			} else if solving {
				fmt.Fprintln(stderr, "admitted")
			}
			return res, nil
		}
		if solving {
			fmt.Fprintln(stderr, "refused")
			return nil, err
		}
		var ce *connect.Error
		if errors.As(err, &ce) && ce.Code() == connect.CodeInvalidArgument && strings.HasPrefix(ce.Message(), "challenge_passes") && len(req.ChallengePasses) > 0 {
			// Saved passes this cluster does not know (its key changed): drop them.
			store.forget()
			req.ChallengePasses = nil
			continue
		}
		ch := challengeOf(err)
		if ch == nil || !solve {
			return nil, err
		}
		if ch.Kind != sluicev1.ChallengeKind_CHALLENGE_KIND_PROOF_OF_WORK {
			return nil, fmt.Errorf("%w\nrule %q asks for a CAPTCHA (verifier %s, site key %s), which the CLI cannot answer: answer it in a browser", err, ch.Rule, ch.VerifierUrl, ch.SiteKey)
		}
		fmt.Fprintf(stderr, "solving a challenge (difficulty %d)… ", ch.Difficulty)
		solveCtx, cancel := context.WithDeadline(ctx, ch.ExpiresAt.AsTime())
		nonce, serr := challenge.SolveContext(solveCtx, ch.Token, uint8(min(ch.Difficulty, challenge.MaxDifficulty)))
		cancel()
		if serr != nil {
			fmt.Fprintln(stderr, "gave up")
			return nil, fmt.Errorf("%w (solving its challenge: %v)", err, serr)
		}
		req.ChallengeAnswer = &sluicev1.ChallengeAnswer{Challenge: ch.Token, Nonce: nonce}
		if req.Spec.GetIdempotencyKey() == "" {
			// Sent again if the cluster is unavailable for a moment: the
			// same job, not a second one (nor "answered before").
			var b [12]byte
			rand.Read(b[:])
			req.Spec.IdempotencyKey = "sluice-cli-" + hex.EncodeToString(b[:])
		}
		solving = true
	}
	return nil, errors.New("submit: refused three times; giving up")
}

// solveCmd is `sluice solve-challenge`: the proof of work for a client that
// is not this CLI (curl, a script), from the Sluice-Challenge headers.
func solveCmd() *cobra.Command {
	var difficulty uint8
	c := &cobra.Command{
		Use:   "solve-challenge TOKEN --difficulty N",
		Short: "Print the nonce that answers a proof-of-work challenge (the Sluice-Challenge and Sluice-Challenge-Difficulty headers)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if difficulty > challenge.MaxDifficulty {
				return fmt.Errorf("--difficulty: %d exceeds %d", difficulty, challenge.MaxDifficulty)
			}
			n, err := challenge.SolveContext(c.Context(), args[0], difficulty)
			if err != nil {
				return err
			}
			fmt.Println(n)
			return nil
		},
	}
	c.Flags().Uint8Var(&difficulty, "difficulty", 0, "leading zero bits the answer needs (required)")
	_ = c.MarkFlagRequired("difficulty")
	return c
}

// challengeOf is the challenge a refusal carries, or nil.
func challengeOf(err error) *sluicev1.Challenge {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return nil
	}
	for _, d := range ce.Details() {
		if v, _ := d.Value(); v != nil {
			if ch, ok := v.(*sluicev1.Challenge); ok {
				return ch
			}
		}
	}
	return nil
}

// passStore is the passes saved for one API key, in
// $XDG_CACHE_HOME/sluice/passes.json (0600), which holds every key's (by
// the key's SHA-256, never the key). They are not kept per server: a pass
// is good on every node of the cluster that signed it, and another
// cluster refuses it (submitSolving then forgets the key's passes).
type passStore struct {
	path  string
	owner string // key hash
	all   []savedPass
}

type savedPass struct {
	Owner   string    `json:"owner"`
	Rule    string    `json:"rule"`
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
}

func loadPasses(key string) *passStore {
	sum := sha256.Sum256([]byte(key))
	s := &passStore{owner: hex.EncodeToString(sum[:8])}
	dir, err := os.UserCacheDir()
	if err != nil {
		return s // nowhere to keep them: solve each time
	}
	s.path = filepath.Join(dir, "sluice", "passes.json")
	if b, err := os.ReadFile(s.path); err == nil {
		_ = json.Unmarshal(b, &s.all) // a damaged file is a file of no passes
	}
	now := time.Now()
	s.all = slices.DeleteFunc(s.all, func(p savedPass) bool { return !p.Expires.After(now) })
	return s
}

// tokens are the owner's passes valid at now.
func (s *passStore) tokens(now time.Time) []string {
	var out []string
	for _, p := range s.all {
		if p.Owner == s.owner && p.Expires.After(now) {
			out = append(out, p.Token)
		}
	}
	return out
}

func (s *passStore) add(p *sluicev1.ChallengePass) {
	s.all = slices.DeleteFunc(s.all, func(q savedPass) bool { return q.Owner == s.owner && q.Rule == p.Rule })
	s.all = append(s.all, savedPass{Owner: s.owner, Rule: p.Rule, Token: p.Token, Expires: p.ExpiresAt.AsTime()})
}

func (s *passStore) forget() {
	s.all = slices.DeleteFunc(s.all, func(q savedPass) bool { return q.Owner == s.owner })
	_ = s.save()
}

func (s *passStore) save() error {
	if s.path == "" {
		return errors.New("no cache directory")
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(s.all, "", "  ")
	if err != nil {
		return err
	}
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.path)
}
