package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/admission"
	"github.com/sluicehq/sluice/fsm"
	"github.com/sluicehq/sluice/limiter"
	"github.com/sluicehq/sluice/policy"
	"github.com/sluicehq/sluice/predict"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
	"github.com/sluicehq/sluice/scheduler"
)

// Page sizes for ListJobs.
const (
	DefaultPageSize = 50
	MaxPageSize     = 1000
)

type jobService struct {
	sluicev1connect.UnimplementedJobServiceHandler
	n *Node
}

func (s *jobService) Submit(ctx context.Context, req *connect.Request[sluicev1.SubmitRequest]) (*connect.Response[sluicev1.SubmitResponse], error) {
	n := s.n
	if p := req.Header().Get(challengePassHeader); p != "" {
		req.Msg.ChallengePasses = append(req.Msg.ChallengePasses, p) // so that it is forwarded with the message
	}
	sub, res, err := n.desk.checkSubmit(ctx, req.Header().Get("Authorization"), n.checks.clientIP(req.Peer().Addr, req.Header()), req.Msg)
	if res != nil || err != nil {
		return res, err
	}
	if res, local, err := n.route.forwardSubmit(ctx, req.Header(), sub.clientIP, req.Msg); !local {
		if err == nil {
			// This node's next reads wait until it has applied what the leader
			// had applied when it answered (readYourWrites). Waiting here
			// instead would hold every forwarded Submit until the leader next
			// tells this follower its commit index, 5–10 ms when writes are few.
			if i, perr := strconv.ParseUint(res.Header().Get(appliedIndexHeader), 10, 64); perr == nil {
				n.desk.noteForwarded(i)
			} else if id, perr := ParseJobID(res.Msg.GetJob().GetId()); perr == nil {
				// A leader from before group commit: its job ids are log indexes.
				n.desk.noteForwarded(id)
			}
		}
		return res, err
	}
	if err := n.chall.verifyChallenges(ctx, &sub); err != nil {
		return nil, err
	}
	if err := n.desk.precheckSubmit(sub); err != nil {
		return nil, err
	}
	r, err := n.propose(ctx, fsm.CmdSubmit, sub.command())
	out := connect.NewResponse[sluicev1.SubmitResponse](nil)
	if out.Msg, err = n.desk.answerSubmit(sub, r, err, out.Header()); err != nil {
		return nil, err
	}
	return out, nil
}

// A Submit is served in three steps: the checks any node makes
// (checkSubmit), the leader's read-only look at the limits (precheckSubmit),
// and, once its log entry is applied, the answer (answerSubmit). A follower
// forwards it after the first; the leader runs a forwarded batch's through
// each step together (api_forward.go).

// submission is a Submit that passed the checks: its caller and what it
// asks.
type submission struct {
	tenant   *sluicev1.Tenant
	keyHash  string // of the caller's API key
	clientIP string
	spec     *sluicev1.JobSpec
	// Challenges (challenges.go): what the request carries, and what
	// verifyChallenges found it earns.
	answer   *sluicev1.ChallengeAnswer
	passes   []string
	exempt   []string               // rules a pass or the answer exempts it from
	passUsed []string               // rules a pass exempts it from
	spend    *raftv1.ChallengeSpend // the answered challenge
	subject  string                 // whom the answered challenge was issued to
}

// request is sub as the leader's admission sequence takes it.
func (sub submission) request() *admission.Submit {
	return &admission.Submit{Tenant: sub.tenant, APIKey: sub.keyHash, ClientIP: sub.clientIP, Spec: sub.spec, Exempt: sub.exempt, Spend: sub.spend}
}

// command is the log command that admits sub.
func (sub submission) command() *raftv1.Submit { return sub.request().Command() }

