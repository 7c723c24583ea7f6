package fsm

import (
	"fmt"
	"io"
	"testing"

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
			for b.Loop() {
				if _, err := m.f.Capture().WriteTo(io.Discard); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
