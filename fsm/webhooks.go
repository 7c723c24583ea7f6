package fsm

import (
	"fmt"
	"maps"
	"math"
	"slices"

	"github.com/sluicehq/sluice/policy"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// Delivery states.
const (
	DeliveryPending   = "pending"
	DeliveryDelivered = "delivered"
	DeliveryFailed    = "failed"
	DeliveryDisabled  = "disabled"
)

const (
	// MaxDeliveriesPerJob bounds a job's deliveries: a job that starts again
	// and again (retries, redrives) records its events up to this many.
	MaxDeliveriesPerJob = 32
	maxDeliveryError    = 256
)

// DeliveryID is the webhook-id header of a job's seq-th delivery.
func DeliveryID(job uint64, seq int32) string { return fmt.Sprintf("msg_%d_%d", job, seq) }

// webhookOf is the webhook a job's events go to: its spec's, else its
// tenant's default; nil for none.
func (f *FSM) webhookOf(j *raftv1.JobRecord) *sluicev1.Webhook {
	if w := j.Spec.GetWebhook(); w.GetUrl() != "" {
		return w
	}
	if w := f.pix.tenants[j.Tenant].GetWebhook(); w.GetUrl() != "" {
		return w
	}
	return nil
}

func goneKey(tenant, url string) string { return tenant + " " + url }

// hookTransition records the webhook delivery a state change calls for, on
// j (a record being edited).
func (f *FSM) hookTransition(j *raftv1.JobRecord, from, to sluicev1.JobState) {
	var event string
	switch {
	case to == sluicev1.JobState_JOB_STATE_QUEUED && from == sluicev1.JobState_JOB_STATE_UNSPECIFIED:
		event = policy.EventQueued
	case to == sluicev1.JobState_JOB_STATE_RUNNING:
		event = policy.EventStarted
	case isTerminal(to):
		event = policy.EventCompleted
	default:
		return
	}
	w := f.webhookOf(j)
	if w == nil || !policy.WantsEvent(w, event) || len(j.Deliveries) >= MaxDeliveriesPerJob {
		return
	}
	d := &raftv1.Delivery{Seq: int32(len(j.Deliveries) + 1), Event: event, Url: w.Url,
		State: DeliveryPending, CreatedNs: f.now, NextNs: f.now}
	if f.gone[goneKey(j.Tenant, w.Url)] {
		d.State, d.NextNs, d.LastError = DeliveryDisabled, 0, "the endpoint answered 410 Gone to an earlier delivery"
	} else {
		f.hooked[j.Id] = struct{}{}
	}
	j.Deliveries = append(j.Deliveries, d)
}

// webhookResult records one delivery attempt the leader made.
func (f *FSM) webhookResult(c *raftv1.WebhookResult) Result {
	j, ok := f.jobs[c.JobId]
	if !ok || c.Seq < 1 || int(c.Seq) > len(j.Deliveries) {
		return Result{JobID: c.JobId, Err: ErrNotFound}
	}
	d := j.Deliveries[c.Seq-1]
	if d.State != DeliveryPending || c.Attempt != d.Attempts+1 {
		return Result{JobID: c.JobId, Err: ErrStale}
	}
	j = f.edit(j)
	d = shallowCopy(d)
	j.Deliveries[c.Seq-1] = d
	d.Attempts, d.LastNs, d.LastStatus = c.Attempt, f.now, c.Status
	d.LastError = truncate(c.Error, maxDeliveryError)
	schedule := policy.RetrySchedule(f.policy)
	switch {
	case c.Status >= 200 && c.Status < 300:
		d.State, d.NextNs, d.LastError = DeliveryDelivered, 0, ""
	case c.Status == 410:
		d.State, d.NextNs = DeliveryDisabled, 0
		f.gone[goneKey(j.Tenant, d.Url)] = true
		f.disablePending(j.Tenant, d.Url)
	case int(d.Attempts) > len(schedule):
		d.State, d.NextNs = DeliveryFailed, 0
	default:
		d.NextNs = f.now + int64(schedule[d.Attempts-1])
	}
	f.unhookIfDone(j)
	return Result{JobID: j.Id}
}

// disablePending marks every pending delivery of tenant to url disabled.
func (f *FSM) disablePending(tenant, url string) {
	for _, id := range slices.Sorted(maps.Keys(f.hooked)) {
		j := f.jobs[id]
		if j.Tenant != tenant {
			continue
		}
		edited := false
		for i, d := range j.Deliveries {
			if d.State != DeliveryPending || d.Url != url {
				continue
			}
			if !edited {
				j, edited = f.edit(j), true
			}
			d = shallowCopy(d)
			d.State, d.NextNs, d.LastError = DeliveryDisabled, 0, "the endpoint answered 410 Gone to another delivery"
			j.Deliveries[i] = d
		}
		f.unhookIfDone(j)
	}
}

func (f *FSM) unhookIfDone(j *raftv1.JobRecord) {
	if !slices.ContainsFunc(j.Deliveries, func(d *raftv1.Delivery) bool { return d.State == DeliveryPending }) {
		delete(f.hooked, j.Id)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// DueDelivery is a pending webhook delivery whose next attempt is due.
type DueDelivery struct {
	JobID   uint64
	Tenant  string
	Seq     int32
	Attempt int32 // the attempt to make
	Event   string
	URL     string
	NextNs  int64
}

// ID is the delivery's webhook-id.
func (d DueDelivery) ID() string { return DeliveryID(d.JobID, d.Seq) }

// PendingDeliveries appends to dst every pending delivery and returns it.
func (f *FSM) PendingDeliveries(dst []DueDelivery) []DueDelivery {
	return f.DueDeliveries(math.MaxInt64, dst)
}

// DueDeliveries appends to dst the pending deliveries due by now (unix ns):
// what the leader sends.
func (f *FSM) DueDeliveries(now int64, dst []DueDelivery) []DueDelivery {
	for id := range f.hooked {
		j := f.jobs[id]
		for _, d := range j.Deliveries {
			if d.State == DeliveryPending && d.NextNs <= now {
				dst = append(dst, DueDelivery{JobID: id, Tenant: j.Tenant, Seq: d.Seq, Attempt: d.Attempts + 1,
					Event: d.Event, URL: d.Url, NextNs: d.NextNs})
			}
		}
	}
	return dst
}

// WebhookSecrets returns the secrets that sign a tenant's webhooks.
func (f *FSM) WebhookSecrets(tenant string) []string {
	return f.pix.tenants[tenant].GetWebhookSecrets()
}