// checkSubmit runs the checks any node makes on a Submit from the client
// with that Authorization header and IP. A known idempotency key is
// answered at once (res).
func (n jobDesk) checkSubmit(ctx context.Context, authorization, clientIP string, msg *sluicev1.SubmitRequest) (sub submission, res *connect.Response[sluicev1.SubmitResponse], err error) {
	t, keyHash, err := n.callerWith(authorization)
	if err != nil {
		return sub, nil, err
	}
	spec := msg.GetSpec()
	if err := ValidateSpec(spec, n.modelSet(), time.Now()); err != nil {
		return sub, nil, err
	}
	if m, ok := n.fsm.Model(spec.GetModel()); ok && m.Size != nil {
		var fe *predict.FieldError
		if _, _, err := predict.Features(m.Size, spec.GetInput()); errors.As(err, &fe) {
			return sub, nil, fieldError(fe.Field, "%s", fe.Reason)
		}
	}
	if err := n.checkSubmitWebhook(ctx, t, spec.GetWebhook()); err != nil {
		return sub, nil, err
	}
	// A retry with a known idempotency key needs no log entry and no limit.
	if id, ok := n.fsm.IdempotentJob(t.Name, spec.IdempotencyKey); ok {
		if job, ok := n.publicJob(id); ok {
			out := connect.NewResponse(&sluicev1.SubmitResponse{Job: job, Deduplicated: true})
			n.setAppliedIndex(out.Header())
			return sub, out, nil
		}
	}
	return submission{tenant: t, keyHash: keyHash, clientIP: clientIP, spec: spec,
		answer: msg.GetChallengeAnswer(), passes: msg.GetChallengePasses()}, nil, nil
}

// precheckSubmit is the leader's read-only look at a Submit's limits,
// placement and backpressure (admission.Precheck, as the simulator's), so
// that clear refusals never touch the log.
func (n jobDesk) precheckSubmit(sub submission) error {
	model, ok := n.fsm.Model(sub.spec.Model)
	if !ok || !n.IsLeader() {
		return nil
	}
	var d limiter.Decision
	return n.refusal(sub, admission.Precheck(n.fsm, nodeExecutors{n: n.Node}, n.admissionPlan().plan, sub.request(), model, time.Now().UnixNano(), &d, n.sizing()))
}

// refusal is the answer to a Submit that an admission step refused (nil
// for Proceed and Admitted), with its metrics.
func (n jobDesk) refusal(sub submission, v admission.Verdict) error {
	t := sub.tenant
	switch v.Outcome {
	case admission.Rejected:
		n.metrics.Submit("rejected", v.Rule, v.Rules)
		n.rejected.note(v.Rule, t.Name, time.Now())
		n.shadows.note(n.log, v.Rules, t.Name)
		return n.checks.limitError(t.Name, v.Rule, v.RetryAt, v.Rules, v.Detail)
	case admission.Challenged:
		n.metrics.Submit("challenged", v.Rule, v.Rules)
		n.shadows.note(n.log, v.Rules, t.Name)
		return n.chall.challengeError(sub, v.Rule, v.RetryAt, v.Rules)
	case admission.Replayed:
		outcome := challengeReplayed
		if v.Expired {
			outcome = challengeFailed
		}
		for r := range strings.SplitSeq(v.Rule, ruleSep) {
			n.chall.noteChallenge(r, t.Name, outcome)
		}
		return replayError(v.Detail)
	case admission.Unplaceable:
		n.metrics.Submit("unplaceable", "", nil)
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
			"spec: no connected executor can ever run this job: %s (the policy's scheduling.refuse_unplaceable); ask for less, or connect an executor that has it", v.Why))
	case admission.Busy:
		n.metrics.Submit("busy", "", nil)
		n.rejected.note("busy", t.Name, time.Now())
		wait := v.Wait
		if m, ok := n.fsm.Model(sub.spec.GetModel()); ok && wait == 0 {
			wait = admission.PredictedWait(n.fsm, nodeExecutors{n: n.Node}, m, n.sizing())
		}
		return busyError(v.Busy, wait)
	case admission.Failed:
		return resultError(fsm.Result{Err: v.Err})
	}
	return nil
}

// answerSubmit is the answer to a Submit whose proposal gave res, or err;
// the response's headers go into h.
func (n jobDesk) answerSubmit(sub submission, res fsm.Result, err error, h http.Header) (*sluicev1.SubmitResponse, error) {
	if err != nil {
		return nil, writeError(err)
	}
	t := sub.tenant
	if err := n.refusal(sub, admission.Applied(res)); err != nil {
		return nil, err
	}
	job, eta, ok := n.publicJobETA(res.JobID)
	if !ok {
		// Retention cannot have dropped it yet; be safe anyway.
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("job %d vanished after admission", res.JobID))
	}
	if !res.Deduplicated {
		if job.State == sluicev1.JobState_JOB_STATE_QUEUED && eta.known {
			n.etaCal.follow(res.JobID, t.Tier, eta.model, eta.Band, time.Until(job.GetReadyAt().AsTime()))
		}
		if m, ok := n.fsm.Model(job.Spec.GetModel()); ok {
			n.tierLoad.add(t.Tier, n.service.expected(m.Name, m.GetDefaultDuration().AsDuration()), time.Now().UnixNano())
		}
		n.countAdmission(job, res.Limits)
		n.shadows.note(n.log, res.Limits, t.Name)
	}
	n.checks.setRateLimitHeaders(h, res.Limits, time.Now())
	n.setAppliedIndex(h)
	out := &sluicev1.SubmitResponse{Job: job, Deduplicated: res.Deduplicated}
	if !res.Deduplicated {
		for _, r := range sub.passUsed {
			n.chall.noteChallenge(r, t.Name, challengePassUsed)
		}
		if sub.spend != nil {
			for r := range strings.SplitSeq(sub.spend.Rule, ruleSep) {
				n.chall.noteChallenge(r, t.Name, challengePassed)
			}
			out.ChallengePass = n.chall.challengePass(sub)
		}
	}
	return out, nil
}

