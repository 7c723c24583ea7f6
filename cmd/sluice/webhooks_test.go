package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

const procWebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// webhookPolicy is failoverPolicy with bob's webhooks signed, a receiver on
// this machine allowed, and a quick retry schedule.
const webhookPolicy = `
tiers: [{name: pro, weight: 1}]
tenants: [{name: bob, tier: pro, api_key_sha256: ["%s"], webhook_secrets: ["` + procWebhookSecret + `"]}]
models: [{name: llama-8b, default_duration: 100ms}]
admin_token_sha256: "%s"
executor_token_sha256: "%s"
defaults: {max_attempts: 20, retry_backoff: 50ms, max_backoff: 500ms}
webhooks: {allow_http: true, allow_private: true, retry_schedule: [200ms, 500ms, 1s, 1s, 2s, 2s, 2s, 2s], timeout: 2s}
`

// hookLog is what a webhook receiver got: every call, verified.
type hookLog struct {
	mu    sync.Mutex
	calls int
	bad   []string            // calls whose signature did not verify
	byID  map[string][]string // webhook-id → "type job" of each call
	jobs  map[string]string   // job id → its completed event's webhook-id
	// While holding, a call is recorded but not answered until release is
	// closed: the receiver has the event, the sender does not know it.
	holding bool
	held    int
	release chan struct{}
}

func (h *hookLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	id, ts, sig := r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp"), r.Header.Get("webhook-signature")
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(procWebhookSecret, "whsec_"))
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	ok := sig == "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil))
	var env struct {
		Type string `json:"type"`
		Data struct {
			ID    string `json:"id"`
			State string `json:"state"`
		} `json:"data"`
	}
	_ = json.Unmarshal(body, &env)
	h.mu.Lock()
	h.calls++
	if !ok {
		h.bad = append(h.bad, id)
	}
	h.byID[id] = append(h.byID[id], env.Type+" "+env.Data.ID)
	if env.Type == "job.completed" {
		h.jobs[env.Data.ID] = id
	}
	hold := h.holding
	if hold {
		h.held++
	}
	h.mu.Unlock()
	if hold {
		select {
		case <-h.release:
		case <-r.Context().Done():
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *hookLog) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls
}

// TestWebhooksSurviveALeaderKill: jobs with webhooks on a 3-node cluster,
// the leader killed (-9) while it is sending their deliveries. Every job
// completes and its completion event arrives, signed; a delivery sent twice
// (the old leader sent it, the new one did not know) carries the same
// webhook-id both times.
func TestWebhooksSurviveALeaderKill(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three server processes")
	}
	hooks := &hookLog{byID: map[string][]string{}, jobs: map[string]string{}, release: make(chan struct{})}
	recv := httptest.NewServer(hooks)
	defer recv.Close()
	bin := buildSluice(t)
	cl := startProcClusterWith(t, bin, 3, webhookPolicy, func(int) []string {
		return []string{"--executors", "2", "--executor-token", "exec", "--lease-grace", "1s"}
	})
	const n = 40
	ctx := context.Background()
	input, _ := structpb.NewStruct(map[string]any{"duration_ms": 50})
	// submit retries through each node in turn (with the same idempotency
	// key) until one answers OK.
	submit := func(i int) string {
		for try := 0; ; try++ {
			u := cl.urls[try%len(cl.urls)]
			res, err := cl.jobs(u).Submit(ctx, connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{
				Model: "llama-8b", IdempotencyKey: fmt.Sprintf("hook-%d", i),
				Input:   input,
				Webhook: &sluicev1.Webhook{Url: recv.URL + "/hook", Events: []string{"started", "completed"}}}}))
			if err == nil {
				return res.Msg.Job.Id
			}
			if try > 200 {
				t.Fatalf("submit %d: %v", i, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	ids := make([]string, 0, n)
	for i := range n / 2 {
		ids = append(ids, submit(i))
	}
	waitFor(t, "deliveries under way", func() bool { return hooks.count() >= 10 })
	// Hold the next deliveries unanswered, and kill the leader with some
	// of them in flight: the receiver has them, the log does not.
	hooks.mu.Lock()
	hooks.holding = true
	hooks.mu.Unlock()
	waitFor(t, "deliveries held", func() bool { hooks.mu.Lock(); defer hooks.mu.Unlock(); return hooks.held >= 2 })
	old := cl.waitLeader(nil)
	old.kill()
	hooks.mu.Lock()
	hooks.holding = false
	held := hooks.held
	hooks.mu.Unlock()
	close(hooks.release)
	for i := n / 2; i < n; i++ {
		ids = append(ids, submit(i))
	}
	cl.waitLeader(old)
	waitUpTo(90*time.Second, func() bool {
		hooks.mu.Lock()
		defer hooks.mu.Unlock()
		for _, id := range ids {
			if hooks.jobs[id] == "" {
				return false
			}
		}
		return true
	})
	hooks.mu.Lock()
	defer hooks.mu.Unlock()
	var missing []string
	for _, id := range ids {
		if hooks.jobs[id] == "" {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("no completion event for jobs %v (of %d)", missing, n)
	}
	if len(hooks.bad) > 0 {
		t.Fatalf("signatures that do not verify: %v", hooks.bad)
	}
	dups := 0
	for id, calls := range hooks.byID {
		for _, c := range calls[1:] {
			if c != calls[0] {
				t.Fatalf("webhook-id %s carried %q and %q", id, calls[0], c)
			}
		}
		dups += len(calls) - 1
	}
	if dups < held {
		t.Fatalf("%d deliveries were in flight when the leader died, %d came again", held, dups)
	}
	t.Logf("%d jobs, %d calls, %d deliveries, %d in flight at the kill of %s, %d sent again", n, hooks.calls, len(hooks.byID), held, old.id, dups)
}
