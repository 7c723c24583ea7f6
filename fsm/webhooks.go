package fsm

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

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

// hookBook is the state of webhook deliveries beside the job records that
// hold them: the endpoints that answered 410 Gone (goneKey), and the jobs
// with a delivery pending (derived from the records).
type hookBook struct {
	gone   map[string]bool
	hooked map[uint64]struct{}
}

// webhookOf is the webhook a job's events go to: its spec's, else its
// tenant's default (tenants: the policy's, by name); nil for none.
func webhookOf(j *raftv1.JobRecord, tenants map[string]*sluicev1.Tenant) *sluicev1.Webhook {
	if w := j.Spec.GetWebhook(); w.GetUrl() != "" {
		return w
	}
	if w := tenants[j.Tenant].GetWebhook(); w.GetUrl() != "" {
		return w
	}
	return nil
}

func goneKey(tenant, url string) string { return tenant + " " + url }

// transition records the webhook delivery a state change calls for, on j
// (a record being edited) at now; w is j's webhook (webhookOf).
func (h *hookBook) transition(j *raftv1.JobRecord, from, to sluicev1.JobState, w *sluicev1.Webhook, now int64) {
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
	if w == nil || !policy.WantsEvent(w, event) || len(j.Deliveries) >= MaxDeliveriesPerJob {
		return
	}
	d := &raftv1.Delivery{Seq: int32(len(j.Deliveries) + 1), Event: event, Url: w.Url,
		State: DeliveryPending, CreatedNs: now, NextNs: now}
	if h.gone[goneKey(j.Tenant, w.Url)] {
		d.State, d.NextNs, d.LastError = DeliveryDisabled, 0, "the endpoint answered 410 Gone to an earlier delivery"
	} else {
		h.hooked[j.Id] = struct{}{}
	}
	j.Deliveries = append(j.Deliveries, d)
}

// result records one delivery attempt the leader made, applied at now;
// schedule is the policy's retry schedule.
func (h *hookBook) result(t *jobTable, c *raftv1.WebhookResult, now int64, schedule []time.Duration) Result {
	j, ok := t.jobs[c.JobId]
	if !ok || c.Seq < 1 || int(c.Seq) > len(j.Deliveries) {
		return Result{JobID: c.JobId, Err: ErrNotFound}
	}
	d := j.Deliveries[c.Seq-1]
	if d.State != DeliveryPending || c.Attempt != d.Attempts+1 {
		return Result{JobID: c.JobId, Err: ErrStale}
	}
	j = t.edit(j)
	d = shallowCopy(d)
	j.Deliveries[c.Seq-1] = d
	d.Attempts, d.LastNs, d.LastStatus = c.Attempt, now, c.Status
	d.LastError = truncate(c.Error, maxDeliveryError)
	switch {
	case c.Status >= 200 && c.Status < 300:
		d.State, d.NextNs, d.LastError = DeliveryDelivered, 0, ""
	case c.Status == 410:
		d.State, d.NextNs = DeliveryDisabled, 0
		h.gone[goneKey(j.Tenant, d.Url)] = true
		h.disablePending(t, j.Tenant, d.Url)
	case int(d.Attempts) > len(schedule):
		d.State, d.NextNs = DeliveryFailed, 0
	default:
		d.NextNs = now + int64(schedule[d.Attempts-1])
	}
	h.unhookIfDone(j)
	return Result{JobID: j.Id}
}

// disablePending marks every pending delivery of tenant to url disabled.
func (h *hookBook) disablePending(t *jobTable, tenant, url string) {
	for _, id := range slices.Sorted(maps.Keys(h.hooked)) {
		j := t.jobs[id]
		if j.Tenant != tenant {
			continue
		}
		edited := false
		for i, d := range j.Deliveries {
			if d.State != DeliveryPending || d.Url != url {
				continue
			}
			if !edited {
				j, edited = t.edit(j), true
			}
			d = shallowCopy(d)
			d.State, d.NextNs, d.LastError = DeliveryDisabled, 0, "the endpoint answered 410 Gone to another delivery"
			j.Deliveries[i] = d
		}
		h.unhookIfDone(j)
	}
}

func (h *hookBook) unhookIfDone(j *raftv1.JobRecord) {
	if !slices.ContainsFunc(j.Deliveries, func(d *raftv1.Delivery) bool { return d.State == DeliveryPending }) {
		delete(h.hooked, j.Id)
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
func (r JobReads) PendingDeliveries(dst []DueDelivery) []DueDelivery {
	return r.DueDeliveries(math.MaxInt64, dst)
}

// DueDeliveries appends to dst the pending deliveries due by now (unix ns):
// what the leader sends.
func (r JobReads) DueDeliveries(now int64, dst []DueDelivery) []DueDelivery {
	f := r.f
	for id := range f.hooks.hooked {
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
func (r ConfigReads) WebhookSecrets(tenant string) []string {
	f := r.f
	return f.pix.tenants[tenant].GetWebhookSecrets()
}