// countAdmission counts an admitted Submit in the metrics: how it was
// admitted and the wait it was promised.
func (n jobDesk) countAdmission(job *sluicev1.Job, rules []limiter.RuleResult) {
	if n.metrics == nil {
		return
	}
	outcome, rule := "admitted", ""
	switch a := job.GetAdmission(); {
	case a.GetDegradedBy() != "":
		outcome, rule = "degraded", a.DegradedBy
	case a.GetDelayedBy() != "":
		outcome, rule = "delayed", a.DelayedBy
	}
	n.metrics.Submit(outcome, rule, rules)
	n.metrics.PredictedWait(time.Duration(job.EtaSeconds) * time.Second)
}

// appliedIndexHeader carries, on a Submit's reply, the log index the node
// had applied when it answered: at or past the entry that holds the job
// (job ids are not log indexes once several Submits share an entry).
const appliedIndexHeader = "Sluice-Applied-Index"

func (n jobDesk) setAppliedIndex(h http.Header) {
	h.Set(appliedIndexHeader, strconv.FormatUint(n.fsm.LastIndex(), 10))
}

func (s *jobService) GetUsage(ctx context.Context, req *connect.Request[sluicev1.GetUsageRequest]) (*connect.Response[sluicev1.GetUsageResponse], error) {
	n := s.n
	t, keyHash, err := n.caller(req.Header())
	if err != nil {
		return nil, err
	}
	if err := n.checks.limitRead("GetUsage", t, keyHash, n.checks.clientIP(req.Peer().Addr, req.Header())); err != nil {
		return nil, err
	}
	if !n.IsLeader() && n.chall.hasChallengeRules() {
		// The leader counts challenges (challengeBook): ask it.
		if res, local, err := forward(ctx, n, req, func(ctx context.Context, c leaderClients, r *connect.Request[sluicev1.GetUsageRequest]) (*connect.Response[sluicev1.GetUsageResponse], error) {
			return c.jobs.GetUsage(ctx, r)
		}); !local {
			return res, err
		}
	}
	n.desk.readYourWrites(ctx)
	now := time.Now()
	out := &sluicev1.GetUsageResponse{Tenant: t.Name, Tier: t.Tier}
	for _, m := range n.fsm.Policy().GetModels() {
		out.Models = append(out.Models, m.Name)
	}
	slices.Sort(out.Models)
	seen := map[string]bool{}
	lreq := limiter.Request{Tenant: t.Name, APIKey: keyHash, Tier: t.Tier,
		ClientIP: n.checks.clientIP(req.Peer().Addr, req.Header()), Method: "Submit"}
	// Rules may match on the model, so ask once per model and merge.
	for _, m := range n.fsm.Policy().GetModels() {
		lreq.Model = m.Name
		for _, u := range n.fsm.Usage(lreq, now.UnixNano()) {
			if seen[u.Rule] {
				continue
			}
			seen[u.Rule] = true
			ru := &sluicev1.RuleUsage{Rule: u.Rule, Used: u.Used, Limit: u.Limit, Remaining: u.Remaining, Shadow: u.Shadow}
			if u.ResetAt > 0 {
				ru.ResetsAt = ts(u.ResetAt)
			}
			if r, ok := n.fsm.Rule(u.Rule); ok {
				ru.Unit, ru.Description = ruleUnit(r), policy.RuleDescription(r)
				if _, ok := policy.ChallengeOf(r); ok {
					ru.Challenges = n.challenges.of(u.Rule, t.Name)
				}
			}
			out.Rules = append(out.Rules, ru)
		}
	}
	return connect.NewResponse(out), nil
}

