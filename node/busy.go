package node

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/scheduler"
)

// predictedWait estimates how long a new job of the spec's model would wait
// if queued now: behind every queued job of its model, served by the
// executors that run it. 0 when unknown (no executor serves the model).
func (n *Node) predictedWait(spec *sluicev1.JobSpec) time.Duration {
	m, ok := n.fsm.Model(spec.GetModel())
	if !ok {
		return 0
	}
	total, free := n.execs.slotsFor(m.Name)
	wait := scheduler.WaitBehind(n.fsm.QueuedOfModel(m.Name)+1, total, free, n.service.expected(m.Name, m.GetDefaultDuration().AsDuration()))
	return max(wait, 0)
}

// busyError turns a backpressure refusal into resource_exhausted "system
// busy" naming the bound, with RetryInfo, QuotaFailure and Retry-After.
func busyError(be *scheduler.BusyError, retry time.Duration) *connect.Error {
	if be.RetryAfter > 0 {
		retry = time.Duration(be.RetryAfter)
	}
	retry = max(retry, time.Second)
	msg := be.Error()
	if be.RetryAfter <= 0 {
		msg += fmt.Sprintf("; retry in %s", roundWait(retry))
	}
	err := connect.NewError(connect.CodeResourceExhausted, errors.New(msg))
	subject := "cluster"
	switch be.Bound {
	case scheduler.BoundQueuedPerTenant:
		subject = "tenant:" + be.Key
	case scheduler.BoundQueuedPerModel:
		subject = "model:" + be.Key
	}
	if d, derr := connect.NewErrorDetail(&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{
		{Subject: subject, Description: "scheduling." + be.Bound},
	}}); derr == nil {
		err.AddDetail(d)
	}
	if d, derr := connect.NewErrorDetail(&errdetails.RetryInfo{RetryDelay: durationpb.New(retry)}); derr == nil {
		err.AddDetail(d)
	}
	err.Meta().Set("Retry-After", strconv.FormatInt(int64((retry+time.Second-1)/time.Second), 10))
	return err
}
