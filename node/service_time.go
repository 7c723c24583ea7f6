package node

import (
	"sync"
	"time"
)

// serviceTimes learns how long each model's attempts take, for ETAs. It is
// the leader's soft state: an exponentially weighted moving average seeded
// with the policy's default_duration, never replicated.
type serviceTimes struct {
	mu sync.Mutex
	by map[string]time.Duration
}

// serviceAlpha weighs the newest sample: about the last ten runs count.
const serviceAlpha = 0.2

func (s *serviceTimes) observe(model string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.by == nil {
		s.by = make(map[string]time.Duration)
	}
	old, ok := s.by[model]
	if !ok {
		s.by[model] = d
		return
	}
	s.by[model] = old + time.Duration(serviceAlpha*float64(d-old))
}

// expected returns the learned service time, or the default when none.
func (s *serviceTimes) expected(model string, def time.Duration) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d, ok := s.by[model]; ok && d > 0 {
		return d
	}
	if def <= 0 {
		return time.Second
	}
	return def
}