func (s *jobService) GetJob(ctx context.Context, req *connect.Request[sluicev1.GetJobRequest]) (*connect.Response[sluicev1.GetJobResponse], error) {
	if req.Msg.Consistent {
		if res, local, err := forward(ctx, s.n, req, func(ctx context.Context, c leaderClients, r *connect.Request[sluicev1.GetJobRequest]) (*connect.Response[sluicev1.GetJobResponse], error) {
			return c.jobs.GetJob(ctx, r)
		}); !local {
			return res, err
		}
		if err := s.n.desk.verifyLeader(); err != nil {
			return nil, err
		}
	}
	_, job, err := s.ownJob(ctx, req.Header(), req.Peer().Addr, "GetJob", req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&sluicev1.GetJobResponse{Job: job}), nil
}

func (s *jobService) WatchJob(ctx context.Context, req *connect.Request[sluicev1.WatchJobRequest], stream *connect.ServerStream[sluicev1.WatchJobResponse]) error {
	return s.watch(ctx, req.Header(), req.Peer().Addr, req.Msg, func(job *sluicev1.Job) error {
		return stream.Send(&sluicev1.WatchJobResponse{Job: job})
	})
}

// watch sends the job (with the caller's key in h) at once and at every
// change until it is final or ctx ends: WatchJob and the server-sent events
// of /v1/jobs/{id}/events.
func (s *jobService) watch(ctx context.Context, h http.Header, peer string, msg *sluicev1.WatchJobRequest, send func(*sluicev1.Job) error) error {
	key, cerr := bearer(h)
	if cerr != nil {
		return cerr
	}
	release, err := s.n.streams.hold(policy.HashKey(key))
	if err != nil {
		return err
	}
	defer release()
	if msg.Consistent && !s.n.IsLeader() {
		return s.n.desk.relayWatch(ctx, h, msg, send)
	}
	id, job, err := s.ownJob(ctx, h, peer, "WatchJob", msg.GetId())
	if err != nil {
		return err
	}
	// ETAs drift with the clock and progress is not in the log; refresh
	// now and then even when nothing is committed.
	refresh := time.NewTicker(250 * time.Millisecond)
	defer refresh.Stop()
	var last *sluicev1.Job
	var told watchETA
	var read time.Time
	for {
		// Under a stream of commits every watcher would re-read its job at
		// each: with thousands watching, that is what the node would do.
		// A watcher reads at most every watchMinInterval.
		if wait := watchMinInterval - time.Since(read); wait > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
			if job, err = s.n.desk.watchedJob(id, &told); err != nil {
				return err
			}
		}
		read = time.Now()
		changed := s.n.changes.wait()
		if last == nil || watchDiffers(last, job) {
			if err := send(job); err != nil {
				return err
			}
			last = job
		}
		if fsm.IsTerminal(job.State) {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.n.ctx.Done():
			return connect.NewError(connect.CodeUnavailable, errors.New("node shutting down; watch again"))
		case <-changed:
		case <-refresh.C:
		}
		if job, err = s.n.desk.watchedJob(id, &told); err != nil {
			return err
		}
	}
}

// watchMinInterval is the least time between two reads of a watched job.
const watchMinInterval = 100 * time.Millisecond

// watchedJob reads a watched job again, its ETA as told says.
func (n jobDesk) watchedJob(id uint64, told *watchETA) (*sluicev1.Job, error) {
	v, ok := n.fsm.View(id)
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("job %d no longer exists (past its retention)", id))
	}
	now := time.Now()
	e, ok := told.reuse(v, now)
	if !ok || n.execs.placed(id, v.Job.Attempt) { // placed: eta tells it it starts
		e = n.eta(v)
		*told = watchETA{eta: e, at: now, attempt: v.Job.Attempt, position: v.Position, queued: v.Job.State == sluicev1.JobState_JOB_STATE_QUEUED}
	}
	return n.withSoftState(publicJob(v, e), v), nil
}

// watchETA is the ETA a watcher last read of its queued job. A watcher
// reads its job at every commit (at most every watchMinInterval), and a
// queued job's ETA walks the line ahead of it (up to 2,000 jobs, each
// predicted: a third of a millisecond); a job far from its start does
// not need it ten times a second. While it is still queued in the same
// attempt and no job of its model has started or left ahead of it (its
// place in queue order is the same), an ETA of etaReuseFrom or more is
// reused for up to etaReuseFor as it was (not counted down: the models'
// averages tell a queued job the same until a job ahead starts, and a
// countdown would rise at the next read); a change of state, of place, or
// a placement is still read at once.
type watchETA struct {
	eta      jobETA
	at       time.Time
	attempt  int32
	position int // fsm.JobView.Position, queue order
	queued   bool
}

