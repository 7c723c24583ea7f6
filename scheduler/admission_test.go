package scheduler

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestCheckAdmissionNamesTheBoundExceeded(t *testing.T) {
	q := NewFairQueue(Config{
		MaxQueued: 5, MaxQueuedPerTenant: 3, MaxQueuedPerModel: 4, MaxPredictedWait: int64(time.Minute),
		Tenants: []TenantConfig{{Name: "big", MaxQueued: 10}},
	})
	add := func(id uint64, tenant, model string) { q.Enqueue(Job{ID: id, Seq: id, Tenant: tenant, Model: model}) }
	add(1, "a", "m")
	add(2, "a", "m")
	add(3, "a", "n")
	check := func(j Job, wait time.Duration, bound, key string) {
		t.Helper()
		err := q.CheckAdmission(j, int64(wait))
		if bound == "" {
			if err != nil {
				t.Fatalf("%+v: %v, want admitted", j, err)
			}
			return
		}
		var b *BusyError
		if !errors.As(err, &b) || !errors.Is(err, ErrBusy) || b.Bound != bound || b.Key != key {
			t.Fatalf("%+v: got %v, want %s bound for %q", j, err, bound, key)
		}
		if !strings.Contains(err.Error(), "system busy") {
			t.Fatalf("message %q does not say the system is busy", err)
		}
	}
	check(Job{Tenant: "a", Model: "x"}, 0, BoundQueuedPerTenant, "a")
	check(Job{Tenant: "b", Model: "m"}, 0, "", "")
	check(Job{Tenant: "b", Model: "m"}, 2*time.Minute, BoundPredictedWait, "")
	add(4, "b", "m")
	add(5, "big", "m")
	check(Job{Tenant: "big", Model: "z"}, 0, BoundQueued, "")
	q.Remove(3)
	check(Job{Tenant: "big", Model: "m"}, 0, BoundQueuedPerModel, "m")
	check(Job{Tenant: "big", Model: "z"}, 0, "", "")

	err := q.CheckAdmission(Job{Tenant: "b", Model: "z"}, int64(90*time.Second))
	var b *BusyError
	if !errors.As(err, &b) || b.RetryAfter != int64(30*time.Second) {
		t.Fatalf("retry after %v, want 30s (the wait above the bound)", err)
	}
	// A count bound suggests the predicted wait scaled to the excess.
	err = q.CheckAdmission(Job{Tenant: "big", Model: "m"}, int64(40*time.Second))
	if !errors.As(err, &b) || b.Bound != BoundQueuedPerModel || b.RetryAfter != int64(10*time.Second) {
		t.Fatalf("got %v (retry %v), want model bound with retry 10s", err, time.Duration(b.RetryAfter))
	}
	if q.Len() != 4 {
		t.Fatal("CheckAdmission changed the queue")
	}
}
