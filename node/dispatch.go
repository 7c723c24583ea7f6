package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/fsm"

	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// idlePoll bounds how long the leader loop sleeps: delayed jobs become
// ready by the clock, not by an entry, so the loop looks again this often.
const idlePoll = 250 * time.Millisecond

// leaderLoop runs for the node's life. While this node leads it commits
// policy changes, ticks timers, requeues lost attempts after the lease
// grace period, and assigns ready jobs to free executor slots.
func (n leaderDuty) leaderLoop() {
	leaderCh := n.raft.LeaderCh()
	poll := time.NewTicker(idlePoll)
	defer poll.Stop()
	for {
		// Follow: wait until this node leads.
		for n.raft.State() != raft.Leader {
			select {
			case <-n.ctx.Done():
				return
			case <-leaderCh:
			case <-poll.C:
			}
		}
		n.lead(leaderCh)
		n.setReady(false)
		if n.ctx.Err() != nil {
			return
		}
	}
}

// relearnPerModel is how many of each model's latest succeeded jobs a new
// leader relearns run times from: more than its learners keep.
const relearnPerModel = 512

// lead runs one term of leadership; it returns when leadership is lost or
// the node stops.
func (n leaderDuty) lead(leaderCh <-chan bool) {
	since := time.Now()
	n.log.Info("leading", "id", n.cfg.ID)
	n.rejected.reset()
	n.challenges.reset()
	// Apply everything committed before acting on the state.
	if err := n.raft.Barrier(n.cfg.ApplyTimeout).Error(); err != nil {
		n.log.Warn("barrier after election", "err", err)
		return
	}
	if err := n.ensurePolicy(n.ctx); err != nil {
		n.log.Error("cannot apply the configured policy", "err", err)
		return
	}
	// Run times as the log has them, not as this node last saw them (or
	// never did).
	n.service.relearn(n.fsm.Succeeded(relearnPerModel), n.fsm.Model)
	if err := n.cluster.ensureMember(n.ctx); err != nil {
		n.log.Error("cannot record this node's address", "err", err)
		return
	}
	// Lease streams live as long as this term of leadership.
	termCtx, endTerm := context.WithCancel(n.ctx)
	n.cluster.setTerm(termCtx)
	gated := make(chan struct{})
	go func() {
		defer close(gated)
		n.cluster.gateBatches(termCtx)
	}()
	hooks := make(chan struct{})
	go func() {
		defer close(hooks)
		n.newWebhookSender().run(termCtx)
	}()
	defer func() {
		// Not leading before the executors go: else reads in between see a
		// leader with none (waiting_reason "no executor is connected").
		n.setReady(false)
		endTerm()
		<-hooks
		<-gated // so that it cannot turn group commit on after this
		n.proposer.enabled.Store(false)
		n.checksSafeUntil.Store(0)
		n.execs.clear()
		n.etaCal.reset()
	}()
	n.setReady(true)
	var lastReconcile time.Time
	wake := time.NewTimer(0)
	defer wake.Stop()
	for {
		changed := n.changes.wait()
		select {
		case <-n.ctx.Done():
			return
		case isLeader := <-leaderCh:
			if !isLeader {
				n.log.Info("lost leadership", "id", n.cfg.ID)
				return
			}
		case <-changed:
		case <-n.execs.freed:
		case <-wake.C:
		}
		if n.raft.State() != raft.Leader {
			return
		}
		n.stopStaleRuns()
		n.expireLeases()
		n.tickIfDue()
		if time.Since(since) >= n.cfg.LeaseGrace && time.Since(lastReconcile) >= time.Second {
			lastReconcile = time.Now()
			n.requeueLost()
		}
		n.dispatch()
		next := idlePoll
		if dl, ok := n.fsm.NextDeadline(); ok {
			if d := time.Until(time.Unix(0, dl)); d < next {
				next = max(d, time.Millisecond)
			}
		}
		wake.Reset(next)
	}
}

// tickIfDue commits a Tick when a timer (timeout, retention) is due.
func (n leaderDuty) tickIfDue() {
	dl, ok := n.fsm.NextDeadline()
	if !ok || dl > time.Now().UnixNano() {
		return
	}
	if _, err := n.propose(n.ctx, fsm.CmdTick, &raftv1.Tick{}); err != nil && !errors.Is(err, errNotLeader) {
		n.log.Warn("tick", "err", err)
	}
}