const (
	etaReuseFrom = 10 * time.Second
	etaReuseFor  = time.Second
)

// reuse is the ETA to tell v at now from the last one, if it may be reused.
func (w *watchETA) reuse(v fsm.JobView, now time.Time) (jobETA, bool) {
	since, j := now.Sub(w.at), v.Job
	if !w.queued || j.State != sluicev1.JobState_JOB_STATE_QUEUED || j.Attempt != w.attempt || v.Position != w.position ||
		!w.eta.known || w.eta.P50 < etaReuseFrom || since < 0 || since >= etaReuseFor {
		return jobETA{}, false
	}
	return w.eta, true
}

// watchDiffers reports whether a watcher should hear about b after a.
func watchDiffers(a, b *sluicev1.Job) bool {
	return a.State != b.State || a.QueuePosition != b.QueuePosition || a.EtaSeconds != b.EtaSeconds ||
		a.EtaP10Seconds != b.EtaP10Seconds || a.EtaP90Seconds != b.EtaP90Seconds ||
		a.Attempt != b.Attempt || a.Executor != b.Executor || len(a.Transitions) != len(b.Transitions) ||
		a.Progress != b.Progress || a.ProgressText != b.ProgressText || a.WaitingReason != b.WaitingReason ||
		a.EtaUnknown != b.EtaUnknown
}

func (s *jobService) CancelJob(ctx context.Context, req *connect.Request[sluicev1.CancelJobRequest]) (*connect.Response[sluicev1.CancelJobResponse], error) {
	t, err := s.n.tenant(req.Header())
	if err != nil {
		return nil, err
	}
	id, err := ParseJobID(req.Msg.GetId())
	if err != nil {
		return nil, fieldError("id", "%v", err)
	}
	if res, local, err := forward(ctx, s.n, req, func(ctx context.Context, c leaderClients, r *connect.Request[sluicev1.CancelJobRequest]) (*connect.Response[sluicev1.CancelJobResponse], error) {
		return c.jobs.CancelJob(ctx, r)
	}); !local {
		return res, err
	}
	res, err := s.n.propose(ctx, fsm.CmdCancel, &raftv1.Cancel{JobId: id, Tenant: t.Name})
	if err != nil {
		return nil, writeError(err)
	}
	if res.Err != nil {
		return nil, resultError(res)
	}
	job, ok := s.n.desk.publicJob(id)
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("job %d not found", id))
	}
	return connect.NewResponse(&sluicev1.CancelJobResponse{Job: job}), nil
}

func (s *jobService) ListJobs(ctx context.Context, req *connect.Request[sluicev1.ListJobsRequest]) (*connect.Response[sluicev1.ListJobsResponse], error) {
	if req.Msg.Consistent {
		if res, local, err := forward(ctx, s.n, req, func(ctx context.Context, c leaderClients, r *connect.Request[sluicev1.ListJobsRequest]) (*connect.Response[sluicev1.ListJobsResponse], error) {
			return c.jobs.ListJobs(ctx, r)
		}); !local {
			return res, err
		}
		if err := s.n.desk.verifyLeader(); err != nil {
			return nil, err
		}
	}
	t, keyHash, err := s.n.caller(req.Header())
	if err != nil {
		return nil, err
	}
	if err := s.n.checks.limitRead("ListJobs", t, keyHash, s.n.checks.clientIP(req.Peer().Addr, req.Header())); err != nil {
		return nil, err
	}
	s.n.desk.readYourWrites(ctx)
	size, err := pageSize(req.Msg.GetPageSize())
	if err != nil {
		return nil, err
	}
	var before uint64
	if tok := req.Msg.GetPageToken(); tok != "" {
		if before, err = ParseJobID(tok); err != nil {
			return nil, fieldError("page_token", "not a token from a previous response")
		}
	}
	for i, st := range req.Msg.GetStates() {
		if _, ok := sluicev1.JobState_name[int32(st)]; !ok || st == sluicev1.JobState_JOB_STATE_UNSPECIFIED {
			return nil, fieldError(fmt.Sprintf("states[%d]", i), "%d is not a job state", st)
		}
	}
	views, more := s.n.fsm.ListJobs(t.Name, req.Msg.GetStates(), before, size)
	out := &sluicev1.ListJobsResponse{Jobs: make([]*sluicev1.Job, len(views))}
	eta := s.n.desk.listETAs(views)
	for i, v := range views {
		out.Jobs[i] = s.n.desk.withSoftState(publicJob(v, eta(v)), v)
	}
	if more && len(views) > 0 {
		out.NextPageToken = FormatJobID(views[len(views)-1].Job.Id)
	}
	return connect.NewResponse(out), nil
}

