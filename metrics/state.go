package metrics

import (
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// stateCollector reads the replica, raft and (on the leader) the executors at
// each scrape: nothing on the write path pays for these figures.
type stateCollector struct{ m *Server }

func desc(name, help, sc string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("sluice_"+name, help, labels, scope(sc))
}

var (
	descQueued     = desc("jobs_queued", "Jobs queued now.", "replica", "tier", "tenant", "model")
	descJobs       = desc("jobs", "Jobs by state (finished ones until their retention ends).", "replica", "state")
	descOldest     = desc("queue_oldest_age_seconds", "Age of the oldest queued job (0 when none).", "replica")
	descTerm       = desc("raft_term", "This node's raft term.", "node")
	descLeader     = desc("raft_leader", "1 when this node leads.", "node")
	descCommit     = desc("raft_commit_index", "The last log index this node knows committed.", "node")
	descApplied    = desc("raft_applied_index", "The last log index this node applied.", "node")
	descLag        = desc("raft_apply_lag", "Committed log entries this node has not applied yet.", "node")
	descExecutors  = desc("executors", "Executors holding a lease.", "leader")
	descGPUs       = desc("gpus", "GPUs of the leased executors: total, and busy with an attempt.", "leader", "state")
	descGPUUtil    = desc("gpu_utilization_ratio", "GPU utilisation an executor last reported (NVML), 0–1.", "leader", "executor", "gpu")
	descGPUFreeMem = desc("gpu_memory_free_bytes", "GPU memory free as an executor last reported (NVML).", "leader", "executor", "gpu")
)

// jobStates are the states sluice_jobs reports, with their label values.
var jobStates = []sluicev1.JobState{
	sluicev1.JobState_JOB_STATE_QUEUED, sluicev1.JobState_JOB_STATE_RUNNING, sluicev1.JobState_JOB_STATE_SUCCEEDED,
	sluicev1.JobState_JOB_STATE_FAILED, sluicev1.JobState_JOB_STATE_CANCELED, sluicev1.JobState_JOB_STATE_EXPIRED,
	sluicev1.JobState_JOB_STATE_DEAD_LETTERED,
}

func stateLabel(s sluicev1.JobState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "JOB_STATE_"))
}

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueued, descJobs, descOldest, descTerm, descLeader, descCommit, descApplied,
		descLag, descExecutors, descGPUs, descGPUUtil, descGPUFreeMem} {
		ch <- d
	}
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	f := m.src.FSM
	for _, s := range jobStates {
		gauge(descJobs, float64(f.Count(s)), stateLabel(s))
	}
	// The first maxTenants tenants by name keep their name; the others are
	// "other", so that a policy with many tenants stays a bounded label.
	var names []string
	for _, t := range f.Policy().GetTenants() {
		names = append(names, t.Name)
	}
	slices.Sort(names)
	named := make(map[string]bool, min(len(names), m.maxTenants))
	for _, n := range names[:min(len(names), m.maxTenants)] {
		named[n] = true
	}
	type key struct{ tier, tenant, model string }
	queued := map[key]int{}
	oldest := int64(0)
	f.EachQueued(func(tier, tenant, model string, created int64) {
		if !named[tenant] {
			tenant = "other"
		}
		queued[key{tier, tenant, model}]++
		if oldest == 0 || created < oldest {
			oldest = created
		}
	})
	for k, n := range queued {
		gauge(descQueued, float64(n), k.tier, k.tenant, k.model)
	}
	age := 0.0
	if oldest > 0 {
		age = max(0, time.Since(time.Unix(0, oldest)).Seconds())
	}
	gauge(descOldest, age)

	r := m.src.Raft()
	gauge(descTerm, float64(r.Term))
	gauge(descLeader, b2f(r.Leader))
	gauge(descCommit, float64(r.Commit))
	gauge(descApplied, float64(r.Applied))
	gauge(descLag, float64(r.Commit-min(r.Commit, r.Applied)))

	if !m.src.Leading() {
		return
	}
	execs := m.src.Executors()
	gauge(descExecutors, float64(len(execs)))
	total, busy := 0, 0
	for _, e := range execs {
		for _, g := range e.GPUs {
			total++
			if g.Busy {
				busy++
			}
			if g.Utilization >= 0 {
				gauge(descGPUUtil, g.Utilization, e.Name, g.ID)
			}
			if g.FreeBytes >= 0 {
				gauge(descGPUFreeMem, float64(g.FreeBytes), e.Name, g.ID)
			}
		}
	}
	gauge(descGPUs, float64(total), "total")
	gauge(descGPUs, float64(busy), "busy")
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
