package node

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/fsm"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

type adminService struct {
	sluicev1connect.UnimplementedAdminServiceHandler
	n *Node
}

func (s *adminService) GetClusterStatus(_ context.Context, req *connect.Request[sluicev1.GetClusterStatusRequest]) (*connect.Response[sluicev1.GetClusterStatusResponse], error) {
	if err := s.n.admin(req.Header()); err != nil {
		return nil, err
	}
	n := s.n
	stats := n.raft.Stats()
	_, leader := n.raft.LeaderWithID()
	out := &sluicev1.GetClusterStatusResponse{
		NodeId:       n.cfg.ID,
		Role:         n.raft.State().String(),
		LeaderId:     string(leader),
		Term:         parseUint(stats["term"]),
		CommitIndex:  parseUint(stats["commit_index"]),
		AppliedIndex: n.raft.AppliedIndex(),
		LastLogIndex: n.raft.LastIndex(),
		QueuedJobs:   n.fsm.Count(sluicev1.JobState_JOB_STATE_QUEUED),
		RunningJobs:  n.fsm.Count(sluicev1.JobState_JOB_STATE_RUNNING),
		StateHash:    n.fsm.StateHash(),
		Now:          timestamppb.New(time.Now()),
	}
	for _, st := range []sluicev1.JobState{
		sluicev1.JobState_JOB_STATE_SUCCEEDED, sluicev1.JobState_JOB_STATE_FAILED, sluicev1.JobState_JOB_STATE_CANCELED,
		sluicev1.JobState_JOB_STATE_EXPIRED, sluicev1.JobState_JOB_STATE_DEAD_LETTERED,
	} {
		out.FinishedJobs += n.fsm.Count(st)
	}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			role := strings.ToLower(srv.Suffrage.String())
			if srv.ID == leader {
				role = "leader"
			} else if srv.Suffrage == raft.Voter {
				role = "follower"
			}
			m := &sluicev1.Member{Id: string(srv.ID), RaftAddress: string(srv.Address), Role: role}
			if srv.ID == raft.ServerID(n.cfg.ID) {
				m.HttpAddress = n.Addr()
			}
			out.Members = append(out.Members, m)
		}
	}
	for _, e := range n.pool.status() {
		out.Executors = append(out.Executors, &sluicev1.ExecutorStatus{
			Name: e.name, Slots: int32(e.slots), BusySlots: int32(e.busy), Models: e.models,
		})
	}
	return connect.NewResponse(out), nil
}

func parseUint(s string) uint64 {
	v, _ := strconv.ParseUint(s, 10, 64)
	return v
}

// MaxRedriveIDs bounds the job ids one RedriveDeadLetters names.
const MaxRedriveIDs = 10000

func (s *adminService) RedriveDeadLetters(ctx context.Context, req *connect.Request[sluicev1.RedriveDeadLettersRequest]) (*connect.Response[sluicev1.RedriveDeadLettersResponse], error) {
	n := s.n
	if err := n.admin(req.Header()); err != nil {
		return nil, err
	}
	m := req.Msg
	if m.Tenant == "" && m.Model == "" && len(m.JobIds) == 0 {
		return nil, fieldError("tenant", "give a tenant, a model or job_ids: redriving every dead letter at once needs one filter")
	}
	if len(m.JobIds) > MaxRedriveIDs {
		return nil, fieldError("job_ids", "%d ids exceed the limit of %d", len(m.JobIds), MaxRedriveIDs)
	}
	ids := make([]uint64, 0, len(m.JobIds))
	for i, raw := range m.JobIds {
		id, err := ParseJobID(raw)
		if err != nil {
			return nil, fieldError(fmt.Sprintf("job_ids[%d]", i), "%v", err)
		}
		ids = append(ids, id)
	}
	found := n.fsm.DeadLetters(m.Tenant, m.Model, ids)
	out := &sluicev1.RedriveDeadLettersResponse{}
	if len(found) == 0 {
		return connect.NewResponse(out), nil
	}
	res, err := n.propose(ctx, fsm.CmdRedrive, &raftv1.Redrive{JobIds: found, Reason: "by an operator"})
	if err != nil {
		return nil, writeError(err)
	}
	if res.Err != nil {
		return nil, resultError(res)
	}
	for _, id := range found {
		out.JobIds = append(out.JobIds, FormatJobID(id))
	}
	return connect.NewResponse(out), nil
}

func (s *adminService) ListQueue(_ context.Context, req *connect.Request[sluicev1.ListQueueRequest]) (*connect.Response[sluicev1.ListQueueResponse], error) {
	n := s.n
	if err := n.admin(req.Header()); err != nil {
		return nil, err
	}
	size, err := pageSize(req.Msg.GetPageSize())
	if err != nil {
		return nil, err
	}
	views, next, total, err := n.fsm.QueuePage(req.Msg.GetPageToken(), size)
	if err != nil {
		return nil, fieldError("page_token", "not a token from a previous response")
	}
	out := &sluicev1.ListQueueResponse{NextPageToken: next, Total: int64(total), Jobs: make([]*sluicev1.Job, len(views))}
	for i, v := range views {
		out.Jobs[i] = publicJob(v, n.eta(v))
	}
	return connect.NewResponse(out), nil
}
