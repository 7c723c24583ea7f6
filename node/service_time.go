package node

import (
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluicehq/sluice/fsm"
	"github.com/sluicehq/sluice/predict"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/scheduler"
)

// serviceTimes learns how long each model's attempts take, for ETAs and
// their band (scheduler.ServiceTime, as the simulator learns them). It is
// the leader's soft state, never replicated.
type serviceTimes struct {
	mu    sync.Mutex
	by    map[string]*scheduler.ServiceTime
	sized map[string]*sizedModel // models that declare what sizes their jobs
}

// sizedModel learns a model's run time from its jobs' inputs
// (predict.Learner), for the size declaration it was made for.
type sizedModel struct {
	decl *sluicev1.SizeModel
	l    *predict.Learner
}

// relearn forgets what was learned and learns again from runs, oldest
// first: a new leader's start from the replicated history (the state
// machine's finished jobs), not from nothing.
func (s *serviceTimes) relearn(runs []fsm.FinishedRun, model func(string) (*sluicev1.Model, bool)) {
	s.mu.Lock()
	s.by, s.sized = nil, nil
	s.mu.Unlock()
	for _, r := range runs {
		s.observe(r.Model, r.Ran)
		if m, ok := model(r.Model); ok {
			s.observeSized(m, "", r.Input, r.Ran) // the GPU kind is not in the log
		}
	}
}

// learner is m's size learner on GPUs of kind ("": on any), made anew
// when its declaration changed; nil when m declares none (under the lock).
func (s *serviceTimes) learner(m *sluicev1.Model, kind string) *predict.Learner {
	if m.GetSize() == nil {
		return nil
	}
	if s.sized == nil {
		s.sized = make(map[string]*sizedModel)
	}
	key := m.Name + "\x00" + kind
	sm, ok := s.sized[key]
	if !ok || (sm.decl != m.Size && !proto.Equal(sm.decl, m.Size)) {
		sm = &sizedModel{decl: m.Size, l: predict.NewLearner(len(m.Size.Terms), int(m.Size.MinObservations))}
		s.sized[key] = sm
	}
	return sm.l
}

// observeSized learns from an attempt of model m with input that ran for d
// on GPUs of kind ("": not known): for the model, and for the kind.
func (s *serviceTimes) observeSized(m *sluicev1.Model, kind string, input *structpb.Struct, d time.Duration) {
	x, complete, err := predict.Features(m.GetSize(), input)
	if err != nil || !complete {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.learner(m, ""); l != nil {
		l.Observe(x, d)
	}
	if kind != "" {
		s.learner(m, kind).Observe(x, d)
	}
}

// predictSized is the run time predicted for a job of model m with input
// on GPUs of kind ("": not known yet), and its spread: the kind's learner
// where it is trusted (a model runs at another speed on another GPU), else
// the model's; ok is false when m declares no size, the input lacks a
// field, or too few attempts were learned from.
func (s *serviceTimes) predictSized(m *sluicev1.Model, kind string, input *structpb.Struct) (mean, sd time.Duration, ok bool) {
	x, complete, err := predict.Features(m.GetSize(), input)
	if err != nil || !complete {
		return 0, 0, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if kind != "" {
		if l := s.learner(m, kind); l != nil && l.Trusted() {
			return l.Predict(x)
		}
	}
	if l := s.learner(m, ""); l != nil {
		return l.Predict(x)
	}
	return 0, 0, false
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

// runTime is the run time predicted for a job of model m with input on
// GPUs of kind ("": not known), and its spread: from its own size where m declares one and enough attempts
// were learned from (sized), else the model's learned average.
func (s *serviceTimes) runTime(m *sluicev1.Model, kind string, input *structpb.Struct) (mean, sd time.Duration, sized bool) {
	if mean, sd, ok := s.predictSized(m, kind, input); ok {
		return mean, sd, true
	}
	mean, sd = s.estimate(m.GetName(), m.GetDefaultDuration().AsDuration())
	return mean, sd, false
}

// trusted reports whether m's size learner has learned from enough attempts.
func (s *serviceTimes) trusted(m *sluicev1.Model) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.learner(m, "")
	return l != nil && l.Trusted()
}
