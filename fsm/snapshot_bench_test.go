package fsm

import (
	"fmt"
	"io"
	"runtime"
	"testing"

	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// BenchmarkSnapshot: what a snapshot of n queued jobs costs the goroutine
// that applies. Before Capture, raft's FSM.Snapshot encoded the whole state
// there ("encode"); now it takes a Capture there ("capture") and encodes it
// on raft's snapshot goroutine ("capture+encode" is the whole work;
// "capture+write" is what a snapshot does now: the encoding streamed to its
// file in chunks, never whole in memory).
func BenchmarkSnapshot(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		m := newMachine(b)
		for i := range n {
			m.submit(b, 0, []string{"alice", "bob"}[i%2], &sluicev1.JobSpec{Model: "llama-8b"})
		}
		b.Run(fmt.Sprintf("jobs=%d/encode", n), func(b *testing.B) {
			for b.Loop() {
				m.f.Snapshot()
			}
		})
		b.Run(fmt.Sprintf("jobs=%d/capture", n), func(b *testing.B) {
			for b.Loop() {
				m.f.Capture()
			}
		})
		b.Run(fmt.Sprintf("jobs=%d/capture+encode", n), func(b *testing.B) {
			for b.Loop() {
				m.f.Capture().Encode()
			}
		})
		b.Run(fmt.Sprintf("jobs=%d/capture+write", n), func(b *testing.B) {
			var size int64
			for b.Loop() {
				var err error
				if size, err = m.f.Capture().WriteTo(io.Discard); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(size), "snapshot-bytes")
		})
	}
}

// BenchmarkQueuedJobMemory: the live heap a queued job costs each replica
// (what the collector marks and a snapshot encodes), reported as bytes/job
// and objects/job; submitted in batch entries of 64 as group commit makes them.
func BenchmarkQueuedJobMemory(b *testing.B) {
	const n = 100_000
	cmds := make([][]byte, n)
	for i := range cmds {
		cmds[i] = MustEncode(CmdSubmit, int64(i), &raftv1.Submit{Tenant: []string{"alice", "bob"}[i%2], Spec: &sluicev1.JobSpec{Model: "llama-8b"}})
	}
	var bytes, objects float64
	for b.Loop() {
		m := newMachine(b)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := 0; i < n; i += 64 {
			m.index++
			m.f.Apply(m.index, EncodeBatch(int64(i), cmds[i:min(i+64, n)]))
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(m)
		bytes += float64(after.HeapAlloc-before.HeapAlloc) / n
		objects += float64(after.HeapObjects-before.HeapObjects) / n
	}
	b.ReportMetric(bytes/float64(b.N), "bytes/job")
	b.ReportMetric(objects/float64(b.N), "objects/job")
}
