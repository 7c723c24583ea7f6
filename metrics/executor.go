package metrics

import (
	"net/http"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// AgentGPU is one GPU as the executor's last NVML reading saw it
// (Utilization < 0 when NVML gives none: MIG devices, declared GPUs).
type AgentGPU struct {
	ID                    string
	Utilization           float64
	FreeBytes, TotalBytes int64
}

// AgentSource is what an executor reads at scrape time.
type AgentSource struct {
	Running   func() int
	Connected func() bool
	GPUs      func() []AgentGPU
}

// Agent holds an executor's metrics; serve Handler on its --metrics
// address and count each attempt's end with Ended.
type Agent struct {
	reg      *prometheus.Registry
	attempts *prometheus.CounterVec
}

var (
	descExecRunning   = desc("executor_attempts_running", "Attempts this executor runs now.", "node")
	descExecConnected = desc("executor_lease_connected", "1 while this executor holds a lease stream to the leader.", "node")
	descExecGPUUtil   = desc("executor_gpu_utilization_ratio", "GPU utilisation (NVML), 0–1.", "node", "gpu")
	descExecGPUFree   = desc("executor_gpu_memory_free_bytes", "GPU memory free (NVML).", "node", "gpu")
	descExecGPUTotal  = desc("executor_gpu_memory_total_bytes", "GPU memory in all (NVML).", "node", "gpu")
)

// NewAgent makes an executor's metrics; name is the executor's.
func NewAgent(name string, src AgentSource) *Agent {
	e := &Agent{reg: prometheus.NewRegistry(),
		attempts: counter("executor_attempts_total", "Attempts this executor ended: succeeded, failed, or stopped (by the leader or the executor's end).", "node", "result")}
	build := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "sluice", Name: "build_info", Help: "The build: 1, labelled with its version.",
		ConstLabels: prometheus.Labels{"version": Version, "go_version": runtime.Version(), "node": name}})
	build.Set(1)
	e.reg.MustRegister(build, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		e.attempts, agentCollector{src})
	return e
}

// Ended counts an attempt's end: result is succeeded, failed or stopped.
func (e *Agent) Ended(result string) {
	if e != nil {
		e.attempts.WithLabelValues(result).Inc()
	}
}

// Handler serves the metrics (Prometheus text or OpenMetrics).
func (e *Agent) Handler() http.Handler {
	return promhttp.HandlerFor(e.reg, promhttp.HandlerOpts{EnableOpenMetrics: true, Registry: e.reg})
}

type agentCollector struct{ src AgentSource }

func (c agentCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descExecRunning, descExecConnected, descExecGPUUtil, descExecGPUFree, descExecGPUTotal} {
		ch <- d
	}
}

func (c agentCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descExecRunning, float64(c.src.Running()))
	gauge(descExecConnected, b2f(c.src.Connected()))
	for _, g := range c.src.GPUs() {
		if g.Utilization >= 0 {
			gauge(descExecGPUUtil, g.Utilization, g.ID)
		}
		gauge(descExecGPUFree, float64(g.FreeBytes), g.ID)
		gauge(descExecGPUTotal, float64(g.TotalBytes), g.ID)
	}
}
