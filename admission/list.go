package admission

import (
	"google.golang.org/protobuf/types/known/structpb"
)

// Walker is a State that walks the projected dispatch order
// (fsm.JobReads.EachReady).
type Walker interface {
	State
	EachReady(limit int, each func(id uint64, model string, input *structpb.Struct) bool) bool
}

// ListState is f for the rows of a list, the queued jobs rows, each of
// which reads the jobs ahead of it (QueuedETA with sizes): those reads
// come from one walk of the dispatch order, made at the first of them as
// far as the last of rows, and each job's run time is predicted once,
// where each row's own walk and predictions would make a list of n rows
// deep in the queue n times as dear. A row's jobs ahead are what f's own
// reads give at the walk's moment. Not safe for concurrent use.
func ListState(f Walker, rows []uint64) State {
	s := &listState{Walker: f, rows: make(map[uint64]bool, len(rows))}
	for _, id := range rows {
		s.rows[id] = true
	}
	return s
}

type listState struct {
	Walker
	rows   map[uint64]bool // the list's queued jobs: the walk ends at the last
	walked bool
	order  []aheadJob
	told   []toldRun
	at     map[uint64]int // each walked job's place in order
}

// ahead is the jobs before id, at most limit of them, and whether that
// reached id; ok is false where the walk did not come to id (not ready,
// or past MaxSizedAhead).
func (s *listState) ahead(id uint64, limit int) (jobs []aheadJob, reached, ok bool) {
	if id == 0 {
		return nil, false, false
	}
	if !s.walked {
		s.walked, s.at = true, map[uint64]int{}
		left := len(s.rows)
		s.EachReady(MaxSizedAhead+1, func(id uint64, m string, input *structpb.Struct) bool {
			s.at[id] = len(s.order)
			s.order = append(s.order, aheadJob{model: m, input: input})
			if s.rows[id] {
				left--
			}
			return left > 0
		})
		s.told = make([]toldRun, len(s.order))
		for i := range s.order {
			s.order[i].told = &s.told[i]
		}
	}
	k, ok := s.at[id]
	if !ok {
		return nil, false, false
	}
	if k > limit {
		return s.order[:limit], false, true
	}
	return s.order[:k], true, true
}

// EachAhead is State.EachAhead from the walk.
func (s *listState) EachAhead(id uint64, limit int, each func(model string, input *structpb.Struct)) bool {
	jobs, reached, ok := s.ahead(id, limit)
	if !ok {
		return s.Walker.EachAhead(id, limit, each)
	}
	for _, j := range jobs {
		each(j.model, j.input)
	}
	return reached
}
