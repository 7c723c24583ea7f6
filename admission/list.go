package admission

import (
	"slices"

	"google.golang.org/protobuf/types/known/structpb"
)

// Walker is a State that walks the projected dispatch order
// (fsm.JobReads.EachReady).
type Walker interface {
	State
	EachReady(limit int, until []uint64, each func(id uint64, model string, rank int, input *structpb.Struct)) bool
}

// ListState is f for the rows of a list, the queued jobs rows, each of
// which reads the jobs ahead of it (QueuedETA): those reads come from one
// walk of the dispatch order, made at the first of them as far as the last
// of rows that is queued and ready, each job's run time is predicted once,
// and each model's jobs before each place are counted once, where each
// row's own walk and predictions would make a list of n rows deep in the
// queue n times as dear. A row's jobs ahead are what f's own reads give at
// the walk's moment. Not safe for concurrent use.
func ListState(f Walker, rows []uint64) State {
	return &listState{Walker: f, rows: rows}
}

type listState struct {
	Walker
	rows  []uint64 // the list's queued jobs: the walk ends at the last
	order []aheadJob
	told  []toldRun
	at    map[uint64]int // each walked job's place in order; nil: not walked yet
	rank  []int          // each walked job's model's rank (EachReady)
	// For CountAhead: the models in the order the queue's CountAhead names
	// them, and before each place in order how many jobs of each.
	models []string
	counts []int32 // place k's: counts[k*len(models):][:len(models)]
}

// ahead is the jobs before id, at most limit of them, and whether that
// reached id; ok is false where the walk did not come to id (not ready,
// or past MaxSizedAhead). The jobs are the list's own: read only.
func (s *listState) ahead(id uint64, limit int) (jobs []aheadJob, reached, ok bool) {
	if id == 0 {
		return nil, false, false
	}
	if s.at == nil {
		s.at = map[uint64]int{}
		s.EachReady(MaxSizedAhead+1, s.rows, func(id uint64, m string, rank int, input *structpb.Struct) {
			s.at[id] = len(s.order)
			s.order = append(s.order, aheadJob{model: m, input: input})
			s.rank = append(s.rank, rank)
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
		return s.order[:limit:limit], false, true
	}
	return s.order[:k:k], true, true
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
// id, in the order the queue's own CountAhead names the models (the ETA's
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

// countModels makes models, by their rank, and counts.
func (s *listState) countModels() {
	byRank := map[int]string{}
	for k, j := range s.order {
		byRank[s.rank[k]] = j.model
	}
	ranks := make([]int, 0, len(byRank))
	for r := range byRank {
		ranks = append(ranks, r)
	}
	slices.Sort(ranks)
	index := make(map[string]int, len(ranks))
	for _, r := range ranks {
		index[byRank[r]] = len(s.models)
		s.models = append(s.models, byRank[r])
	}
	m := len(s.models)
	s.counts = make([]int32, (len(s.order)+1)*m)
	for k, j := range s.order {
		next := s.counts[(k+1)*m:][:m]
		copy(next, s.counts[k*m:][:m])
		next[index[j.model]]++
	}
}
