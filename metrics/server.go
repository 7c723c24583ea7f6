package metrics

import (
	"math"
	"net/http"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluicehq/sluice/fsm"
	"github.com/sluicehq/sluice/limiter"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/scheduler"
)

// Version is the build's version for sluice_build_info (set with -ldflags).
var Version = "dev"

// DefaultMaxTenants is how many tenants keep their name in the tenant label.
const DefaultMaxTenants = 20

// State is what a scrape reads of the replicated state (fsm.FSM, under
// the server's lock).
type State interface {
	Count(s sluicev1.JobState) int64
	Policy() *sluicev1.Policy
	EachQueued(fn func(tier, tenant, model string, createdNs int64))
}

// Source is what a server reads at scrape time.
type Source struct {
	FSM State
	// Raft reports this node's raft figures.
	Raft func() Raft
	// Executors lists the leased executors; called only while this node leads.
	Executors func() []Executor
	// Leading reports whether this node leads with its log applied.
	Leading func() bool
}

// Raft is one node's raft figures.
type Raft struct {
	Term, Commit, Applied uint64
	Leader                bool
}

// Executor is one leased executor as the leader sees it.
type Executor struct {
	Name string
	GPUs []GPU
}

// GPU is one executor GPU: whether a running attempt holds it, and what
// NVML last said of it (Utilization < 0 and FreeBytes < 0 when unknown).
type GPU struct {
	ID          string
	Busy        bool
	Utilization float64
	FreeBytes   int64
}

// Server holds a server's metrics: feed it from the state machine (it is an
// fsm.Observer), the admission path and the API (Interceptor), and serve
// Handler on /metrics. Its recording methods do nothing on a nil *Server
// (metrics off).
type Server struct {
	reg        *prometheus.Registry
	src        Source
	maxTenants int
	replayed   atomic.Uint64 // transitions of entries at or below it are a replay: not counted

	jobWait, jobRun, jobTurnaround  *prometheus.HistogramVec
	deadLetters, requeues, attempts *prometheus.CounterVec
	submits, decisions, checks      *prometheus.CounterVec
	challenges                      *prometheus.CounterVec
	predictedWait                   prometheus.Histogram
	predictionError, etaError       *prometheus.HistogramVec
	etaStarts                       *prometheus.CounterVec
	leases, executorsLost           prometheus.Counter
	proposeBatch, proposeSeconds    prometheus.Histogram
	snapshot                        prometheus.Histogram
	forwarded                       *prometheus.CounterVec
	apiRequests                     *prometheus.CounterVec
	apiSeconds                      *prometheus.HistogramVec
	webhooks                        *prometheus.CounterVec
}

func scope(s string) prometheus.Labels { return prometheus.Labels{"scope": s} }

func counter(name, help, sc string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "sluice", Name: name, Help: help, ConstLabels: scope(sc)}, labels)
}

func histogram(name, help, sc string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "sluice", Name: name, Help: help, ConstLabels: scope(sc), Buckets: buckets}, labels)
}

func counter1(name, help, sc string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "sluice", Name: name, Help: help, ConstLabels: scope(sc)})
}

func histogram1(name, help, sc string, buckets []float64) prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "sluice", Name: name, Help: help, ConstLabels: scope(sc), Buckets: buckets})
}

