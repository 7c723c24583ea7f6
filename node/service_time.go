package node

import (
	"sync"
	"time"

	"github.com/sluicehq/sluice/scheduler"
)

// serviceTimes learns how long each model's attempts take, for ETAs and
// their band (scheduler.ServiceTime, as the simulator learns them). It is
// the leader's soft state, never replicated.
type serviceTimes struct {
	mu sync.Mutex
	by map[string]*scheduler.ServiceTime
}

func (s *serviceTimes) observe(model string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.by == nil {
		s.by = make(map[string]*scheduler.ServiceTime)
	}
	st, ok := s.by[model]
	if !ok {
		st = &scheduler.ServiceTime{}
		s.by[model] = st
	}
	st.Observe(d)
}

// estimate is the learned service time and its deviation, or def's when
// none was learned (scheduler.ServiceTime.Estimate).
func (s *serviceTimes) estimate(model string, def time.Duration) (mean, sd time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.by[model]
	if st == nil {
		st = &scheduler.ServiceTime{}
	}
	return st.Estimate(def)
}

// expected is estimate's mean.
func (s *serviceTimes) expected(model string, def time.Duration) time.Duration {
	mean, _ := s.estimate(model, def)
	return mean
}
