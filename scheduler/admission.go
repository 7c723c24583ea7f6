package scheduler

import (
	"errors"
	"fmt"
	"time"
)

// ErrBusy is what every *BusyError matches with errors.Is: the system is
// too busy to queue another job now, which is not the client's fault. The
// caller answers resource_exhausted and says when to retry.
var ErrBusy = errors.New("system busy")

// Bounds CheckAdmission names.
const (
	BoundQueued          = "max_queued"
	BoundQueuedPerTenant = "max_queued_per_tenant"
	BoundQueuedPerModel  = "max_queued_per_model"
	BoundPredictedWait   = "max_predicted_wait"
)

// BusyError says which backpressure bound a new job would exceed.
type BusyError struct {
	Bound string // one of the Bound constants
	Key   string // the tenant or model the bound is for; empty for the others
	Limit int64  // the bound: jobs, or nanoseconds for BoundPredictedWait
	Value int64  // what it would be with the job
	// RetryAfter is a suggested wait in nanoseconds before trying again,
	// or 0 when unknown: for a count bound, the predicted wait scaled to
	// the jobs that must leave first (they leave at about the rate the
	// prediction assumes); for the wait bound, the excess wait.
	RetryAfter int64
}

func (e *BusyError) Error() string {
	what := ""
	switch e.Bound {
	case BoundQueued:
		what = fmt.Sprintf("%d jobs queued in all would exceed the limit of %d", e.Value, e.Limit)
	case BoundQueuedPerTenant:
		what = fmt.Sprintf("%d jobs queued for tenant %q would exceed the limit of %d", e.Value, e.Key, e.Limit)
	case BoundQueuedPerModel:
		what = fmt.Sprintf("%d jobs queued for model %q would exceed the limit of %d", e.Value, e.Key, e.Limit)
	case BoundPredictedWait:
		what = fmt.Sprintf("predicted wait %v exceeds the limit of %v", time.Duration(e.Value), time.Duration(e.Limit))
	}
	if e.RetryAfter > 0 {
		what += fmt.Sprintf("; retry in %v", time.Duration(e.RetryAfter).Round(time.Millisecond))
	}
	return "system busy: " + what
}

// Is makes errors.Is(err, ErrBusy) true.
func (e *BusyError) Is(target error) bool { return target == ErrBusy }

// CheckAdmission reports, as a *BusyError, the first backpressure bound
// that queueing j would exceed: jobs queued in all, for j's tenant, for
// j's model, then predictedWait (the caller's estimate of j's wait, in
// nanoseconds; 0 or less: unknown, not checked). nil when j fits. It only
// reads: queued jobs are never dropped to make room.
func (q *FairQueue) CheckAdmission(j Job, predictedWait int64) error {
	busy := func(bound, key string, limit, value int64) error {
		e := &BusyError{Bound: bound, Key: key, Limit: limit, Value: value}
		if predictedWait > 0 {
			// value-limit jobs must leave before j fits; the prediction
			// covers about value-1 of them.
			e.RetryAfter = mulDiv(predictedWait, value-limit, max(value-1, 1))
		}
		return e
	}
	if l := q.cfg.MaxQueued; l > 0 && int64(q.n)+1 > l {
		return busy(BoundQueued, "", l, int64(q.n)+1)
	}
	var queued, limit int64 = 0, q.cfg.MaxQueuedPerTenant
	if i, ok := q.tenantIx[j.Tenant]; ok {
		queued, limit = q.tenants[i].queued, q.tenants[i].maxQueued
	} else if i, ok := q.tenantCfg[j.Tenant]; ok && q.cfg.Tenants[i].MaxQueued > 0 {
		limit = q.cfg.Tenants[i].MaxQueued
	}
	if limit > 0 && queued+1 > limit {
		return busy(BoundQueuedPerTenant, j.Tenant, limit, queued+1)
	}
	if l := q.cfg.MaxQueuedPerModel; l > 0 {
		var queued int64
		if i, ok := q.modelIx[j.Model]; ok {
			queued = q.models[i].queued
		}
		if queued+1 > l {
			return busy(BoundQueuedPerModel, j.Model, l, queued+1)
		}
	}
	if l := q.cfg.MaxPredictedWait; l > 0 && predictedWait > l {
		return &BusyError{Bound: BoundPredictedWait, Limit: l, Value: predictedWait, RetryAfter: predictedWait - l}
	}
	return nil
}

// mulDiv is a*b/c without overflow for the non-negative values used here.
func mulDiv(a, b, c int64) int64 {
	if a <= 0 || b <= 0 || c <= 0 {
		return 0
	}
	if a <= (1<<62)/b {
		return a * b / c
	}
	return a / c * b
}