// NewServer makes a server's metrics; node names the node in
// sluice_build_info, maxTenants bounds the tenant label (0: the default).
func NewServer(node string, maxTenants int, src Source) *Server {
	if maxTenants <= 0 {
		maxTenants = DefaultMaxTenants
	}
	m := &Server{
		reg: prometheus.NewRegistry(), src: src, maxTenants: maxTenants,
		jobWait:       histogram("job_wait_seconds", "Time from a job's submission to the start of its first attempt.", "replica", jobBuckets, "tier"),
		jobRun:        histogram("job_run_seconds", "Time from the start to the end of a job's last attempt.", "replica", jobBuckets, "model"),
		jobTurnaround: histogram("job_turnaround_seconds", "Time from a job's submission to its terminal state.", "replica", jobBuckets, "model"),
		deadLetters:   counter("dead_letters_total", "Jobs moved to the dead letters, by the last error's code.", "replica", "reason"),
		requeues:      counter("requeues_total", "Running attempts put back in the queue.", "replica", "reason"),
		attempts:      counter("attempts_total", "Attempts ended, by result.", "replica", "result"),
		submits:       counter("submits_total", "Submits decided by the leader, by outcome and the rule that decided.", "leader", "outcome", "rule"),
		decisions:     counter("limiter_decisions_total", "Rate-limit rule decisions on Submits and gateway checks.", "leader", "rule", "outcome"),
		checks:        counter("limit_checks_total", "Gateway rate-limit checks decided (LimitService, Envoy RLS).", "leader", "source", "outcome"),
		challenges:    counter("challenges_total", "CHALLENGE rules' challenges: issued, passed (an answer admitted), failed (a wrong, forged, expired or other caller's answer, or a verifier's no), replayed (answered before).", "leader", "rule", "outcome"),
		predictedWait: histogram1("predicted_wait_seconds", "Predicted wait handed to admitted Submits.", "leader", jobBuckets),
		predictionError: histogram("run_prediction_error_ratio", "How far a completed attempt's predicted run time was from its real one, relative to the real one, by model and basis (sized: from the job's input; average: the model's).",
			"leader", errorBuckets, "model", "basis"),
		etaError: histogram("eta_error_ratio", "How far the ETA told at Submit was from the wait to the first start, relative to the wait (waits under 1 s taken as 1 s), for one admitted job in 16 (by id), by tier.",
			"leader", errorBuckets, "tier"),
		etaStarts: counter("eta_starts_total", "First starts of the jobs whose ETA is followed (one admitted job in 16), by tier and where the start fell: inside the p10–p90 band told, early (before it) or late (after it); at_once or at_once_late for jobs told they start at once (within a second, or later).",
			"leader", "tier", "band"),
		leases:         counter1("leases_total", "Executor leases granted.", "leader"),
		executorsLost:  counter1("executors_lost_total", "Executor leases ended by missed heartbeats or the gossip pool.", "leader"),
		proposeBatch:   histogram1("propose_batch_size", "Commands carried by one raft log entry.", "leader", batchBuckets),
		proposeSeconds: histogram1("propose_seconds", "Time from a write's proposal to its result.", "leader", requestBuckets),
		snapshot:       histogram1("snapshot_seconds", "Time to persist a raft snapshot.", "node", snapshotBuckets),
		forwarded:      counter("forwarded_total", "Writes this node forwarded to the leader, by outcome.", "node", "outcome"),
		apiRequests:    counter("api_requests_total", "API calls, by procedure and Connect code (ok for none).", "node", "procedure", "code"),
		apiSeconds:     histogram("api_request_seconds", "Latency of unary API calls.", "node", requestBuckets, "procedure"),
		webhooks:       counter("webhook_attempts_total", "Webhook delivery attempts the leader made, by result.", "leader", "result"),
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "sluice", Name: "build_info", Help: "The build: 1, labelled with its version.",
		ConstLabels: prometheus.Labels{"version": Version, "go_version": runtime.Version(), "node": node}})
	build.Set(1)
	m.reg.MustRegister(build, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.jobWait, m.jobRun, m.jobTurnaround, m.deadLetters, m.requeues, m.attempts, m.submits, m.decisions, m.checks, m.challenges,
		m.predictedWait, m.predictionError, m.etaError, m.etaStarts, m.leases, m.executorsLost, m.proposeBatch, m.proposeSeconds, m.snapshot, m.forwarded,
		m.apiRequests, m.apiSeconds, m.webhooks, stateCollector{m})
	return m
}

// Handler serves the metrics in the Prometheus text format, or OpenMetrics
// when the scraper asks for it.
func (m *Server) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{EnableOpenMetrics: true, Registry: m.reg})
}

// Registry is where the metrics live (tests gather from it).
func (m *Server) Registry() *prometheus.Registry { return m.reg }

