package node

import (
	"sync"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluicehq/sluice/challenge"
	"github.com/sluicehq/sluice/fsm"
	"github.com/sluicehq/sluice/limiter"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/scheduler"
)

// state is the replicated state machine as node's goroutines share it. The
// state machine (fsm.FSM) has no lock: raft's apply goroutine applies and
// restores under the write lock here (raftFSM); API handlers, the leader's
// loops (placement too: one at a time, under the registry's lock), the
// webhook sender and the metrics scrape read under the read lock, one call
// at a time. Its reads are grouped by what they read.
type state struct {
	*guarded
	jobReads
	configReads
}

// guarded is the state machine with the lock its readers and writers take.
type guarded struct {
	mu sync.RWMutex
	f  *fsm.FSM
	r  fsm.Reads // f's read side
}

// jobReads reads jobs and the queue.
type jobReads struct{ *guarded }

// configReads reads the policy, the limits, the members and the log's place.
type configReads struct{ *guarded }

func newState(f *fsm.FSM) *state {
	g := &guarded{f: f, r: f.Reads()}
	return &state{guarded: g, jobReads: jobReads{g}, configReads: configReads{g}}
}

// Apply applies one log entry.
func (s *guarded) Apply(index uint64, data []byte) fsm.Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.f.Apply(index, data)
}

// ApplyBatch applies consecutive log entries under one lock.
func (s *guarded) ApplyBatch(entries []fsm.Entry) []fsm.Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.f.ApplyBatch(entries)
}

// Restore replaces the state with a snapshot's.
func (s *guarded) Restore(data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.f.Restore(data)
}

// PlaceQueued is the state machine's placement, under the read lock: it
// only reads, in p, the caller's working memory (registry.place's
// Dispatcher, under the registry's lock).
func (s *guarded) PlaceQueued(p *scheduler.Placer, dst []fsm.Assignment, now int64, slots []scheduler.Slot) []fsm.Assignment {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.r.PlaceQueued(p, dst, now, slots)
}

// SetObserver installs the observer of job transitions.
func (s *guarded) SetObserver(o fsm.Observer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.f.SetObserver(o)
}

func (r jobReads) Job(id uint64) (*raftv1.JobRecord, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.Job(id)
}

func (r jobReads) View(id uint64) (fsm.JobView, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.View(id)
}

func (r jobReads) ListJobs(tenant string, states []sluicev1.JobState, before uint64, limit int) ([]fsm.JobView, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.ListJobs(tenant, states, before, limit)
}

func (r jobReads) Running() []fsm.RunningJob {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.Running()
}

func (r jobReads) RunningAttempt(id uint64) (int32, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.RunningAttempt(id)
}

func (r jobReads) IdempotentJob(tenant, key string) (uint64, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.IdempotentJob(tenant, key)
}

func (r jobReads) Count(s sluicev1.JobState) int64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.Count(s)
}

func (r jobReads) JobCount(tenant string) int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.JobCount(tenant)
}

func (r jobReads) ActiveJobs(tenant string) (queued, running int64) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.ActiveJobs(tenant)
}

func (r jobReads) QueueLen() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.QueueLen()
}

func (r jobReads) QueuePage(token string, limit int) ([]fsm.JobView, string, int, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.QueuePage(token, limit)
}

func (r jobReads) DeadLetters(tenant, model string, ids []uint64) []uint64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.DeadLetters(tenant, model, ids)
}

func (r jobReads) Succeeded(perModel int) []fsm.FinishedRun {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.Succeeded(perModel)
}

func (r jobReads) DueDeliveries(now int64, dst []fsm.DueDelivery) []fsm.DueDelivery {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.DueDeliveries(now, dst)
}

func (r jobReads) NextDeadline() (int64, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.NextDeadline()
}

func (r jobReads) AheadOf(id uint64, each func(model string, n int)) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.AheadOf(id, each)
}

func (r jobReads) Behind(id uint64) (lead, backlog, weight int64, ok bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.Behind(id)
}

func (r jobReads) CountAhead(id uint64, limit int, each func(model string, n int)) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.CountAhead(id, limit, each)
}

func (r jobReads) EachAhead(id uint64, limit int, each func(model string, input *structpb.Struct)) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.EachAhead(id, limit, each)
}

func (r jobReads) EachReady(limit int, until []uint64, each func(id uint64, model string, rank int, input *structpb.Struct)) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.EachReady(limit, until, each)
}

func (r jobReads) QueuedOfModel(model string) int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.QueuedOfModel(model)
}

func (r jobReads) EachQueued(fn func(tier, tenant, model string, createdNs int64)) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	r.r.EachQueued(fn)
}

func (r jobReads) CheckBackpressure(tenant string, spec *sluicev1.JobSpec, predictedWait int64) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.CheckBackpressure(tenant, spec, predictedWait)
}

func (r jobReads) ReserveCost(spec *sluicev1.JobSpec, m *sluicev1.Model) int64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.ReserveCost(spec, m)
}

func (r configReads) Policy() *sluicev1.Policy {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.Policy()
}

func (r configReads) Model(name string) (*sluicev1.Model, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.Model(name)
}

func (r configReads) Tenant(name string) (*sluicev1.Tenant, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.Tenant(name)
}

func (r configReads) TenantByKeyHash(h string) (*sluicev1.Tenant, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.TenantByKeyHash(h)
}

func (r configReads) Rule(name string) (*sluicev1.Rule, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.Rule(name)
}

func (r configReads) ChallengeKey() challenge.Key {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.ChallengeKey()
}

func (r configReads) WebhookSecrets(tenant string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.WebhookSecrets(tenant)
}

func (r configReads) Member(id string) (*raftv1.SetMember, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.Member(id)
}

func (r configReads) Members() []*raftv1.SetMember {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.Members()
}

func (r configReads) PreCheck(g *raftv1.CheckGroup, now int64) fsm.CheckOutcome {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.PreCheck(g, now)
}

func (r configReads) Usage(req limiter.Request, now int64) []limiter.Usage {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.Usage(req, now)
}

func (r configReads) CheckLimitsInto(req limiter.Request, now int64, d *limiter.Decision) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	r.r.CheckLimitsInto(req, now, d)
}

func (r configReads) LastIndex() uint64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.LastIndex()
}

func (r configReads) CommandsApplied() uint64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.CommandsApplied()
}

func (r configReads) StateHash() string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.r.StateHash()
}

func (r configReads) Capture() *fsm.Capture {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.f.Capture()
}
