package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/fsm"
	"github.com/sluicehq/sluice/policy"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

type adminService struct {
	sluicev1connect.UnimplementedAdminServiceHandler
	n *Node
}

func (s *adminService) GetClusterStatus(ctx context.Context, req *connect.Request[sluicev1.GetClusterStatusRequest]) (*connect.Response[sluicev1.GetClusterStatusResponse], error) {
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
	out.Members = n.cluster.members()
	if req.Header().Get(selfOnlyHeader) == "" {
		n.cluster.fillPeers(ctx, req.Header().Get("Authorization"), out.Members)
	}
	out.Executors = n.execs.status()
	// The operator's page: what runs, what died, what was refused.
	running := n.fsm.Running()
	for _, r := range running[:min(len(running), maxStatusJobs)] {
		if j, ok := n.desk.publicJob(r.ID); ok {
			out.Running = append(out.Running, j)
		}
	}
	dead := n.fsm.DeadLetters("", "", nil)
	for i := len(dead) - 1; i >= 0 && len(out.DeadLetters) < maxStatusJobs; i-- {
		if j, ok := n.desk.publicJob(dead[i]); ok {
			out.DeadLetters = append(out.DeadLetters, j)
		}
	}
	if n.IsLeader() {
		out.Rejections = n.rejected.list()
	}
	return connect.NewResponse(out), nil
}

// maxStatusJobs bounds the running and dead-lettered jobs GetClusterStatus lists.
const maxStatusJobs = 100

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
	if res, local, err := forward(ctx, n, req, func(ctx context.Context, c leaderClients, r *connect.Request[sluicev1.RedriveDeadLettersRequest]) (*connect.Response[sluicev1.RedriveDeadLettersResponse], error) {
		return c.admin.RedriveDeadLetters(ctx, r)
	}); !local {
		return res, err
	}
	found := n.fsm.DeadLetters(m.Tenant, m.Model, ids)
	if err := n.explainRedrive(m, ids, found); err != nil {
		return nil, err
	}
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

// explainRedrive refuses a redrive that names a target that is not there:
// a job id that does not exist (not_found) or is not dead-lettered, or
// does not match the tenant or model given (failed_precondition); or, when
// nothing matched, a tenant or model the policy does not know (not_found).
// A known tenant or model without dead letters is a 0 answer, not an error.
func (n *Node) explainRedrive(m *sluicev1.RedriveDeadLettersRequest, ids, found []uint64) error {
	for i, id := range ids {
		if slices.Contains(found, id) {
			continue
		}
		j, ok := n.fsm.Job(id)
		switch {
		case !ok:
			return connect.NewError(connect.CodeNotFound, fmt.Errorf("job_ids[%d]: job %s does not exist (or its retention ended)", i, m.JobIds[i]))
		case j.State != sluicev1.JobState_JOB_STATE_DEAD_LETTERED:
			return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("job_ids[%d]: job %s is %s, not dead-lettered; only dead letters are redriven",
				i, m.JobIds[i], strings.ToLower(fsm.StateName(j.State))))
		case m.Tenant != "" && j.Tenant != m.Tenant:
			return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("job_ids[%d]: job %s is tenant %q's, not %q's; drop --tenant or the id",
				i, m.JobIds[i], j.Tenant, m.Tenant))
		default:
			return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("job_ids[%d]: job %s is of model %q, not %q; drop --model or the id",
				i, m.JobIds[i], j.Spec.GetModel(), m.Model))
		}
	}
	if len(found) > 0 {
		return nil
	}
	if m.Tenant != "" && !slices.ContainsFunc(n.fsm.Policy().GetTenants(), func(t *sluicev1.Tenant) bool { return t.Name == m.Tenant }) {
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("tenant: %q is not one of the policy's tenants", m.Tenant))
	}
	if _, ok := n.fsm.Model(m.Model); m.Model != "" && !ok {
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("model: %q is not one of the policy's models", m.Model))
	}
	return nil
}

