package node

import (
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/fsm"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

func ts(ns int64) *timestamppb.Timestamp {
	if ns == 0 {
		return nil
	}
	return timestamppb.New(time.Unix(0, ns))
}

// FormatJobID is the public form of a job id.
func FormatJobID(id uint64) string { return strconv.FormatUint(id, 10) }

// ParseJobID reads a public job id.
func ParseJobID(s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		return 0, errInvalidID
	}
	return id, nil
}

// publicJob turns a record into what its owner sees.
func publicJob(v fsm.JobView, eta jobETA) *sluicev1.Job {
	j := v.Job
	out := &sluicev1.Job{
		Id:            FormatJobID(j.Id),
		Tenant:        j.Tenant,
		Spec:          j.Spec,
		State:         j.State,
		QueuePosition: int64(v.Position),
		Attempt:       j.Attempt,
		Executor:      j.Executor,
		CreatedAt:     ts(j.CreatedNs),
		StartedAt:     ts(j.StartedNs),
		FinishedAt:    ts(j.FinishedNs),
		Output:        j.Output,
		Error:         j.Error,
		Admission:     fsm.JobAdmission(j),
		Transitions:   make([]*sluicev1.Transition, 0, len(j.Transitions)+1),
	}
	if j.State == sluicev1.JobState_JOB_STATE_QUEUED {
		out.ReadyAt = ts(j.ReadyNs)
		if eta.place > 0 {
			out.QueuePosition = int64(eta.place) // the order its ETA counts
		}
	}
	if eta.known && !fsm.IsTerminal(j.State) {
		out.EtaSeconds = ceilSeconds(eta.P50)
		out.EtaP10Seconds, out.EtaP90Seconds = int64(eta.P10/time.Second), ceilSeconds(eta.P90)
	}
	out.EtaUnknown = !eta.known && j.State == sluicev1.JobState_JOB_STATE_QUEUED
	for _, t := range fsm.Transitions(j) {
		out.Transitions = append(out.Transitions, transition(t))
	}
	out.Webhooks = publicDeliveries(j.Id, j.Deliveries)
	return out
}

func transition(t *raftv1.TransitionRecord) *sluicev1.Transition {
	return &sluicev1.Transition{
		State:    t.State,
		At:       ts(t.AtNs),
		Attempt:  t.Attempt,
		Executor: t.Executor,
		Reason:   t.Reason,
	}
}

// ceilSeconds is d in whole seconds, rounded up.
func ceilSeconds(d time.Duration) int64 { return int64((d + time.Second - 1) / time.Second) }
