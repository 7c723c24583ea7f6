package main

import (
	"context"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluicehq/sluice/policy"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

// metricsPolicy: bob on the pro tier without limits, alice on the free tier
// with five requests a minute.
const metricsPolicy = `
tiers: [{name: free, weight: 1}, {name: pro, weight: 4}]
tenants:
  - {name: bob, tier: pro, api_key_sha256: ["%s"]}
  - {name: alice, tier: free, api_key_sha256: ["` + "%[4]s" + `"]}
models: [{name: llama-8b, default_duration: 100ms}]
admin_token_sha256: "%[2]s"
executor_token_sha256: "%[3]s"
rules: [{name: free-rate, match: {tier: free}, token_bucket: {count: 5, per: 1m, burst: 5}}]
`

// scrape reads a server's /metrics.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	res, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer res.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("parse %s/metrics: %v", url, err)
	}
	return fams
}

// sample sums the series of a family whose labels include want (a
// histogram's sample count, a counter's or a gauge's value); found is false
// when no series matches.
func sample(fams map[string]*dto.MetricFamily, name string, want map[string]string) (sum float64, found bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		found = true
		switch {
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		}
	}
	return sum, found
}

// TestMetricsOfAClusterUnderLoad scrapes a 3-node cluster of processes while
// it works: the queue rises on every replica then falls to zero, alice's
// refusals are counted by rule on the leader, the wait histogram counts
// every started job on every replica, and the leader alone reports the
// executors.
func TestMetricsOfAClusterUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three server processes")
	}
	bin := buildSluice(t)
	pol := strings.Replace(metricsPolicy, "%[4]s", policy.HashKey("alice-key"), 1)
	cl := startProcClusterWith(t, bin, 3, pol, func(int) []string {
		// Each server's executor asks its own node, which names the leader.
		return []string{"--executors", "1", "--executor-token", "exec"}
	})
	// And an executor process with its own metrics.
	exec := &server{id: "e1"}
	exec.args = []string{"executor", "--name", "e1", "--servers", strings.Join(cl.urls, ","), "--token", "exec",
		"--gossip", "127.0.0.1:0", "--metrics", "127.0.0.1:0"}
	exec.startRaw(t, bin)
	exec.http = exec.p.waitFor(t, `executor metrics on http://(\S+)/metrics`)
	leader := cl.waitLeader(nil)
	waitFor(t, "four executors", func() bool {
		n, _ := sample(scrape(t, leader.url()), "sluice_executors", nil)
		return n == 4
	})
	queued := func(url string) float64 {
		n, _ := sample(scrape(t, url), "sluice_jobs_queued", map[string]string{"scope": "replica"})
		return n
	}
	if q := queued(leader.url()); q != 0 {
		t.Fatalf("%v jobs queued before any was submitted", q)
	}
	in, _ := structpb.NewStruct(map[string]any{"duration_ms": 300})
	bob := cl.jobs(leader.url())
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := bob.Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "llama-8b", Input: in}})); err != nil {
				t.Errorf("bob's job %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	// 30 jobs of 300 ms on three executors: the queue holds most of them now,
	// on every replica.
	for _, s := range cl.servers {
		waitFor(t, s.id+" to see the queue", func() bool { return queued(s.url()) > 0 })
	}
	alice := sluicev1connect.NewJobServiceClient(http.DefaultClient, leader.url(), connect.WithInterceptors(bearerAuth("alice-key")))
	refused := 0
	for range 10 {
		_, err := alice.Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "llama-8b", Input: in}}))
		if connect.CodeOf(err) == connect.CodeResourceExhausted {
			refused++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if refused != 5 {
		t.Fatalf("alice was refused %d times of 10, want 5 (burst 5)", refused)
	}
	fams := scrape(t, leader.url())
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"sluice_submits_total", map[string]string{"outcome": "rejected", "rule": "free-rate", "scope": "leader"}, 5},
		{"sluice_submits_total", map[string]string{"outcome": "admitted"}, 35},
		{"sluice_limiter_decisions_total", map[string]string{"rule": "free-rate", "outcome": "over_limit"}, 5},
		{"sluice_api_requests_total", map[string]string{"procedure": "/sluice.v1.JobService/Submit", "code": "resource_exhausted"}, 5},
		{"sluice_api_requests_total", map[string]string{"procedure": "/sluice.v1.JobService/Submit", "code": "ok"}, 35},
		{"sluice_raft_leader", nil, 1},
		{"sluice_build_info", nil, 1},
	} {
		if got, _ := sample(fams, c.name, c.labels); got != c.want {
			t.Errorf("leader: %s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got, _ := sample(fams, "sluice_limiter_decisions_total", map[string]string{"rule": "free-rate", "outcome": "near_limit"}); got < 1 {
		t.Errorf("leader: no free-rate decision near the limit (alice spent a burst of 5)")
	}
	// Then the queue drains; every replica counted each job's wait once.
	for _, s := range cl.servers {
		waitFor(t, s.id+" to see the queue empty", func() bool { return queued(s.url()) == 0 })
	}
	waitFor(t, "every job to finish", func() bool {
		n, _ := sample(scrape(t, leader.url()), "sluice_jobs", map[string]string{"state": "succeeded"})
		return n == 35
	})
	leaders := 0.0
	for _, s := range cl.servers {
		fams := scrape(t, s.url())
		waits, _ := sample(fams, "sluice_job_wait_seconds", map[string]string{"scope": "replica"})
		runs, _ := sample(fams, "sluice_job_run_seconds", map[string]string{"model": "llama-8b"})
		attempts, _ := sample(fams, "sluice_attempts_total", map[string]string{"result": "succeeded"})
		proTier, _ := sample(fams, "sluice_job_wait_seconds", map[string]string{"tier": "pro"})
		if waits != 35 || runs != 35 || attempts != 35 || proTier != 30 {
			t.Errorf("%s: %v waits (%v of the pro tier), %v runs, %v attempts succeeded; want 35 (30), 35, 35", s.id, waits, proTier, runs, attempts)
		}
		l, _ := sample(fams, "sluice_raft_leader", nil)
		leaders += l
		_, hasExecutors := sample(fams, "sluice_executors", nil)
		if hasExecutors != (s == leader) {
			t.Errorf("%s reports sluice_executors: %v; only the leader should", s.id, hasExecutors)
		}
	}
	if leaders != 1 {
		t.Errorf("%v nodes say they lead", leaders)
	}
	ef := scrape(t, exec.url())
	ran, _ := sample(ef, "sluice_executor_attempts_total", map[string]string{"result": "succeeded"})
	connected, _ := sample(ef, "sluice_executor_lease_connected", nil)
	running, _ := sample(ef, "sluice_executor_attempts_running", nil)
	memory, _ := sample(ef, "sluice_executor_gpu_memory_total_bytes", nil)
	if ran < 1 || connected != 1 || running != 0 || memory != 81920<<20 {
		t.Errorf("executor e1: %v attempts succeeded, connected %v, %v running, %v bytes of GPU memory; want ≥1, 1, 0, %d",
			ran, connected, running, memory, 81920<<20)
	}
	// Every series a server or an executor exports is documented.
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, fams := range []map[string]*dto.MetricFamily{scrape(t, leader.url()), ef} {
		for name := range fams {
			if strings.HasPrefix(name, "sluice_") && !strings.Contains(string(doc), "| `"+name+"` |") {
				t.Errorf("%s is exported but not documented in docs/operations.md", name)
			}
		}
	}
	// OpenMetrics when asked for.
	req, _ := http.NewRequest(http.MethodGet, leader.url()+"/metrics", nil)
	req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/openmetrics-text") {
		t.Errorf("asked for OpenMetrics, got %q", ct)
	}
}