func (s *adminService) ListQueue(ctx context.Context, req *connect.Request[sluicev1.ListQueueRequest]) (*connect.Response[sluicev1.ListQueueResponse], error) {
	n := s.n
	if req.Msg.Consistent {
		if res, local, err := forward(ctx, n, req, func(ctx context.Context, c leaderClients, r *connect.Request[sluicev1.ListQueueRequest]) (*connect.Response[sluicev1.ListQueueResponse], error) {
			return c.admin.ListQueue(ctx, r)
		}); !local {
			return res, err
		}
		if err := n.desk.verifyLeader(); err != nil {
			return nil, err
		}
	}
	if err := n.admin(req.Header()); err != nil {
		return nil, err
	}
	n.desk.readYourWrites(ctx)
	size, err := pageSize(req.Msg.GetPageSize())
	if err != nil {
		return nil, err
	}
	views, next, total, err := n.fsm.QueuePage(req.Msg.GetPageToken(), size)
	if err != nil {
		return nil, fieldError("page_token", "not a token from a previous response")
	}
	out := &sluicev1.ListQueueResponse{NextPageToken: next, Total: int64(total), Jobs: make([]*sluicev1.Job, len(views))}
	eta := n.desk.listETAs(views)
	placed := make([]bool, len(views))
	for i, v := range views {
		e := eta(v)
		out.Jobs[i], placed[i] = n.desk.withSoftState(publicJob(v, e), v), e.place > 0
	}
	byPlace(out.Jobs, placed)
	return connect.NewResponse(out), nil
}

// byPlace puts each model's placed rows of a page in the order of their
// place in line, in the rows its placed jobs hold in queue order. The page
// is cut in queue order (the fair queue's keys), which estimates the
// tiers' dispatch order; places are that dispatch order
// (admission.QueuedPlace), which can differ where a tier's tenants come
// back from idle together. A row without a place (past 2,000 jobs ahead,
// not ready) stays where queue order has it.
func byPlace(jobs []*sluicev1.Job, placed []bool) {
	rows := map[string][]int{}
	for i, j := range jobs {
		if placed[i] {
			m := j.Spec.GetModel()
			rows[m] = append(rows[m], i)
		}
	}
	for _, at := range rows {
		own := make([]*sluicev1.Job, len(at))
		for k, i := range at {
			own[k] = jobs[i]
		}
		slices.SortStableFunc(own, func(a, b *sluicev1.Job) int { return cmp.Compare(a.QueuePosition, b.QueuePosition) })
		for k, i := range at {
			jobs[i] = own[k]
		}
	}
}

// members lists the raft servers with their addresses and, as far as this
// node knows, their progress.
func (n membership) members() []*sluicev1.Member {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	_, leader := n.raft.LeaderWithID()
	stats := n.raft.Stats()
	var out []*sluicev1.Member
	for _, srv := range f.Configuration().Servers {
		m := &sluicev1.Member{Id: string(srv.ID), RaftAddress: string(srv.Address), Role: "follower"}
		switch {
		case srv.ID == leader:
			m.Role = "leader"
		case srv.Suffrage != raft.Voter:
			m.Role = "nonvoter"
		}
		if rec, ok := n.fsm.Member(string(srv.ID)); ok {
			m.HttpAddress = rec.HttpAddress
		}
		if srv.ID == raft.ServerID(n.cfg.ID) {
			m.HttpAddress = n.Addr()
			m.Term = parseUint(stats["term"])
			m.CommitIndex = parseUint(stats["commit_index"])
			m.AppliedIndex = n.raft.AppliedIndex()
			if lc, err := time.ParseDuration(stats["last_contact"]); err == nil {
				m.LastContact = durationpb.New(lc)
			}
		} else if heard, failing := n.contact.view(string(srv.ID)); failing {
			n.markUnreachable(m, heard)
		}
		out = append(out, m)
	}
	return out
}

func (s *adminService) JoinNode(ctx context.Context, req *connect.Request[sluicev1.JoinNodeRequest]) (*connect.Response[sluicev1.JoinNodeResponse], error) {
	n := s.n
	if err := n.admin(req.Header()); err != nil {
		return nil, err
	}
	m := req.Msg
	for _, f := range []struct{ name, v string }{{"id", m.Id}, {"raft_address", m.RaftAddress}, {"http_address", m.HttpAddress}} {
		if err := checkName(f.name, f.v); err != nil {
			return nil, err
		}
	}
	for _, f := range []struct{ name, v string }{{"raft_address", m.RaftAddress}, {"http_address", m.HttpAddress}} {
		if _, _, err := net.SplitHostPort(f.v); err != nil {
			return nil, fieldError(f.name, "%q is not host:port", f.v)
		}
	}
	if res, local, err := forward(ctx, n, req, func(ctx context.Context, c leaderClients, r *connect.Request[sluicev1.JoinNodeRequest]) (*connect.Response[sluicev1.JoinNodeResponse], error) {
		return c.admin.JoinNode(ctx, r)
	}); !local {
		return res, err
	}
	if err := n.cluster.join(ctx, m.Id, m.RaftAddress, m.HttpAddress); err != nil {
		return nil, raftError(err)
	}
	n.log.Info("node joined", "id", m.Id, "raft", m.RaftAddress, "http", m.HttpAddress)
	return connect.NewResponse(&sluicev1.JoinNodeResponse{Members: n.cluster.members()}), nil
}

