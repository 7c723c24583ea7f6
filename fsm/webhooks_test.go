package fsm

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/policy"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func webhookPolicy() *sluicev1.Policy {
	p := testPolicy()
	p.Tenants[0].WebhookSecrets = []string{testSecret}
	p.Tenants[1].WebhookSecrets = []string{testSecret}
	p.Tenants[1].Webhook = &sluicev1.Webhook{Url: "https://bob.example/hook"}
	p.Webhooks = &sluicev1.WebhookSettings{RetrySchedule: []*durationpb.Duration{durationpb.New(time.Second), durationpb.New(time.Minute)}}
	return p
}

func deliveries(t *testing.T, m *machine, id uint64) []*raftv1.Delivery {
	t.Helper()
	j, ok := m.f.Reads().Job(id)
	if !ok {
		t.Fatalf("job %d missing", id)
	}
	return j.Deliveries
}

func result(m *machine, now int64, id uint64, seq, attempt, status int32) Result {
	return m.apply(CmdWebhookResult, now, &raftv1.WebhookResult{JobId: id, Seq: seq, Attempt: attempt, Status: status, Error: strings.Repeat("x", 300)})
}

func TestWebhookDeliveriesFollowTheJob(t *testing.T) {
	m := limitedMachine(t, webhookPolicy())
	hook := &sluicev1.Webhook{Url: "https://alice.example/hook", Events: []string{"queued", "started", "completed"}}
	id := m.submit(t, sec, "alice", &sluicev1.JobSpec{Model: "sdxl", Webhook: hook})
	for _, a := range m.f.Dispatch(2*sec, oneGPU("e1")) {
		m.apply(CmdAssign, 2*sec, a)
	}
	m.apply(CmdComplete, 3*sec, &raftv1.Complete{JobId: id, Attempt: 1})
	ds := deliveries(t, m, id)
	var events []string
	for i, d := range ds {
		events = append(events, d.Event)
		if d.Seq != int32(i+1) || d.State != DeliveryPending || d.Url != hook.Url || d.NextNs != d.CreatedNs {
			t.Fatalf("delivery %d: %+v", i, d)
		}
	}
	if strings.Join(events, ",") != "job.queued,job.started,job.completed" {
		t.Fatalf("events %v", events)
	}
	if got := m.f.Reads().PendingDeliveries(nil); len(got) != 3 || got[0].ID() != DeliveryID(id, got[0].Seq) {
		t.Fatalf("pending %+v", got)
	}

	// Delivered on the first attempt; a second report of it is stale.
	if r := result(m, 4*sec, id, 1, 1, 204); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := result(m, 4*sec, id, 1, 1, 204); !errors.Is(r.Err, ErrStale) {
		t.Fatalf("a repeated result: %v", r.Err)
	}
	// The second fails twice (retried after 1s, then 1m), then runs out.
	result(m, 5*sec, id, 2, 1, 500)
	if d := deliveries(t, m, id)[1]; d.State != DeliveryPending || d.NextNs != 6*sec || d.Attempts != 1 || len(d.LastError) != maxDeliveryError {
		t.Fatalf("after one failure: %+v", d)
	}
	result(m, 6*sec, id, 2, 2, 0)
	if d := deliveries(t, m, id)[1]; d.NextNs != 6*sec+int64(time.Minute) {
		t.Fatalf("after two failures: %+v", d)
	}
	result(m, 70*sec, id, 2, 3, 503)
	if d := deliveries(t, m, id)[1]; d.State != DeliveryFailed || d.Attempts != 3 {
		t.Fatalf("after the schedule ran out: %+v", d)
	}
	// The third is still pending, and survives a snapshot.
	restored := New()
	if err := restored.Restore(m.f.Snapshot()); err != nil {
		t.Fatal(err)
	}
	if got := restored.Reads().PendingDeliveries(nil); len(got) != 1 || got[0].Seq != 3 || got[0].Attempt != 1 {
		t.Fatalf("pending after a restore: %+v", got)
	}
}