// pageSize checks a request's page_size: 0 means the default.
func pageSize(v int32) (int, error) {
	switch {
	case v < 0 || v > MaxPageSize:
		return 0, fieldError("page_size", "%d is outside the range 0–%d", v, MaxPageSize)
	case v == 0:
		return DefaultPageSize, nil
	}
	return int(v), nil
}

// ownJob resolves the caller and one of its jobs; another tenant's job is
// NotFound, exactly like a missing one.
func (s *jobService) ownJob(ctx context.Context, h http.Header, peer, method, rawID string) (uint64, *sluicev1.Job, error) {
	t, keyHash, err := s.n.caller(h)
	if err != nil {
		return 0, nil, err
	}
	if err := s.n.checks.limitRead(method, t, keyHash, s.n.checks.clientIP(peer, h)); err != nil {
		return 0, nil, err
	}
	s.n.desk.readYourWrites(ctx)
	id, err := ParseJobID(rawID)
	if err != nil {
		return 0, nil, fieldError("id", "%v", err)
	}
	job, ok := s.n.desk.publicJob(id)
	if !ok || job.Tenant != t.Name {
		return 0, nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("job %d not found", id))
	}
	return id, job, nil
}

// publicJob reads a job with its position and ETA.
func (n jobDesk) publicJob(id uint64) (*sluicev1.Job, bool) {
	job, _, ok := n.publicJobETA(id)
	return job, ok
}

// publicJobETA is publicJob with the ETA it carries.
func (n jobDesk) publicJobETA(id uint64) (*sluicev1.Job, jobETA, bool) {
	v, ok := n.fsm.View(id)
	if !ok {
		return nil, jobETA{}, false
	}
	e := n.eta(v)
	return n.withSoftState(publicJob(v, e), v), e, true
}

// withSoftState adds what only the leader knows, from its executors: the
// progress a running job's executor last reported, and why a queued job
// cannot start on any executor connected now.
func (n jobDesk) withSoftState(job *sluicev1.Job, v fsm.JobView) *sluicev1.Job {
	j := v.Job
	if j.State == sluicev1.JobState_JOB_STATE_RUNNING || j.State == sluicev1.JobState_JOB_STATE_QUEUED {
		if m, ok := n.fsm.Model(j.Spec.GetModel()); ok {
			kind := "" // a queued job's GPUs are not known yet
			if j.State == sluicev1.JobState_JOB_STATE_RUNNING {
				kind = n.execs.gpuKind(j.Executor)
			}
			mean, sd, sized := n.service.runTime(m, kind, j.Spec.GetInput())
			b := scheduler.RunBand(0, mean, sd)
			job.Prediction = &sluicev1.RunPrediction{Run: durationpb.New(b.P50), P10: durationpb.New(b.P10), P90: durationpb.New(b.P90), Sized: sized}
		}
	}
	switch j.State {
	case sluicev1.JobState_JOB_STATE_RUNNING:
		if p, ok := n.execs.progressOf(j.Executor, j.Id, j.Attempt); ok {
			job.Progress, job.ProgressText = p.fraction, p.text
		}
	case sluicev1.JobState_JOB_STATE_QUEUED:
		job.WaitingReason = n.execs.unplaceable(j.Spec.GetModel(), j.Spec.GetGpus(), j.Spec.GetGpuMemoryMb())
		if job.WaitingReason == "" && n.execs.connected() == 0 && n.Leading() {
			// Not "eta 0s": nothing could start it now. (A follower holds no
			// leases, and claims nothing.)
			job.WaitingReason = noExecutor
		}
	}
	return job
}

// noExecutor is why a queued job waits on a leader no executor has leased
// from (none started yet, or all lost; after a failover, until they lease
// again): its ETA is unknown. Soft state; admission never refuses for it.
const noExecutor = "no executor is connected"

// verifyLeader confirms, with a quorum, that this node still leads: a
// consistent read served after it sees every write acknowledged before.
func (n jobDesk) verifyLeader() error {
	if err := n.raft.VerifyLeader().Error(); err != nil {
		return n.route.notLeaderError()
	}
	return nil
}

