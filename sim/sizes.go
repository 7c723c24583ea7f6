package sim

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluicehq/sluice/admission"
	"github.com/sluicehq/sluice/fsm"
	"github.com/sluicehq/sluice/predict"
	"github.com/sluicehq/sluice/scheduler"
)

// SizeSpec gives a model's jobs input sizes (issue 28): each job's input
// fields are drawn from their distributions, and its run time is Fixed
// plus Per times the product of the Term fields, times a draw of the
// model's service distribution over its mean (its shape: the noise).
type SizeSpec struct {
	Fields map[string]FieldDist `json:"fields"`
	Run    SizeRun              `json:"run"`
}

// FieldDist is one input field's distribution: one of Choice (each as
// likely), or uniform between Min and Max (whole numbers when Whole).
type FieldDist struct {
	Choice []float64 `json:"choice,omitempty"`
	Min    float64   `json:"min,omitempty"`
	Max    float64   `json:"max,omitempty"`
	Whole  bool      `json:"whole,omitempty"`
}

// SizeRun is how a job's size makes its run time.
type SizeRun struct {
	Fixed Duration `json:"fixed,omitempty"`
	Per   Duration `json:"per"`
	Term  []string `json:"term"`
}

func (s *SizeSpec) check(f string) error {
	if len(s.Fields) == 0 || len(s.Fields) > 8 {
		return fmt.Errorf("%s.fields: %d fields; give 1–8", f, len(s.Fields))
	}
	for name, d := range s.Fields {
		ff := f + ".fields." + name
		switch {
		case len(d.Choice) > 0 && (d.Min != 0 || d.Max != 0):
			return fmt.Errorf("%s: give choice or min and max, not both", ff)
		case len(d.Choice) > 64:
			return fmt.Errorf("%s.choice: %d values exceed the limit of 64", ff, len(d.Choice))
		case len(d.Choice) == 0 && (d.Min < 0 || d.Max < d.Min):
			return fmt.Errorf("%s: min %v and max %v: want 0 <= min <= max", ff, d.Min, d.Max)
		}
		for i, v := range d.Choice {
			if v < 0 {
				return fmt.Errorf("%s.choice[%d]: %v is negative", ff, i, v)
			}
		}
	}
	if s.Run.Per <= 0 || s.Run.Fixed < 0 {
		return fmt.Errorf("%s.run: per must be positive and fixed not negative", f)
	}
	if len(s.Run.Term) == 0 || len(s.Run.Term) > predict.MaxTermFields {
		return fmt.Errorf("%s.run.term: %d fields; give 1–%d", f, len(s.Run.Term), predict.MaxTermFields)
	}
	for i, name := range s.Run.Term {
		if _, ok := s.Fields[name]; !ok {
			return fmt.Errorf("%s.run.term[%d]: %q is not one of its fields", f, i, name)
		}
	}
	return nil
}

// sizer draws a model's job sizes.
type sizer struct {
	spec  *SizeSpec
	names []string // the fields, sorted: draws in a fixed order
	r     *rand.Rand
}

func newSizer(seed uint64, model string, s *SizeSpec) *sizer {
	names := make([]string, 0, len(s.Fields))
	for n := range s.Fields {
		names = append(names, n)
	}
	sort.Strings(names)
	return &sizer{spec: s, names: names, r: stream(seed, "sizes/"+model)}
}

// draw is one job's input and the run time its size makes (before noise).
func (z *sizer) draw() (*structpb.Struct, int64) {
	in := &structpb.Struct{Fields: make(map[string]*structpb.Value, len(z.names))}
	for _, n := range z.names {
		d := z.spec.Fields[n]
		var v float64
		if len(d.Choice) > 0 {
			v = d.Choice[z.r.IntN(len(d.Choice))]
		} else {
			v = d.Min + (d.Max-d.Min)*z.r.Float64()
			if d.Whole {
				v = float64(int64(v + 0.5))
			}
		}
		in.Fields[n] = structpb.NewNumberValue(v)
	}
	term := 1.0
	for _, n := range z.spec.Run.Term {
		term *= in.Fields[n].GetNumberValue()
	}
	return in, int64(z.spec.Run.Fixed) + int64(float64(z.spec.Run.Per)*term)
}

// runTime is the leader's prediction of a job's run time: from its input
// where the model declares a size and its learner is trusted (sized), else
// the model's learned average, as node's serviceTimes.runTime.
func (e forecasts) runTime(m *modelState, input *structpb.Struct) (scheduler.RunTime, bool) {
	if m.learner != nil && m.learner.Trusted() {
		if x, ok, err := predict.Features(m.policy.GetSize(), input); err == nil && ok {
			if d, sd, ok := m.learner.Predict(x); ok {
				return scheduler.RunTime{Mean: d, SD: sd}, true
			}
		}
	}
	mean, sd := m.svc.Estimate(m.policy.GetDefaultDuration().AsDuration())
	return scheduler.RunTime{Mean: mean, SD: sd}, false
}

// learnSize teaches the model's learner a completed attempt.
func (e forecasts) learnSize(m *modelState, input *structpb.Struct, ns int64) {
	if m.learner == nil {
		return
	}
	if x, ok, err := predict.Features(m.policy.GetSize(), input); err == nil && ok {
		m.learner.Observe(x, time.Duration(ns))
	}
}

// sizing is what admission.QueuedETA takes of the simulated leader's
// predictions, as node's sizing: nil when no model of the policy declares
// a size.
func (e forecasts) sizing() *admission.Sizing {
	if !e.sized {
		return nil
	}
	if e.sizes != nil {
		return e.sizes
	}
	e.sizes = &admission.Sizing{
		Predictor: func(model string) func(*structpb.Struct) (scheduler.RunTime, bool) {
			mi, ok := e.modelIx[model]
			if !ok {
				return nil
			}
			m := &e.models[mi]
			if m.learner == nil || !m.learner.Trusted() {
				return nil
			}
			return func(in *structpb.Struct) (scheduler.RunTime, bool) { return e.runTime(m, in) }
		},
	}
	return e.sizes
}

// reserved counts how a succeeded job's reservation compared with the
// cost it settled at (sized workloads: issue 28's measure of reservations
// by size against the fixed one).
func (e forecasts) reserved(id uint64) {
	rec, ok := e.r.Job(id)
	if !ok {
		return
	}
	a := fsm.JobAdmission(rec)
	res, settled := a.GetReservedCost(), a.GetSettledCost()
	if res <= 0 || settled <= 0 {
		return
	}
	e.reservations.Jobs++
	switch {
	case 2*res > 3*settled:
		e.reservations.over++
	case 3*res < 2*settled:
		e.reservations.under++
	}
}

// Reservations is how the cost reserved at admission compared with the
// cost settled at the end, over the measured succeeded jobs: the share
// reserved more than 1.5× what they cost, and less than 1/1.5 of it.
type Reservations struct {
	Jobs    int64   `json:"jobs"`
	Over50  float64 `json:"over_50"`
	Under33 float64 `json:"under_33"`
	over    int64
	under   int64
}

// relearnPerModel is how many of each model's latest succeeded jobs a new
// leader relearns from (node's relearnPerModel).
const relearnPerModel = 512

// sizedModels reports whether some model of the policy declares a size.
func sizedModels(models []modelState) bool {
	return slices.ContainsFunc(models, func(m modelState) bool { return m.policy.GetSize() != nil })
}
