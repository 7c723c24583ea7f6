package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/sluicehq/sluice/challenge"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// challengePolicy: bob may Submit twice an hour, then is challenged (proof
// of work, difficulty 12, a pass for 10 minutes).
const challengePolicy = `
tiers: [{name: pro, weight: 1}]
tenants: [{name: bob, tier: pro, api_key_sha256: ["%s"]}]
models: [{name: llama-8b, default_duration: 100ms}]
admin_token_sha256: "%s"
executor_token_sha256: "%s"
rules: [{name: human, action: OVER_LIMIT_ACTION_CHALLENGE, challenge: {difficulty: 12, pass_ttl: 10m},
  token_bucket: {count: 1, per: 1h, burst: 2}}]
`

// TestChallengePassOutlivesTheLeader: on a 3-process cluster, `sluice
// submit` over the CHALLENGE rule solves the challenge by itself, says so,
// and keeps the pass; the leader is killed; on the new leader the saved
// pass admits without a challenge (the key that signed it is replicated),
// and the answer the CLI sent is refused when sent again (the spent set is
// replicated too).
func TestChallengePassOutlivesTheLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three server processes")
	}
	bin := buildSluice(t)
	cl := startProcClusterWith(t, bin, 3, challengePolicy, func(int) []string { return nil })
	cache := t.TempDir()
	submit := func(url string, args ...string) (string, error) {
		cmd := exec.Command(bin, append([]string{"submit", "--model", "llama-8b", "--addr", url, "--key", "bob-key"}, args...)...)
		cmd.Env = append(os.Environ(), "XDG_CACHE_HOME="+cache)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for i := range 2 {
		if out, err := submit(cl.urls[i]); err != nil || strings.Contains(out, "solving") {
			t.Fatalf("submit %d: %v\n%s", i+1, err, out)
		}
	}
	if out, err := submit(cl.urls[1], "--no-solve"); err == nil || !strings.Contains(out, `resource_exhausted: rate limited by rule "human"`) ||
		!strings.Contains(out, "answer the challenge (proof of work, difficulty 12) to go on") {
		t.Fatalf("over the rule with --no-solve: %v\n%s", err, out)
	}
	out, err := submit(cl.urls[2])
	if err != nil || !regexp.MustCompile(`solving a challenge \(difficulty 1[2-9]\)… admitted; a pass exempts you from rule "human" until`).MatchString(out) ||
		!strings.Contains(out, "submitted") {
		t.Fatalf("over the rule: %v\n%s", err, out)
	}
	t.Logf("sluice submit over the rule:\n%s", out)
	saved, err := os.ReadFile(filepath.Join(cache, "sluice", "passes.json"))
	if err != nil || !strings.Contains(string(saved), `"rule": "human"`) {
		t.Fatalf("the saved pass: %v\n%s", err, saved)
	}
	// The answer the CLI sent, captured by solving a fresh challenge here
	// the same way, is spent before the kill and refused after it.
	ctx := context.Background()
	_, cerr := cl.jobs(cl.urls[0]).Submit(ctx, connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "llama-8b"}}))
	ch := challengeOf(cerr)
	if ch == nil {
		t.Fatalf("want a challenge, got %v", cerr)
	}
	nonce, _ := challenge.Solve(ch.Token, uint8(ch.Difficulty), 1<<30)
	answer := &sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "llama-8b"}, ChallengeAnswer: &sluicev1.ChallengeAnswer{Challenge: ch.Token, Nonce: nonce}}
	if _, err := cl.jobs(cl.urls[0]).Submit(ctx, connect.NewRequest(answer)); err != nil {
		t.Fatalf("a solved challenge: %v", err)
	}
	old := cl.waitLeader(nil)
	old.kill()
	cl.waitLeader(old)
	// Through a node the pass was not issued through (saved passes are not
	// kept per server): the first survivor, never urls[2].
	var live string
	for _, s := range cl.servers {
		if s != old && live == "" {
			live = s.url()
		}
	}
	out, err = submit(live)
	if err != nil || strings.Contains(out, "solving") {
		t.Fatalf("with the saved pass after the leader died: %v\n%s", err, out)
	}
	_, err = cl.jobs(live).Submit(ctx, connect.NewRequest(answer))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "answered before") {
		t.Fatalf("the same answer after the leader died: %v", err)
	}
	old.start(t, bin)
	cl.caughtUp(old)
	cl.sameState()
}