// relayWatch serves a consistent watch from a follower by relaying the
// leader's stream.
func (n jobDesk) relayWatch(ctx context.Context, h http.Header, msg *sluicev1.WatchJobRequest, send func(*sluicev1.Job) error) error {
	base, err := n.route.leaderBase()
	if err != nil {
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("%w; retry shortly", err))
	}
	out := connect.NewRequest(msg)
	out.Header().Set("Authorization", h.Get("Authorization"))
	up, err := n.route.clientsFor(base).jobs.WatchJob(ctx, out)
	if err != nil {
		return relayError(ctx, base, err)
	}
	defer up.Close()
	for up.Receive() {
		if err := send(up.Msg().GetJob()); err != nil {
			return err
		}
	}
	if err := up.Err(); err != nil {
		return relayError(ctx, base, err)
	}
	return nil
}

// minProgress is the least progress a running job's time left is read
// from: below it, the pace says little yet.
const minProgress = 0.05

// paceBand is the time left of an attempt started at started whose
// executor said at p.at that it was p.fraction done. Its progress now is
// taken as the pace of that report carries it (fraction·elapsed/ran, ran
// the time it had run then), but no further than halfway from the report
// to done: past that without a new report it has slowed or stalled, and
// the longer it stays quiet, the longer it is told it needs. At progress
// p it needs elapsed/p in all, as sure as the part left (sd, the model's
// spread, times 1 − p), and it is told what runs that long have left
// (scheduler.RestBand). So between two reports the time left falls as the
// clock runs, where reading the last fraction at now made it grow (a job
// 10 % done at 0.2 s was told 2.3 s left at 0.25 s and 4.5 s at 0.5 s), and
// a stalled one is not told 0.
func paceBand(p progressReport, started, now int64, sd time.Duration) scheduler.Band {
	elapsed := float64(now - started)
	progress := p.fraction
	if ran := float64(p.at - started); ran > 0 && p.at <= now { // else no time of its own (or clocks that disagree): the fraction is now's
		progress = min(p.fraction*elapsed/ran, (1+p.fraction)/2)
	}
	run := scheduler.RunTime{Mean: time.Duration(elapsed / progress), SD: time.Duration(float64(sd) * (1 - progress))}
	return scheduler.RestBand(run, time.Duration(now-started))
}

// jobETA is a job's ETA with its band, or unknown (known false: no
// executor serves its model).
type jobETA struct {
	scheduler.Band
	model scheduler.Band // before calibration (a queued job's)
	known bool
	// place is a queued job's place in line as its ETA counts it
	// (admission.QueuedPlace), 0 where not projected: the view's then.
	place int
}

// eta estimates the wait of a queued job, or the remaining run time of a
// running one, with its p10–p90 band.
func (n jobDesk) eta(v fsm.JobView) jobETA {
	return n.etaOf(v, n.fsm, nodeExecutors{n: n.Node}, n.sizing())
}

// listETAs is eta for a list's rows, the same ETAs at a fraction of the
// cost: the queued rows read the jobs ahead of them from one walk of the
// queue, as far as the last of them, and predict each job's run time once
// (admission.ListState), and what each slot runs is read once for the
// whole list.
func (n jobDesk) listETAs(rows []fsm.JobView) func(fsm.JobView) jobETA {
	x := nodeExecutors{n: n.Node, lanes: map[string][]scheduler.Lane{}}
	var queued []uint64 // the walk ends at the last that is still queued and ready
	for _, v := range rows {
		if v.Job.State == sluicev1.JobState_JOB_STATE_QUEUED {
			queued = append(queued, v.Job.Id)
		}
	}
	f, sizes := admission.ListState(n.fsm, queued), n.sizing()
	return func(v fsm.JobView) jobETA { return n.etaOf(v, f, x, sizes) }
}

