package metrics

import (
	"io"
	"net/http/httptest"
	"testing"
)

// BenchmarkScrape measures one scrape of a server's /metrics with 64
// tenants' 20,000 queued jobs in its replica (the queue is walked at each
// scrape; nothing on the write path keeps these figures).
func BenchmarkScrape(b *testing.B) {
	m := NewServer("n1", 0, Source{
		Raft:      func() Raft { return Raft{} },
		Executors: func() []Executor { return nil },
		Leading:   func() bool { return false },
	})
	m.src.FSM = replicaWithJobs(b, 64, 20000).Reads()
	h := m.Handler()
	b.ResetTimer()
	for range b.N {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
		io.Copy(io.Discard, w.Body)
	}
}
