package node

import (
	"context"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/types/known/timestamppb"

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