// staleTransition is the age past which a transition applied now is history
// being caught up with, not news.
const staleTransition = time.Minute

// SkipReplayTo makes the transitions of log entries up to index (the log a
// restarted node replays) go uncounted: they were counted before the restart.
func (m *Server) SkipReplayTo(index uint64) { m.replayed.Store(index) }

// Transition implements fsm.Observer.
func (m *Server) Transition(index uint64, j *raftv1.JobRecord, from sluicev1.JobState) {
	now := j.CreatedNs
	if n := len(j.Transitions); n > 0 {
		now = j.Transitions[n-1].AtNs
	}
	// A restarted node replays its log, and a new one is sent the cluster's:
	// what happened before the process started was counted elsewhere.
	if index <= m.replayed.Load() || time.Since(time.Unix(0, now)) > staleTransition {
		return
	}
	seconds := func(since int64) float64 { return float64(max(0, now-since)) / 1e9 }
	model := j.Spec.GetModel()
	switch to := j.State; {
	case to == sluicev1.JobState_JOB_STATE_RUNNING:
		if j.Attempt == 1 {
			m.jobWait.WithLabelValues(j.Tier).Observe(seconds(j.CreatedNs))
		}
	case to == sluicev1.JobState_JOB_STATE_QUEUED && from == sluicev1.JobState_JOB_STATE_RUNNING:
		reason := "retry"
		if j.Error.GetCode() == "executor_lost" {
			reason = "executor_lost"
		}
		m.requeues.WithLabelValues(reason).Inc()
		m.attempts.WithLabelValues("requeued").Inc()
	case fsm.IsTerminal(to):
		m.jobTurnaround.WithLabelValues(model).Observe(seconds(j.CreatedNs))
		if from == sluicev1.JobState_JOB_STATE_RUNNING {
			m.jobRun.WithLabelValues(model).Observe(seconds(j.StartedNs))
			m.attempts.WithLabelValues(attemptResult(to)).Inc()
		}
		if to == sluicev1.JobState_JOB_STATE_DEAD_LETTERED {
			m.deadLetters.WithLabelValues(errorClass(j.Error.GetCode())).Inc()
		}
	}
}

func attemptResult(s sluicev1.JobState) string {
	switch s {
	case sluicev1.JobState_JOB_STATE_SUCCEEDED:
		return "succeeded"
	case sluicev1.JobState_JOB_STATE_CANCELED:
		return "canceled"
	case sluicev1.JobState_JOB_STATE_EXPIRED:
		return "expired"
	}
	return "failed" // failed, dead-lettered
}

// knownErrors are the error codes that keep their name in a label; runners
// may send any code, so the rest are "other".
var knownErrors = []string{"run_timeout", "queue_timeout", "executor_lost", "oom", "runner_failed", "runner_tempfail",
	"runner_error", "runner_start", "runner_config", "bad_input", "bad_output", "http_unreachable", "canceled"}

func errorClass(code string) string {
	if slices.Contains(knownErrors, code) {
		return code
	}
	return "other"
}

// Submit counts one Submit the leader decided: outcome is admitted,
// delayed, degraded, rejected or busy; rule the rule that decided ("" when
// none did); rules the decision of each rule that was checked.
func (m *Server) Submit(outcome, rule string, rules []limiter.RuleResult) {
	if m == nil {
		return
	}
	m.submits.WithLabelValues(outcome, rule).Inc()
	for _, r := range rules {
		m.decisions.WithLabelValues(r.Rule, decisionOutcome(r)).Inc()
	}
}

// Check counts one gateway check the leader decided: source is "check"
// (LimitService) or "rls" (Envoy); outcome allowed, delayed, degraded or
// refused; rules the decision of each rule that was checked.
func (m *Server) Check(source, outcome string, rules []limiter.RuleResult) {
	if m == nil {
		return
	}
	m.checks.WithLabelValues(source, outcome).Inc()
	for _, r := range rules {
		m.decisions.WithLabelValues(r.Rule, decisionOutcome(r)).Inc()
	}
}