// etaOf is eta, reading the queue from f, asking x of the executors and
// sizing queued jobs by sizes.
func (n jobDesk) etaOf(v fsm.JobView, f admission.State, x nodeExecutors, sizes *admission.Sizing) jobETA {
	j := v.Job
	m, ok := n.fsm.Model(j.Spec.GetModel())
	if !ok {
		return jobETA{}
	}
	now := time.Now().UnixNano()
	switch j.State {
	case sluicev1.JobState_JOB_STATE_QUEUED:
		raw, place, ok := admission.QueuedPlace(f, x, j.Id, m, n.tierLoad.overtaking(j.Tier, n.admissionPlan().shares, now), sizes)
		if n.execs.placed(j.Id, j.Attempt) {
			// Starting: the dispatcher placed it before or while its ETA
			// was drawn (it runs beside the reads), and its own slot,
			// counted as busy, made it wait a whole run.
			return jobETA{known: true}
		}
		return jobETA{n.etaCal.told(j.Tier, raw, time.Duration(j.ReadyNs-now)), raw, ok, place}
	case sluicev1.JobState_JOB_STATE_RUNNING:
		mean, sd, _ := n.service.runTime(m, n.execs.gpuKind(j.Executor), j.Spec.GetInput())
		elapsed := time.Duration(now - j.StartedNs)
		if p, ok := n.execs.progressOf(j.Executor, j.Id, j.Attempt); ok && p.fraction >= minProgress && p.fraction < 1 {
			return jobETA{Band: paceBand(p, j.StartedNs, now, sd), known: true}
		}
		// Else what runs that long have left (past its mean, not 0).
		return jobETA{Band: scheduler.RestBand(scheduler.RunTime{Mean: mean, SD: sd}, elapsed), known: true}
	}
	return jobETA{known: true}
}

// modelSet is the set of the policy's model names, made once per policy:
// every Submit reads it, on the node that takes it and on the leader.
func (n jobDesk) modelSet() map[string]bool {
	p := n.fsm.Policy()
	if c := n.models.Load(); c != nil && c.policy == p {
		return c.names
	}
	out := make(map[string]bool, len(p.GetModels()))
	for _, m := range p.GetModels() {
		out[m.Name] = true
	}
	n.models.Store(&policyModels{policy: p, names: out})
	return out
}

// policyModels is the model names of one policy (the FSM replaces the
// policy, never changes it).
type policyModels struct {
	policy *sluicev1.Policy
	names  map[string]bool
}

// writeError maps a failed proposal to a Connect error.
func writeError(err error) error {
	switch {
	case errors.Is(err, errNotLeader), errors.Is(err, raft.ErrNotLeader):
		// Refused before it reached the log: a forwarding node may retry.
		e := connect.NewError(connect.CodeUnavailable, fmt.Errorf("%w; retry shortly", err))
		e.Meta().Set(notLeaderHeader, "1")
		return e
	case errors.Is(err, errOutcomeUnknown):
		// Not Unavailable: clients read that as safe to retry.
		return connect.NewError(connect.CodeUnknown, fmt.Errorf("%w; retry only with the same idempotency_key", err))
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	}
	return connect.NewError(connect.CodeUnavailable, fmt.Errorf("could not commit: %w", err))
}

// resultError maps a state machine result error to a Connect error.
func resultError(res fsm.Result) error {
	err := res.Err
	switch {
	case errors.Is(err, fsm.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("job %d not found", res.JobID))
	case errors.Is(err, fsm.ErrFinished):
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("job %d: %w", res.JobID, err))
	case errors.Is(err, fsm.ErrUnknownModel):
		return fieldError("spec.model", "%v", err)
	case errors.Is(err, fsm.ErrUnknownTenant):
		return connect.NewError(connect.CodeUnauthenticated, err)
	case errors.Is(err, fsm.ErrStale), errors.Is(err, fsm.ErrNotQueued):
		return connect.NewError(connect.CodeAborted, err)
	}
	return connect.NewError(connect.CodeInternal, err)
}

// noteForwarded records that a write this node forwarded was committed at index.
func (n jobDesk) noteForwarded(index uint64) {
	for {
		cur := n.forwarded.Load()
		if index <= cur || n.forwarded.CompareAndSwap(cur, index) {
			return
		}
	}
}

// readYourWrites holds a read served from this replica until it has applied every write
// this node forwarded and acknowledged, so that a client sees its own Submit on the node
// that took it (ForwardHold at most).
func (n jobDesk) readYourWrites(ctx context.Context) {
	if i := n.forwarded.Load(); i > 0 && n.fsm.LastIndex() < i {
		// A node that stops applying (cut off from the leader) serves its stale reads after
		// a second rather than holding every read for the whole ForwardHold.
		ctx, cancel := context.WithTimeout(ctx, readYourWritesWait)
		defer cancel()
		n.waitApplied(ctx, i)
	}
}

// readYourWritesWait bounds how long a read waits for this node's own forwarded writes.
const readYourWritesWait = time.Second

// waitApplied waits until this replica has applied the log up to index, or
// ForwardHold passes.
func (n jobDesk) waitApplied(ctx context.Context, index uint64) {
	deadline := time.NewTimer(n.cfg.ForwardHold)
	defer deadline.Stop()
	for {
		changed := n.changes.wait()
		if n.fsm.LastIndex() >= index {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			return
		case <-changed:
		}
	}
}
