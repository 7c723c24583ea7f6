package node

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/fsm"
	"github.com/sluicehq/sluice/gpuexec"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

// Limits on what an executor may say about itself.
const (
	MaxExecutorName    = 128
	MaxOutputBytes     = 1 << 20
	MaxErrorMessage    = 4096
	MaxExecutorGPUs    = 64
	MaxExecutorSlots   = 1024
	MaxExecutorModels  = 256
	MaxRunningReported = 4096
	MaxProgressText    = 256
)

type executorService struct {
	sluicev1connect.UnimplementedExecutorServiceHandler
	n *Node
}

// validateExecutor checks an executor's description; garbage from a runner
// host is refused with the field and the limit, never trusted.
func validateExecutor(info *sluicev1.ExecutorInfo) error {
	if info == nil {
		return fieldError("executor", "missing")
	}
	if err := checkName("executor.name", info.Name); err != nil {
		return err
	}
	if info.Slots < 0 || info.Slots > MaxExecutorSlots {
		return fieldError("executor.slots", "%d is outside the range 0–%d", info.Slots, MaxExecutorSlots)
	}
	if len(info.Gpus) > MaxExecutorGPUs {
		return fieldError("executor.gpus", "%d GPUs exceed the limit of %d", len(info.Gpus), MaxExecutorGPUs)
	}
	seen := make(map[string]bool, len(info.Gpus))
	for i, g := range info.Gpus {
		if g.MemoryTotalMb < 0 || g.MemoryFreeMb < 0 {
			return fieldError(fmt.Sprintf("executor.gpus[%d]", i), "memory must not be negative")
		}
		if g.Uuid != "" && seen[g.Uuid] {
			return fieldError(fmt.Sprintf("executor.gpus[%d].uuid", i), "%q appears twice", g.Uuid)
		}
		seen[g.Uuid] = true
	}
	for _, list := range []struct {
		field string
		v     []string
	}{{"executor.models", info.Models}, {"executor.warm_models", info.WarmModels}} {
		if len(list.v) > MaxExecutorModels {
			return fieldError(list.field, "%d entries exceed the limit of %d", len(list.v), MaxExecutorModels)
		}
		for i, m := range list.v {
			if err := checkName(fmt.Sprintf("%s[%d]", list.field, i), m); err != nil {
				return err
			}
		}
	}
	return nil
}

func parseRunning(rs []*sluicev1.RunningAttempt) (map[uint64]int32, error) {
	if len(rs) > MaxRunningReported {
		return nil, fieldError("running", "%d attempts exceed the limit of %d", len(rs), MaxRunningReported)
	}
	out := make(map[uint64]int32, len(rs))
	for i, r := range rs {
		id, err := ParseJobID(r.JobId)
		if err != nil {
			return nil, fieldError(fmt.Sprintf("running[%d].job_id", i), "%v", err)
		}
		out[id] = r.Attempt
	}
	return out, nil
}

