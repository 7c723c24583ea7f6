package node

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/fsm"
	"github.com/sluicehq/sluice/policy"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

const testWebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// hookCall is one request a test receiver got.
type hookCall struct {
	at              time.Time
	id, ts, sig     string
	body            []byte
	typ, job, state string
}

// hookReceiver records what it is sent and answers with answer(n), n the
// call's number from 1.
type hookReceiver struct {
	mu     sync.Mutex
	calls  []hookCall
	answer func(n int, w http.ResponseWriter, r *http.Request)
	srv    *httptest.Server
}

func newHookReceiver(t *testing.T, answer func(n int, w http.ResponseWriter, r *http.Request)) *hookReceiver {
	h := &hookReceiver{answer: answer}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var env struct {
			Type string `json:"type"`
			Data struct {
				ID    string `json:"id"`
				State string `json:"state"`
			} `json:"data"`
		}
		_ = json.Unmarshal(body, &env)
		h.mu.Lock()
		h.calls = append(h.calls, hookCall{at: time.Now(), id: r.Header.Get("webhook-id"), ts: r.Header.Get("webhook-timestamp"),
			sig: r.Header.Get("webhook-signature"), body: body, typ: env.Type, job: env.Data.ID, state: env.Data.State})
		n := len(h.calls)
		h.mu.Unlock()
		if h.answer != nil {
			h.answer(n, w, r)
		}
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hookReceiver) got() []hookCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hookCall(nil), h.calls...)
}

// verifyHook checks a delivery's signature as a receiver would, with the
// Standard Webhooks scheme and nothing from Sluice.
func verifyHook(secret string, c hookCall) bool {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(c.id + "." + c.ts + "."))
	mac.Write(c.body)
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	for _, s := range strings.Fields(c.sig) {
		if hmac.Equal([]byte(s), []byte(want)) {
			return true
		}
	}
	return false
}

func webhookTestPolicy(schedule ...time.Duration) *sluicev1.Policy {
	p := DemoPolicy()
	p.Rules = nil
	for _, tn := range p.Tenants {
		tn.WebhookSecrets = []string{testWebhookSecret}
	}
	p.Webhooks = &sluicev1.WebhookSettings{AllowHttp: true, AllowPrivate: true, Timeout: durationpb.New(300 * time.Millisecond)}
	for _, d := range schedule {
		p.Webhooks.RetrySchedule = append(p.Webhooks.RetrySchedule, durationpb.New(d))
	}
	return p
}

func TestWebhooksAreSignedAndDelivered(t *testing.T) {
	recv := newHookReceiver(t, nil)
	n := startNodeWith(t, 2, webhookTestPolicy())
	c := jobClient(n, DemoAliceKey)
	ctx := context.Background()
	res, err := c.Submit(ctx, connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "llama-8b",
		Webhook: &sluicev1.Webhook{Url: recv.srv.URL + "/hook", Events: []string{"queued", "started", "completed"}}}}))
	if err != nil {
		t.Fatal(err)
	}
	id := res.Msg.Job.Id
	waitFor(t, "three deliveries", func() bool {
		j, err := c.GetJob(ctx, connect.NewRequest(&sluicev1.GetJobRequest{Id: id}))
		if err != nil || len(j.Msg.Job.Webhooks) != 3 {
			return false
		}
		for _, d := range j.Msg.Job.Webhooks {
			if d.State != fsm.DeliveryDelivered {
				return false
			}
		}
		return true
	})
	calls := recv.got()
	seen := map[string]string{}
	for _, call := range calls {
		if !verifyHook(testWebhookSecret, call) {
			t.Fatalf("signature %q does not verify for %s", call.sig, call.id)
		}
		if ts, _ := strconv.ParseInt(call.ts, 10, 64); time.Since(time.Unix(ts, 0)) > time.Minute {
			t.Fatalf("webhook-timestamp %s", call.ts)
		}
		if call.job != id {
			t.Fatalf("delivery %s carries job %q, want %s", call.id, call.job, id)
		}
		seen[call.typ] = call.id
	}
	if len(seen) != 3 || seen[policy.EventCompleted] == "" || seen[policy.EventQueued] == seen[policy.EventCompleted] {
		t.Fatalf("events %v", seen)
	}

	// Bad input: a URL the policy does not allow, events that do not exist,
	// a tenant without a secret.
	p := webhookTestPolicy()
	p.Webhooks.AllowHttp, p.Webhooks.AllowPrivate = false, false
	p.Tenants[1].WebhookSecrets = nil
	if _, err := adminClient(n).SetPolicy(ctx, connect.NewRequest(&sluicev1.SetPolicyRequest{Policy: p})); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key  string
		hook *sluicev1.Webhook
		code connect.Code
		want string
	}{
		{DemoAliceKey, &sluicev1.Webhook{Url: recv.srv.URL}, connect.CodeInvalidArgument, "spec.webhook.url"},
		{DemoAliceKey, &sluicev1.Webhook{Url: "https://169.254.169.254/latest/meta-data"}, connect.CodeInvalidArgument, "link-local"},
		{DemoAliceKey, &sluicev1.Webhook{Url: "https://example.com/x", Events: []string{"finished"}}, connect.CodeInvalidArgument, "spec.webhook.events[0]"},
		{DemoAliceKey, &sluicev1.Webhook{Url: "ftp://example.com/x"}, connect.CodeInvalidArgument, "must be an https URL"},
		{DemoBobKey, &sluicev1.Webhook{Url: "https://203.0.113.9/x"}, connect.CodeFailedPrecondition, "no webhook_secrets"},
	} {
		_, err := jobClient(n, tc.key).Submit(ctx, connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "sdxl", Webhook: tc.hook}}))
		if connect.CodeOf(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("webhook %v: %v, want %v containing %q", tc.hook, err, tc.code, tc.want)
		}
	}
}