func (s *adminService) RemoveNode(ctx context.Context, req *connect.Request[sluicev1.RemoveNodeRequest]) (*connect.Response[sluicev1.RemoveNodeResponse], error) {
	n := s.n
	if err := n.admin(req.Header()); err != nil {
		return nil, err
	}
	if err := checkName("id", req.Msg.Id); err != nil {
		return nil, err
	}
	if res, local, err := forward(ctx, n, req, func(ctx context.Context, c leaderClients, r *connect.Request[sluicev1.RemoveNodeRequest]) (*connect.Response[sluicev1.RemoveNodeResponse], error) {
		return c.admin.RemoveNode(ctx, r)
	}); !local {
		return res, err
	}
	if req.Msg.Id == n.cfg.ID {
		return nil, fieldError("id", "%q is the leader; transfer leadership first, then remove it through another node", req.Msg.Id)
	}
	if err := n.cluster.checkMember(req.Msg.Id); err != nil {
		return nil, err
	}
	if err := n.cluster.remove(ctx, req.Msg.Id); err != nil {
		return nil, raftError(err)
	}
	n.log.Info("node removed", "id", req.Msg.Id)
	return connect.NewResponse(&sluicev1.RemoveNodeResponse{Members: n.cluster.members()}), nil
}

func (s *adminService) TransferLeadership(ctx context.Context, req *connect.Request[sluicev1.TransferLeadershipRequest]) (*connect.Response[sluicev1.TransferLeadershipResponse], error) {
	n := s.n
	if err := n.admin(req.Header()); err != nil {
		return nil, err
	}
	if res, local, err := forward(ctx, n, req, func(ctx context.Context, c leaderClients, r *connect.Request[sluicev1.TransferLeadershipRequest]) (*connect.Response[sluicev1.TransferLeadershipResponse], error) {
		return c.admin.TransferLeadership(ctx, r)
	}); !local {
		return res, err
	}
	var f raft.Future
	if id := req.Msg.Id; id != "" {
		var addr raft.ServerAddress
		for _, m := range n.cluster.members() {
			if m.Id == id {
				addr = raft.ServerAddress(m.RaftAddress)
			}
		}
		if addr == "" {
			return nil, fieldError("id", "%q is not a member", id)
		}
		f = n.raft.LeadershipTransferToServer(raft.ServerID(id), addr)
	} else {
		f = n.raft.LeadershipTransfer()
	}
	if err := f.Error(); err != nil {
		return nil, raftError(err)
	}
	// The new leader is known once it has sent its first heartbeat.
	deadline := time.Now().Add(n.cfg.ForwardHold)
	for time.Now().Before(deadline) {
		if id := n.leaderID(); id != "" && id != n.cfg.ID {
			return connect.NewResponse(&sluicev1.TransferLeadershipResponse{LeaderId: id}), nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return connect.NewResponse(&sluicev1.TransferLeadershipResponse{LeaderId: n.leaderID()}), nil
}

func (s *adminService) SetPolicy(ctx context.Context, req *connect.Request[sluicev1.SetPolicyRequest]) (*connect.Response[sluicev1.SetPolicyResponse], error) {
	n := s.n
	if err := n.admin(req.Header()); err != nil {
		return nil, err
	}
	if err := policy.Validate(req.Msg.Policy); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("policy: %w", err))
	}
	if res, local, err := forward(ctx, n, req, func(ctx context.Context, c leaderClients, r *connect.Request[sluicev1.SetPolicyRequest]) (*connect.Response[sluicev1.SetPolicyResponse], error) {
		return c.admin.SetPolicy(ctx, r)
	}); !local {
		return res, err
	}
	// The leader checks against its own state, the one the policy would
	// replace. A job submitted for a removed tenant between this check and
	// the entry's commit is not seen: the check is a guard rail, not a lock.
	if !req.Msg.Force {
		if err := lockout(n.fsm.Policy(), req.Msg.Policy, n.fsm.ActiveJobs); err != nil {
			return nil, connect.NewError(connect.CodeFailedPrecondition, err)
		}
	}
	safe := n.chall.readsChallenges(ctx)
	if policyHasChallenges(req.Msg.Policy) && !safe {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
			"policy: a CHALLENGE rule needs every server to read log format %d, and not every server has said so yet (one is down, or runs an older build); retry once all are up", challengeFormat))
	}
	if field := sizeReservation(req.Msg.Policy); field != "" && !n.chall.readsFormat(ctx, sizesFormat) {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
			"policy: %s needs every server to read log format %d, and not every server has said so yet (one is down, or runs an older build); retry once all are up", field, sizesFormat))
	}
	if req.Msg.DryRun {
		return connect.NewResponse(&sluicev1.SetPolicyResponse{}), nil
	}
	res, err := n.propose(ctx, fsm.CmdSetPolicy, n.setPolicyCommand(req.Msg.Policy, safe))
	if err != nil {
		return nil, writeError(err)
	}
	if res.Err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("policy: %w", res.Err))
	}
	return connect.NewResponse(&sluicev1.SetPolicyResponse{}), nil
}

