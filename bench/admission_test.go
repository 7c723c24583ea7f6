package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/node"
	"github.com/sluicehq/sluice/policy"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

// benchPolicy has many tenants so that parallel clients spread over keys;
// with limits on, every submission is checked against four rules that are
// generous enough never to reject.
func benchPolicy(tenants int, limits bool) *sluicev1.Policy {
	p := node.DemoPolicy()
	p.Tenants = nil
	for i := 0; i < tenants; i++ {
		p.Tenants = append(p.Tenants, &sluicev1.Tenant{Name: fmt.Sprintf("t%d", i), Tier: "pro",
			ApiKeySha256: []string{policy.HashKey(fmt.Sprintf("key-%d", i))}})
	}
	p.Rules = nil
	if limits {
		big := int64(1) << 40
		p.Rules = []*sluicev1.Rule{
			{Name: "rate", Limit: &sluicev1.Rule_TokenBucket{TokenBucket: &sluicev1.TokenBucketLimit{Count: big, Per: durationpb.New(time.Second), Burst: big}}},
			{Name: "daily", Limit: &sluicev1.Rule_Quota{Quota: &sluicev1.QuotaLimit{Limit: big}}},
			{Name: "inflight", Limit: &sluicev1.Rule_Concurrency{Concurrency: &sluicev1.ConcurrencyLimit{Limit: big}}},
			{Name: "global", Scope: sluicev1.RuleScope_RULE_SCOPE_GLOBAL, Limit: &sluicev1.Rule_Gcra{Gcra: &sluicev1.TokenBucketLimit{Count: big, Per: durationpb.New(time.Second), Burst: big}}},
		}
	}
	p.Defaults.JobRetention = durationpb.New(time.Hour)
	return p
}

// BenchmarkAdmission measures Submit round trips through a real one-node
// cluster (raft with its bolt log on disk, Connect over loopback HTTP),
// with the rate limiter on and off. No executors: jobs stay queued.
func BenchmarkAdmission(b *testing.B) {
	for _, limits := range []bool{false, true} {
		b.Run(fmt.Sprintf("limiter=%v", onOff(limits)), func(b *testing.B) {
			admissions(b, limits, true)
		})
	}
}

// BenchmarkAdmissionMetrics is BenchmarkAdmission with the limiter on and
// the Prometheus metrics off, then on and scraped every scrapeEvery.
func BenchmarkAdmissionMetrics(b *testing.B) {
	for _, metrics := range []bool{false, true} {
		b.Run(fmt.Sprintf("metrics=%v", onOff(metrics)), func(b *testing.B) {
			admissions(b, true, metrics)
		})
	}
}

// scrapeEvery is how often the metrics are scraped in BenchmarkAdmissionMetrics:
// Prometheus' usual interval is 15 s; this is three times as often.
var scrapeEvery = 5 * time.Second

func onOff(v bool) string { return map[bool]string{false: "off", true: "on"}[v] }

func admissions(b *testing.B, limits, metrics bool) {
	const tenants = 64
	n, err := node.Start(node.Config{
		DataDir: b.TempDir(), HTTPAddr: "127.0.0.1:0", Bootstrap: true, NoMetrics: !metrics,
		Policy: benchPolicy(tenants, limits), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RaftLog: io.Discard,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	for !n.Ready() {
		time.Sleep(5 * time.Millisecond)
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	if metrics {
		done := make(chan struct{})
		defer close(done)
		go func() {
			t := time.NewTicker(scrapeEvery)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					if res, err := hc.Get("http://" + n.Addr() + "/metrics"); err == nil {
						io.Copy(io.Discard, res.Body)
						res.Body.Close()
					}
				}
			}
		}()
	}
	b.SetParallelism(16) // 16 × GOMAXPROCS concurrent clients
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		k := int(time.Now().UnixNano()) % tenants
		c := sluicev1connect.NewJobServiceClient(hc, "http://"+n.Addr(), connect.WithInterceptors(bearer(fmt.Sprintf("key-%d", k))))
		for pb.Next() {
			_, err := c.Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "llama-8b"}}))
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer() // the deferred Close is not part of admission
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "admissions/s")
}

type bearer string

func (k bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+string(k))
		return next(ctx, req)
	}
}
func (k bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}
func (k bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}