// A receiver that answers 500, then hangs past the timeout, then 410:
// attempts follow the retry schedule, the hang is cut at the timeout, and
// the 410 disables the endpoint for the tenant's later deliveries.
func TestWebhookRetriesTimeoutAndGone(t *testing.T) {
	hang := make(chan struct{})
	defer close(hang)
	recv := newHookReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		switch n {
		case 1:
			w.WriteHeader(http.StatusInternalServerError)
		case 2:
			select {
			case <-hang:
			case <-r.Context().Done():
			}
		default:
			w.WriteHeader(http.StatusGone)
		}
	})
	schedule := []time.Duration{500 * time.Millisecond, time.Second, time.Hour}
	n := startNodeWith(t, 1, webhookTestPolicy(schedule...))
	c := jobClient(n, DemoAliceKey)
	ctx := context.Background()
	submit := func() string {
		res, err := c.Submit(ctx, connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "llama-8b",
			Webhook: &sluicev1.Webhook{Url: recv.srv.URL}}}))
		if err != nil {
			t.Fatal(err)
		}
		return res.Msg.Job.Id
	}
	id := submit()
	delivery := func(id string) *sluicev1.WebhookDelivery {
		j, err := c.GetJob(ctx, connect.NewRequest(&sluicev1.GetJobRequest{Id: id}))
		if err != nil || len(j.Msg.Job.Webhooks) == 0 {
			return nil
		}
		return j.Msg.Job.Webhooks[0]
	}
	waitFor(t, "the endpoint disabled", func() bool { d := delivery(id); return d != nil && d.State == fsm.DeliveryDisabled })
	calls := recv.got()
	if len(calls) != 3 {
		t.Fatalf("%d calls, want 3", len(calls))
	}
	for i := 1; i < 3; i++ {
		if calls[i].id != calls[0].id {
			t.Fatalf("attempt %d has webhook-id %s, the first %s", i+1, calls[i].id, calls[0].id)
		}
	}
	// The second attempt waits out the first gap; the third the second gap
	// plus the hang, which the timeout (300ms) cuts.
	if gap := calls[1].at.Sub(calls[0].at); gap < schedule[0] {
		t.Fatalf("second attempt %v after the first, schedule says %v", gap, schedule[0])
	}
	gap := calls[2].at.Sub(calls[1].at)
	if gap < schedule[1]+300*time.Millisecond || gap > schedule[1]+300*time.Millisecond+5*time.Second {
		t.Fatalf("third attempt %v after the second, want %v plus the 300ms timeout", gap, schedule[1])
	}
	d := delivery(id)
	if d.Attempts != 3 || d.LastStatus != http.StatusGone {
		t.Fatalf("delivery %+v", d)
	}
	// The next job's delivery to the same endpoint is disabled without a call.
	id2 := submit()
	waitFor(t, "the second job's delivery recorded", func() bool { d := delivery(id2); return d != nil })
	if d := delivery(id2); d.State != fsm.DeliveryDisabled || d.Attempts != 0 {
		t.Fatalf("a delivery to a gone endpoint: %+v", d)
	}
	if len(recv.got()) != 3 {
		t.Fatalf("the gone endpoint was called again")
	}
}

// A receiver that never answers holds only its own tenant's deliveries, at
// most max_in_flight_per_tenant at once: another tenant's go out meanwhile.
func TestSlowReceiverHoldsBackOnlyItsTenant(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	open, most := 0, 0
	slow := newHookReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		open++
		most = max(most, open)
		mu.Unlock()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		mu.Lock()
		open--
		mu.Unlock()
	})
	defer close(release)
	fast := newHookReceiver(t, nil)
	p := webhookTestPolicy(time.Hour)
	p.Webhooks.Timeout = durationpb.New(20 * time.Second)
	p.Webhooks.MaxInFlightPerTenant = 2
	n := startNodeWith(t, 2, p)
	ctx := context.Background()
	for range 5 {
		if _, err := jobClient(n, DemoAliceKey).Submit(ctx, connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "llama-8b",
			Webhook: &sluicev1.Webhook{Url: slow.srv.URL}}})); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "two of alice's deliveries hanging", func() bool { return len(slow.got()) >= 2 })
	res, err := jobClient(n, DemoBobKey).Submit(ctx, connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "llama-8b",
		Webhook: &sluicev1.Webhook{Url: fast.srv.URL}}}))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob's delivery", func() bool { return len(fast.got()) == 1 })
	if got := fast.got()[0].job; got != res.Msg.Job.Id {
		t.Fatalf("bob's receiver got job %s", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if most != 2 || len(slow.got()) != 2 {
		t.Fatalf("alice's receiver had %d calls open at most and %d in all; max_in_flight_per_tenant is 2", most, len(slow.got()))
	}
}
