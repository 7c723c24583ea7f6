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
	last   uint64         // the last job walked
	// For CountAhead: the models in the order the queue's own CountAhead
	// gives them, and before each place in order how many jobs of each.
	models []string
	counts []int32 // place k's: counts[k*len(models):][:len(models)]
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
			s.at[id], s.last = len(s.order), id
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

// CountAhead is State.CountAhead from the walk: each model's jobs before
// id, in the order the queue's own CountAhead gives the models (the ETA's
// sums and drawn jobs go in that order), read from counts made once.
func (s *listState) CountAhead(id uint64, limit int, each func(model string, n int)) bool {
	_, reached, ok := s.ahead(id, limit)
	if !ok {
		return s.Walker.CountAhead(id, limit, each)
	}
	if !reached {
		return false
	}
	if s.models == nil {
		s.countModels()
	}
	m := len(s.models)
	for i, n := range s.counts[s.at[id]*m:][:m] {
		if n > 0 {
			each(s.models[i], int(n))
		}
	}
	return true
}

// countModels makes models and counts: the queue's order of models is the
// one its CountAhead of the last job walked gives (every row's jobs ahead
// are the first of that job's), and a model it did not name (its jobs
// left since the walk) comes after them.
func (s *listState) countModels() {
	index := map[string]int{}
	s.Walker.CountAhead(s.last, MaxSizedAhead, func(m string, _ int) {
		index[m] = len(s.models)
		s.models = append(s.models, m)
	})
	for _, j := range s.order {
		if _, ok := index[j.model]; !ok {
			index[j.model] = len(s.models)
			s.models = append(s.models, j.model)
		}
	}
	m := len(s.models)
	s.counts = make([]int32, (len(s.order)+1)*m)
	for k, j := range s.order {
		next := s.counts[(k+1)*m:][:m]
		copy(next, s.counts[k*m:][:m])
		next[index[j.model]]++
	}
}