// Lease registers the executor and streams its assignments for as long as
// this node leads (a follower refuses, naming the leader).
func (s *executorService) Lease(ctx context.Context, req *connect.Request[sluicev1.LeaseRequest], stream *connect.ServerStream[sluicev1.LeaseResponse]) error {
	n := s.n
	ctx, err := n.executor(ctx, req.Header(), req.Msg.Executor.GetName())
	if err != nil {
		return err
	}
	if err := validateExecutor(req.Msg.Executor); err != nil {
		return err
	}
	running, err := parseRunning(req.Msg.Running)
	if err != nil {
		return err
	}
	term := n.cluster.term()
	if term == nil {
		return n.route.notLeaderError()
	}
	// A leader paused and resumed may not have noticed its successor yet:
	// it must not adopt from, or stop attempts by, its stale state.
	if err := n.desk.verifyLeader(); err != nil {
		return err
	}
	// Adopt only the attempts the log has running on this executor; tell
	// it to stop the others.
	adopt := make(map[uint64]adopted, len(running))
	var stops []*sluicev1.LeaseResponse
	for id, attempt := range running {
		if a, ok := n.fsm.RunningAttempt(id); ok && a == attempt {
			if j, ok := n.fsm.Job(id); ok && j.Executor == req.Msg.Executor.Name {
				adopt[id] = adopted{attempt: attempt, gpus: j.Gpus} // it holds the GPUs it was assigned
				continue
			}
		}
		stops = append(stops, &sluicev1.LeaseResponse{Msg: &sluicev1.LeaseResponse_Stop{Stop: &sluicev1.StopAttempt{
			JobId: FormatJobID(id), Attempt: attempt, Reason: "the log no longer has this attempt running here"}}})
	}
	info := req.Msg.Executor // l.info is the registry's now: read it only under its lock
	l := n.execs.attach(info, adopt, time.Now())
	n.metrics.Leased()
	defer n.execs.detach(info.Name, l.gen)
	n.log.Info("executor leased", "executor", info.Name, "gpus", max(1, len(info.Gpus)), "slots", max(1, info.Slots), "adopted", len(adopt))
	// The stream is never silent for long: an executor that hears nothing for
	// three keepalive periods takes this leader for gone (paused or cut
	// off, with the connection still open) and looks for the next one.
	keepalive := n.cfg.HeartbeatInterval / 2
	stream.ResponseHeader().Set(gpuexec.KeepaliveHeader, keepalive.String())
	beat := &sluicev1.LeaseResponse{HeartbeatInterval: durationpb.New(n.cfg.HeartbeatInterval)}
	if err := stream.Send(beat); err != nil {
		return err
	}
	for _, m := range stops {
		if err := stream.Send(m); err != nil {
			return err
		}
	}
	tick := time.NewTicker(keepalive)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-term.Done():
			return n.route.notLeaderError()
		case <-l.done:
			return connect.NewError(connect.CodeAborted, errors.New("lease ended: replaced by a newer lease or expired"))
		case <-tick.C:
			if err := stream.Send(beat); err != nil {
				return err
			}
		case m := <-l.out:
			if err := stream.Send(m); err != nil {
				return err
			}
		}
	}
}

// runsOn reports whether the log has the job running on the executor.
func (n *Node) runsOn(id uint64, executor string) bool {
	j, ok := n.fsm.Job(id)
	return ok && j.Executor == executor
}

func (s *executorService) Heartbeat(ctx context.Context, req *connect.Request[sluicev1.HeartbeatRequest]) (*connect.Response[sluicev1.HeartbeatResponse], error) {
	n := s.n
	ctx, err := n.executor(ctx, req.Header(), req.Msg.Executor)
	if err != nil {
		return nil, err
	}
	if res, local, err := forward(ctx, n, req, func(ctx context.Context, c leaderClients, r *connect.Request[sluicev1.HeartbeatRequest]) (*connect.Response[sluicev1.HeartbeatResponse], error) {
		return c.executor.Heartbeat(ctx, r)
	}); !local {
		return res, err
	}
	if req.Msg.Info != nil {
		if err := validateExecutor(req.Msg.Info); err != nil {
			return nil, err
		}
	}
	running, err := parseRunning(req.Msg.Running)
	if err != nil {
		return nil, err
	}
	if !n.execs.heartbeat(req.Msg.Executor, req.Msg.Info, time.Now()) {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("executor %q holds no lease on the leader; open one with Lease", req.Msg.Executor))
	}
	out := &sluicev1.HeartbeatResponse{}
	for id, attempt := range running {
		if a, ok := n.fsm.RunningAttempt(id); !ok || a != attempt || !n.runsOn(id, req.Msg.Executor) {
			out.Stop = append(out.Stop, &sluicev1.StopAttempt{JobId: FormatJobID(id), Attempt: attempt,
				Reason: "the job is no longer running this attempt here (canceled, timed out or reassigned)"})
		}
	}
	if len(out.Stop) > 0 {
		if err := n.desk.verifyLeader(); err != nil {
			return nil, err // not from a deposed leader's stale state
		}
	}
	return connect.NewResponse(out), nil
}

