package sim

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// BenchmarkMMc simulates M/M/4 at ρ = 0.9 (exponential service of mean 1s,
// Poisson arrivals at 3.6/s, four one-GPU executors, one tenant and model)
// through the full path: every job is a Submit, a placement (admission.Dispatcher) and its
// Assign, and a Complete, each encoded and applied by fsm.Apply. It
// reports jobs and simulator events per wall-clock second, log entries
// per job and the peak heap. bench/simpy runs the same model in SimPy.
//
//	go test -run '^$' -bench MMc -benchtime 1x ./sim/
func BenchmarkMMc(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("c=4/rho=0.9/jobs=%d", n), func(b *testing.B) {
			var jobs, events, commands int64
			var wall time.Duration
			var wait float64
			for range b.N {
				w := mmc(4, 0.9, int64(n), 0)
				start := time.Now()
				r, err := Run(w, Options{NoSeries: true})
				if err != nil {
					b.Fatal(err)
				}
				wall += time.Since(start)
				jobs += r.Cluster.Succeeded
				events += r.Perf.Events
				commands += r.Perf.Commands
				wait = r.Cluster.Wait.Mean
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			b.ReportMetric(float64(jobs)/wall.Seconds(), "jobs/s")
			b.ReportMetric(float64(events)/wall.Seconds(), "events/s")
			b.ReportMetric(float64(commands)/float64(jobs), "entries/job")
			b.ReportMetric(wait, "mean-wait-s")
			b.ReportMetric(float64(ms.HeapSys)/(1<<20), "heap-MiB")
		})
	}
}