func (s *adminService) GetPolicy(ctx context.Context, req *connect.Request[sluicev1.GetPolicyRequest]) (*connect.Response[sluicev1.GetPolicyResponse], error) {
	n := s.n
	if err := n.admin(req.Header()); err != nil {
		return nil, err
	}
	n.desk.readYourWrites(ctx)
	return connect.NewResponse(&sluicev1.GetPolicyResponse{Policy: n.fsm.Policy()}), nil
}

// checkMember answers not_found, listing the members, when id is neither in
// the raft configuration nor recorded in the log (a server half removed
// is still removable).
func (n membership) checkMember(id string) error {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return raftError(err)
	}
	var ids []string
	for _, srv := range f.Configuration().Servers {
		if string(srv.ID) == id {
			return nil
		}
		ids = append(ids, string(srv.ID))
	}
	if _, ok := n.fsm.Member(id); ok {
		return nil
	}
	return connect.NewError(connect.CodeNotFound, fmt.Errorf("id: %q is not a member (members: %s); `sluice admin members` lists them",
		id, strings.Join(ids, ", ")))
}

// raftError maps a failed membership change.
func raftError(err error) error {
	if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrLeadershipTransferInProgress) {
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("%w; retry shortly", err))
	}
	return connect.NewError(connect.CodeFailedPrecondition, err)
}

// markUnreachable flags a member this node cannot reach, with the time
// since it last heard from it (none if it never did).
func (n membership) markUnreachable(m *sluicev1.Member, heard time.Time) {
	m.Unreachable = true
	m.LastContact = nil
	if !heard.IsZero() {
		m.LastContact = durationpb.New(time.Since(heard))
	}
}

// selfOnlyHeader asks GetClusterStatus for the answering node's own view
// only (a node asking its peers sets it, so that they do not ask theirs).
const selfOnlyHeader = "Sluice-Self-Only"

// fillPeers asks every other member for its own term, commit and applied
// index and last contact, in parallel, briefly; a member that does not
// answer keeps its blanks.
func (n membership) fillPeers(ctx context.Context, auth string, ms []*sluicev1.Member) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, m := range ms {
		if m.Id == n.cfg.ID || m.HttpAddress == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := connect.NewRequest(&sluicev1.GetClusterStatusRequest{})
			req.Header().Set("Authorization", auth)
			req.Header().Set(selfOnlyHeader, "1")
			res, err := n.route.clientsFor(n.peerURL(m.HttpAddress)).admin.GetClusterStatus(ctx, req)
			if err != nil {
				heard, _ := n.contact.view(m.Id)
				n.markUnreachable(m, heard)
				return
			}
			n.contact.answered(m.Id, time.Now())
			for _, self := range res.Msg.Members {
				if self.Id == m.Id {
					m.Term, m.CommitIndex, m.AppliedIndex, m.LastContact = self.Term, self.CommitIndex, self.AppliedIndex, self.LastContact
				}
			}
		}()
	}
	wg.Wait()
}