// stopStaleRuns tells executors to stop attempts that the log no longer
// has running there (canceled, timed out, or requeued).
func (n leaderDuty) stopStaleRuns() {
	for executor, runs := range n.execs.attempts() {
		for id, attempt := range runs {
			if a, ok := n.fsm.RunningAttempt(id); !ok || a != attempt {
				n.execs.stop(executor, id, attempt, "the job is no longer running this attempt (canceled, timed out or reassigned)")
			}
		}
	}
}

// expireLeases requeues the attempts of executors that missed three
// heartbeats, and forgets those executors until they lease again.
func (n leaderDuty) expireLeases() {
	for _, l := range n.execs.expired(time.Now(), 3*n.cfg.HeartbeatInterval) {
		held, _ := n.execs.detach(l.name, l.gen)
		n.metrics.Lost()
		n.log.Warn("executor lease expired", "executor", l.name, "attempts", len(held))
		for _, a := range held {
			n.requeue(a.Job, a.Attempt, fmt.Sprintf("executor %s missed its lease (no heartbeat for %v)", l.name, 3*n.cfg.HeartbeatInterval))
		}
	}
}

// requeueLost gives back running attempts that no executor holds: after a
// restart or failover the leases are gone until executors reconnect, and
// the attempt number fences any late report from the old run.
func (n leaderDuty) requeueLost() {
	for _, rj := range n.fsm.Running() {
		if n.execs.holds(rj.Executor, rj.ID, rj.Attempt) {
			continue
		}
		n.requeue(rj.ID, rj.Attempt, fmt.Sprintf("executor %s holds no lease for attempt %d (node restart, failover or executor lost)", rj.Executor, rj.Attempt))
	}
}

func (n leaderDuty) requeue(id uint64, attempt int32, reason string) {
	res, err := n.propose(n.ctx, fsm.CmdRequeue, &raftv1.Requeue{JobId: id, Attempt: attempt, Reason: reason})
	if err == nil && res.Err == nil {
		n.log.Info("requeued", "job", id, "attempt", attempt, "why", reason)
	}
}

// dispatch assigns ready jobs to free executors: placements are proposed
// together (raft batches them) and each assignment goes down its
// executor's lease stream once its Assign commits.
func (n leaderDuty) dispatch() {
	type pending struct {
		a   *raftv1.Assign
		fut raft.ApplyFuture
	}
	var ps []pending
	as := n.execs.place(n.fsm, time.Now().UnixNano())
	for i, a := range as {
		fut := n.proposeAsync(fsm.CmdAssign, a)
		if fut == nil { // not leading any more: give back this one and the rest
			for _, b := range as[i:] {
				n.execs.unreserve(b.Executor, b.JobId)
			}
			break
		}
		ps = append(ps, pending{a, fut})
	}
	for _, p := range ps {
		if res, err := outcome(p.fut); err != nil || res.Err != nil {
			n.execs.unreserve(p.a.Executor, p.a.JobId)
			continue
		}
		j, ok := n.fsm.Job(p.a.JobId)
		if !ok {
			n.execs.unreserve(p.a.Executor, p.a.JobId)
			continue
		}
		msg := &sluicev1.LeaseResponse{Msg: &sluicev1.LeaseResponse_Assignment{Assignment: &sluicev1.Assignment{
			JobId: FormatJobID(j.Id), Attempt: p.a.Attempt, Model: j.Spec.GetModel(), Input: j.Spec.GetInput(),
			Gpus: p.a.Gpus, RunTimeout: durationpb.New(time.Duration(j.RunTimeoutNs)),
			ExpectedDuration: durationpb.New(n.modelDuration(j.Spec.GetModel())),
		}}}
		if !n.execs.started(p.a.Executor, j.Id, p.a.Attempt, msg) {
			// The lease ended between placement and commit: give the
			// attempt back now rather than after the lease grace.
			n.requeue(j.Id, p.a.Attempt, fmt.Sprintf("executor %s left before it could start attempt %d", p.a.Executor, p.a.Attempt))
		} else if p.a.Attempt == 1 {
			if told, wait, ok := n.etaCal.started(j.Id); ok {
				n.metrics.ETAFared(told.tier, told.band.P10, told.band.P50, told.band.P90, wait)
			}
		}
	}
}

// modelDuration is the policy's expected duration of a model.
func (n leaderDuty) modelDuration(model string) time.Duration {
	m, ok := n.fsm.Model(model)
	if !ok {
		return 0
	}
	return m.GetDefaultDuration().AsDuration()
}
