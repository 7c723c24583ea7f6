package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/sluicehq/sluice/fsm"
	"github.com/sluicehq/sluice/gpuexec"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
)

// idlePoll bounds how long the leader loop sleeps: delayed jobs become
// ready by the clock, not by an entry, so the loop looks again this often.
const idlePoll = 250 * time.Millisecond

// leaderLoop runs for the node's life. While this node leads it commits
// policy changes, ticks timers, requeues lost attempts after the lease
// grace period, and assigns ready jobs to free executor slots.
func (n *Node) leaderLoop() {
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

// lead runs one term of leadership; it returns when leadership is lost or
// the node stops.
func (n *Node) lead(leaderCh <-chan bool) {
	since := time.Now()
	n.log.Info("leading", "id", n.cfg.ID)
	// Apply everything committed before acting on the state.
	if err := n.raft.Barrier(n.cfg.ApplyTimeout).Error(); err != nil {
		n.log.Warn("barrier after election", "err", err)
		return
	}
	if err := n.ensurePolicy(n.ctx); err != nil {
		n.log.Error("cannot apply the configured policy", "err", err)
		return
	}
	n.setReady(true)
	var lastReconcile time.Time
	wake := time.NewTimer(0)
	defer wake.Stop()
	for {
		changed := n.fsm.Changed()
		select {
		case <-n.ctx.Done():
			return
		case isLeader := <-leaderCh:
			if !isLeader {
				n.log.Info("lost leadership", "id", n.cfg.ID)
				return
			}
		case <-changed:
		case <-n.pool.freed:
		case <-wake.C:
		}
		if n.raft.State() != raft.Leader {
			return
		}
		n.stopStaleRuns()
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
func (n *Node) tickIfDue() {
	dl, ok := n.fsm.NextDeadline()
	if !ok || dl > time.Now().UnixNano() {
		return
	}
	if _, err := n.propose(n.ctx, fsm.CmdTick, &raftv1.Tick{}); err != nil && !errors.Is(err, errNotLeader) {
		n.log.Warn("tick", "err", err)
	}
}

// stopStaleRuns cancels local attempts that the log no longer has running
// (canceled, timed out, or requeued).
func (n *Node) stopStaleRuns() {
	for id, attempt := range n.pool.attempts() {
		if a, ok := n.fsm.RunningAttempt(id); !ok || a != attempt {
			n.pool.stop(id, attempt, errors.New("the job is no longer running this attempt (canceled, timed out or reassigned)"))
		}
	}
}

// requeueLost gives back running attempts that no executor holds: after a
// restart or failover the in-memory leases are gone, and the attempt
// number fences any late report from the old run.
func (n *Node) requeueLost() {
	for _, rj := range n.fsm.Running() {
		if n.pool.holds(rj.Executor, rj.ID, rj.Attempt) {
			continue
		}
		res, err := n.propose(n.ctx, fsm.CmdRequeue, &raftv1.Requeue{
			JobId:   rj.ID,
			Attempt: rj.Attempt,
			Reason:  fmt.Sprintf("executor %s holds no lease for attempt %d (node restart or failover)", rj.Executor, rj.Attempt),
		})
		if err != nil {
			return
		}
		if res.Err == nil {
			n.log.Info("requeued lost attempt", "job", rj.ID, "attempt", rj.Attempt, "executor", rj.Executor)
		}
	}
}

// dispatch assigns ready jobs to free slots: placements are proposed
// together (raft batches them) and each run starts once its Assign commits.
func (n *Node) dispatch() {
	slots := n.pool.freeSlots()
	if len(slots) == 0 {
		return
	}
	type pending struct {
		job      uint64
		executor string
		attempt  int32
		fut      raft.ApplyFuture
	}
	var ps []pending
	for _, a := range n.fsm.Dispatch(time.Now().UnixNano(), slots) {
		j, ok := n.fsm.Job(a.JobId)
		if !ok {
			continue
		}
		if err := n.pool.reserve(a.Executor, a.JobId, j.Spec.GetGpus()); err != nil {
			continue
		}
		fut := n.proposeAsync(fsm.CmdAssign, a)
		if fut == nil {
			n.pool.unreserve(a.Executor, a.JobId)
			break
		}
		ps = append(ps, pending{a.JobId, a.Executor, a.Attempt, fut})
	}
	for _, p := range ps {
		if err := p.fut.Error(); err != nil {
			n.pool.unreserve(p.executor, p.job)
			continue
		}
		if res, _ := p.fut.Response().(fsm.Result); res.Err != nil {
			n.pool.unreserve(p.executor, p.job)
			continue
		}
		n.startRun(p.executor, p.job, p.attempt)
	}
}

// startRun runs one committed assignment on a local executor and commits
// its outcome.
func (n *Node) startRun(executor string, id uint64, attempt int32) {
	j, ok := n.fsm.Job(id)
	if !ok {
		n.pool.unreserve(executor, id)
		return
	}
	runner, ctx := n.pool.start(n.ctx, executor, id, attempt, j.Spec.GetModel())
	a := gpuexec.Assignment{
		JobID:      FormatJobID(id),
		Attempt:    attempt,
		Model:      j.Spec.GetModel(),
		Input:      j.Spec.GetInput(),
		GPUs:       j.Gpus,
		RunTimeout: time.Duration(j.RunTimeoutNs),
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer n.pool.finish(executor, id, attempt)
		runCtx, cancel := context.WithTimeout(ctx, a.RunTimeout)
		began := time.Now()
		res := runner.Run(runCtx, a, nil)
		if res.Err == nil {
			n.service.observe(a.Model, time.Since(began))
		}
		timedOut := runCtx.Err() != nil && ctx.Err() == nil
		cancel()
		if ctx.Err() != nil {
			// Stopped by us: the log has already moved on, or the node is
			// shutting down and the next leader will requeue the attempt.
			return
		}
		var err error
		switch {
		case res.Err == nil:
			_, err = n.propose(n.ctx, fsm.CmdComplete, &raftv1.Complete{JobId: id, Attempt: attempt, Output: res.Output})
		case timedOut:
			_, err = n.propose(n.ctx, fsm.CmdFail, &raftv1.Fail{JobId: id, Attempt: attempt, Retryable: true,
				Error: runError("run_timeout", fmt.Sprintf("attempt %d ran longer than the run timeout of %v", attempt, a.RunTimeout))})
		default:
			_, err = n.propose(n.ctx, fsm.CmdFail, &raftv1.Fail{JobId: id, Attempt: attempt, Retryable: res.Err.Retryable,
				Error: runError(res.Err.Code, res.Err.Message)})
		}
		if err != nil {
			n.log.Warn("could not record the outcome; the attempt will be requeued", "job", id, "attempt", attempt, "err", err)
		}
	}()
}