func TestWebhookGoneDisablesTheEndpoint(t *testing.T) {
	m := limitedMachine(t, webhookPolicy())
	// Bob's default webhook sends completions only.
	a := m.submit(t, sec, "bob", &sluicev1.JobSpec{Model: "sdxl"})
	b := m.submit(t, sec, "bob", &sluicev1.JobSpec{Model: "sdxl"})
	if len(deliveries(t, m, a)) != 0 {
		t.Fatal("a queued event was sent without being asked for")
	}
	m.apply(CmdCancel, 2*sec, &raftv1.Cancel{JobId: a, Tenant: "bob"})
	m.apply(CmdCancel, 2*sec, &raftv1.Cancel{JobId: b, Tenant: "bob"})
	if len(m.f.Reads().PendingDeliveries(nil)) != 2 {
		t.Fatalf("pending %+v", m.f.Reads().PendingDeliveries(nil))
	}
	result(m, 3*sec, a, 1, 1, 410)
	for _, id := range []uint64{a, b} {
		if d := deliveries(t, m, id)[0]; d.State != DeliveryDisabled {
			t.Fatalf("job %d after a 410: %+v", id, d)
		}
	}
	if n := len(m.f.Reads().PendingDeliveries(nil)); n != 0 {
		t.Fatalf("%d still pending", n)
	}
	// A later job's event to the same endpoint is recorded disabled, and the
	// disable survives a snapshot.
	c := m.submit(t, 4*sec, "bob", &sluicev1.JobSpec{Model: "sdxl"})
	snap := m.f.Snapshot()
	restored := &machine{f: New(), index: m.index}
	if err := restored.f.Restore(snap); err != nil {
		t.Fatal(err)
	}
	for _, x := range []*machine{m, restored} {
		x.apply(CmdCancel, 5*sec, &raftv1.Cancel{JobId: c, Tenant: "bob"})
		if d := deliveries(t, x, c)[0]; d.State != DeliveryDisabled {
			t.Fatalf("a new delivery to a gone endpoint: %+v", d)
		}
	}
	if !bytes.Equal(m.f.Snapshot(), restored.f.Snapshot()) {
		t.Fatal("the restored replica differs")
	}
}

func TestWebhookPolicyValidation(t *testing.T) {
	for _, tc := range []struct {
		edit func(*sluicev1.Policy)
		want string
	}{
		{func(p *sluicev1.Policy) { p.Tenants[0].WebhookSecrets = []string{"secret"} }, "tenants[0].webhook_secrets[0]: must start with"},
		{func(p *sluicev1.Policy) { p.Tenants[0].WebhookSecrets = []string{"whsec_abc"} }, "tenants[0].webhook_secrets[0]:"},
		{func(p *sluicev1.Policy) { p.Tenants[1].WebhookSecrets = nil }, "tenants[1].webhook_secrets: the tenant has a webhook but no secret"},
		{func(p *sluicev1.Policy) { p.Tenants[1].Webhook.Url = "http://bob.example/" }, "tenants[1].webhook.url: \"http://bob.example/\": http is not allowed"},
		{func(p *sluicev1.Policy) { p.Tenants[1].Webhook.Url = "https://169.254.169.254/latest" }, "link-local"},
		{func(p *sluicev1.Policy) { p.Tenants[1].Webhook.Url = "https://10.1.2.3/" }, "private"},
		{func(p *sluicev1.Policy) { p.Tenants[1].Webhook.Url = "https://localhost:8080/" }, "loopback"},
		{func(p *sluicev1.Policy) { p.Tenants[1].Webhook.Events = []string{"done"} }, "tenants[1].webhook.events[0]: \"done\" is not"},
		{func(p *sluicev1.Policy) { p.Webhooks.Timeout = durationpb.New(time.Hour) }, "webhooks.timeout"},
		{func(p *sluicev1.Policy) { p.Webhooks.RetrySchedule[1] = durationpb.New(-time.Second) }, "webhooks.retry_schedule[1]"},
	} {
		p := webhookPolicy()
		tc.edit(p)
		if err := policy.Validate(p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v, want an error containing %q", err, tc.want)
		}
	}
	p := webhookPolicy()
	p.Webhooks.AllowHttp, p.Webhooks.AllowPrivate = true, true
	p.Tenants[1].Webhook.Url = "http://127.0.0.1:9000/hook"
	if err := policy.Validate(p); err != nil {
		t.Fatalf("allowed http to loopback: %v", err)
	}
}