func (s *executorService) Report(ctx context.Context, req *connect.Request[sluicev1.ReportRequest]) (*connect.Response[sluicev1.ReportResponse], error) {
	n := s.n
	ctx, err := n.executor(ctx, req.Header(), req.Msg.Executor)
	if err != nil {
		return nil, err
	}
	m := req.Msg
	id, err := ParseJobID(m.JobId)
	if err != nil {
		return nil, fieldError("job_id", "%v", err)
	}
	switch o := m.Outcome.(type) {
	case nil:
		return nil, fieldError("outcome", "missing: one of progress, succeeded, failed")
	case *sluicev1.ReportRequest_Progress:
		if f := o.Progress.GetFraction(); math.IsNaN(f) || f < 0 || f > 1 {
			return nil, fieldError("progress.fraction", "%v is outside 0–1", f)
		}
		if len(o.Progress.GetText()) > MaxProgressText {
			return nil, fieldError("progress.text", "%d bytes exceed the %d-byte limit", len(o.Progress.GetText()), MaxProgressText)
		}
	case *sluicev1.ReportRequest_Succeeded:
		if size := proto.Size(o.Succeeded.GetOutput()); size > MaxOutputBytes {
			return nil, fieldError("succeeded.output", "%d bytes exceed the %d-byte limit", size, MaxOutputBytes)
		}
		if o.Succeeded.Cost < 0 {
			return nil, fieldError("succeeded.cost", "%d is negative", o.Succeeded.Cost)
		}
	case *sluicev1.ReportRequest_Failed:
		if e := o.Failed.GetError(); len(e.GetCode()) > 64 || len(e.GetMessage()) > MaxErrorMessage {
			return nil, fieldError("failed.error", "code over 64 bytes or message over %d bytes", MaxErrorMessage)
		}
	}
	if res, local, err := forward(ctx, n, req, func(ctx context.Context, c leaderClients, r *connect.Request[sluicev1.ReportRequest]) (*connect.Response[sluicev1.ReportResponse], error) {
		return c.executor.Report(ctx, r)
	}); !local {
		return res, err
	}
	accepted := func(ok bool) (*connect.Response[sluicev1.ReportResponse], error) {
		return connect.NewResponse(&sluicev1.ReportResponse{Accepted: ok}), nil
	}
	if _, progress := m.Outcome.(*sluicev1.ReportRequest_Progress); !progress && !n.runsOn(id, m.Executor) {
		// Only the executor the log assigned the attempt to may end it: one
		// executor (above all one that proved its name with a certificate)
		// cannot settle another's job. The refusal is final for the
		// executor, so it must come from the leader's state: a paused old
		// leader, resumed and not yet deposed, knows nothing of the attempts
		// its successor assigned.
		if err := n.desk.verifyLeader(); err != nil {
			return nil, err
		}
		return accepted(false)
	}
	var cmd fsm.CommandType
	var msg proto.Message
	switch o := m.Outcome.(type) {
	case *sluicev1.ReportRequest_Progress:
		return accepted(n.execs.setProgress(m.Executor, id, progressReport{attempt: m.Attempt, fraction: o.Progress.Fraction, text: o.Progress.Text, at: time.Now().UnixNano()}))
	case *sluicev1.ReportRequest_Succeeded:
		cmd = fsm.CmdComplete
		c := &raftv1.Complete{JobId: id, Attempt: m.Attempt, Output: o.Succeeded.Output, Cost: o.Succeeded.Cost}
		if j, ok := n.fsm.Job(id); ok && j.StartedNs > 0 {
			ran := time.Since(time.Unix(0, j.StartedNs))
			c.RunNs = int64(ran)
			if model, ok := n.fsm.Model(j.Spec.GetModel()); ok {
				kind := n.execs.gpuKind(j.Executor)
				predicted, _, sized := n.service.runTime(model, kind, j.Spec.GetInput())
				n.metrics.PredictionError(model.Name, sized, predicted, ran)
				n.service.observeSized(model, kind, j.Spec.GetInput(), ran)
			}
			n.service.observe(j.Spec.GetModel(), ran)
		}
		msg = c
	case *sluicev1.ReportRequest_Failed:
		cmd = fsm.CmdFail
		msg = &raftv1.Fail{JobId: id, Attempt: m.Attempt, Retryable: o.Failed.Retryable, Error: o.Failed.Error}
	}
	res, err := n.propose(ctx, cmd, msg)
	if err != nil {
		return nil, writeError(err)
	}
	n.execs.finished(m.Executor, id, m.Attempt)
	if errors.Is(res.Err, fsm.ErrStale) || errors.Is(res.Err, fsm.ErrNotFound) {
		return accepted(false)
	}
	if res.Err != nil {
		return nil, resultError(res)
	}
	return accepted(true)
}

func checkName(field, s string) error {
	switch {
	case s == "":
		return fieldError(field, "must not be empty")
	case len(s) > MaxExecutorName:
		return fieldError(field, "%d bytes exceed the %d-byte limit", len(s), MaxExecutorName)
	}
	return nil
}