// Challenge counts one challenge outcome of rule: issued, passed, failed
// or replayed.
func (m *Server) Challenge(rule, outcome string) {
	if m == nil {
		return
	}
	m.challenges.WithLabelValues(rule, outcome).Inc()
}

// nearLimit is the share of a rule's capacity below which a decision is
// "near_limit".
const nearLimit = 0.2

func decisionOutcome(r limiter.RuleResult) string {
	switch {
	case !r.Allowed && r.Shadow:
		return "shadow_over_limit"
	case !r.Allowed && r.Exempt:
		return "exempt_over_limit"
	case !r.Allowed:
		return "over_limit"
	case r.Limit > 0 && float64(r.Remaining) < nearLimit*float64(r.Limit):
		return "near_limit"
	}
	return "within_limit"
}

// errorBuckets are relative errors: 5 % to 10×.
var errorBuckets = []float64{0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10}

// PredictionError records how far an attempt's predicted run time was from
// the real one (sized: predicted from its input).
func (m *Server) PredictionError(model string, sized bool, predicted, real time.Duration) {
	if m == nil || real <= 0 {
		return
	}
	basis := "average"
	if sized {
		basis = "sized"
	}
	d := predicted - real
	m.predictionError.WithLabelValues(model, basis).Observe(math.Abs(float64(d)) / float64(real))
}

// ETAFared records how the ETA told to an admitted job (its p10, p50 and
// p90; all 0: at once) fared against its wait to the first start.
func (m *Server) ETAFared(tier string, p10, p50, p90, wait time.Duration) {
	if m == nil {
		return
	}
	m.etaError.WithLabelValues(tier).Observe(scheduler.ETAError(p50, wait))
	m.etaStarts.WithLabelValues(tier, etaBand(p10, p90, wait)).Inc()
}

// etaBands are sluice_eta_starts_total's band labels, by scheduler.ETAOutcome.
var etaBands = [...]string{
	scheduler.ETAInside: "inside", scheduler.ETAEarly: "early", scheduler.ETALate: "late",
	scheduler.ETAAtOnce: "at_once", scheduler.ETAAtOnceLate: "at_once_late",
}

// etaBand is the label of where a start after wait fell against the band
// p10–p90 told.
func etaBand(p10, p90, wait time.Duration) string {
	return etaBands[scheduler.ETAFared(p10, p90, wait)]
}

// PredictedWait records the wait handed to an admitted Submit.
func (m *Server) PredictedWait(d time.Duration) {
	if m != nil {
		m.predictedWait.Observe(d.Seconds())
	}
}

// Leased counts a lease granted.
func (m *Server) Leased() {
	if m != nil {
		m.leases.Inc()
	}
}

// Lost counts a lease ended because its executor went.
func (m *Server) Lost() {
	if m != nil {
		m.executorsLost.Inc()
	}
}

// Batched records how many commands one raft log entry carried.
func (m *Server) Batched(commands int) {
	if m != nil {
		m.proposeBatch.Observe(float64(commands))
	}
}

// Proposed records how long a write waited from its proposal to its result.
func (m *Server) Proposed(took time.Duration) {
	if m != nil {
		m.proposeSeconds.Observe(took.Seconds())
	}
}

// Snapshot records the time to persist a snapshot.
func (m *Server) Snapshot(took time.Duration) {
	if m != nil {
		m.snapshot.Observe(took.Seconds())
	}
}

// Forwarded counts a write forwarded to the leader: outcome "ok" or a
// Connect code.
func (m *Server) Forwarded(outcome string) {
	if m != nil {
		m.forwarded.WithLabelValues(outcome).Inc()
	}
}

// Webhook counts one webhook delivery attempt: result is delivered (2xx),
// refused (another status), gone (410: the endpoint is disabled) or error
// (no answer: connection refused, timeout, an address not allowed).
func (m *Server) Webhook(result string) {
	if m == nil {
		return
	}
	m.webhooks.WithLabelValues(result).Inc()
}
