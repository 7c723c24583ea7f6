package fsm

import (
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/predict"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// Reservations by size (issue 28): a model whose size declaration says
// reserve has the state machine learn its run times from the completions
// it applies (predict.Line, integer arithmetic, so every replica agrees)
// and charge cost-weighted limits at admission the job's predicted
// GPU-milliseconds.

// sizeBook holds the lines of the models that reserve by size, by model.
type sizeBook map[string]*sizeLine

// sizeLine is a model's line, for the declaration it was made for.
type sizeLine struct {
	decl *sluicev1.SizeModel
	line *predict.Line
}

// reservesBySize reports whether m's jobs are reserved by their size.
func reservesBySize(m *sluicev1.Model) bool {
	return m.GetSize().GetReserve() && len(m.GetSize().GetTerms()) == 1
}

// sync keeps the lines of the models that reserve by size under the
// policy (models: pol's, by name), anew where a declaration changed, and
// drops the others.
func (b sizeBook) sync(pol *sluicev1.Policy, models map[string]*sluicev1.Model) {
	for name, sl := range b {
		m, ok := models[name]
		if !ok || !reservesBySize(m) || !proto.Equal(sl.decl, m.Size) {
			delete(b, name)
		}
	}
	for _, m := range pol.GetModels() {
		if _, ok := b[m.Name]; !ok && reservesBySize(m) {
			b[m.Name] = &sizeLine{decl: m.Size, line: predict.NewLine(int(m.Size.MinObservations))}
		}
	}
}

// learn teaches j's model's line its attempt that ends now.
func (b sizeBook) learn(j *raftv1.JobRecord, now int64) {
	if len(b) == 0 {
		return // no model reserves by size: the common case costs no lookup
	}
	sl, ok := b[j.Spec.GetModel()]
	if !ok || j.StartedNs <= 0 || now < j.StartedNs {
		return
	}
	if x, ok := predict.Term(sl.decl, j.Spec.GetInput()); ok {
		sl.line.Observe(x, now-j.StartedNs)
	}
}

// reserveCost is what admission charges rules that count cost: the
// declared cost; else, where m reserves by size and its line is trusted,
// the job's GPUs times its predicted milliseconds; else EstimateCost.
func (b sizeBook) reserveCost(spec *sluicev1.JobSpec, m *sluicev1.Model) int64 {
	if spec.GetDeclaredCost() > 0 {
		return spec.DeclaredCost
	}
	if len(b) == 0 {
		return EstimateCost(spec, m)
	}
	if sl, ok := b[m.GetName()]; ok {
		if x, ok := predict.Term(sl.decl, spec.GetInput()); ok {
			if ns, ok := sl.line.Predict(x); ok {
				return max(1, int64(jobGPUs(spec, m))*(ns/int64(time.Millisecond)))
			}
		}
	}
	return EstimateCost(spec, m)
}

// ReserveCost is what a job of spec and model reserves of the rules that
// count cost, for the leader's pre-check.
func (r JobReads) ReserveCost(spec *sluicev1.JobSpec, m *sluicev1.Model) int64 {
	return r.f.lines.reserveCost(spec, m)
}

// image is the lines as a snapshot keeps them, sorted by model.
func (b sizeBook) image() []*raftv1.SizeLine {
	var out []*raftv1.SizeLine
	for _, name := range sortedKeys(b) {
		seen, next, obs := b[name].line.State()
		s := &raftv1.SizeLine{Model: name, Seen: seen, Next: int32(next)}
		for _, p := range obs {
			s.X, s.Ns = append(s.X, p.X), append(s.Ns, p.NS)
		}
		out = append(out, s)
	}
	return out
}

// restore takes the lines a snapshot kept, for the models that still
// reserve by size under the restored policy (pol, models).
func (b sizeBook) restore(lines []*raftv1.SizeLine, pol *sluicev1.Policy, models map[string]*sluicev1.Model) {
	b.sync(pol, models)
	for _, s := range lines {
		sl, ok := b[s.Model]
		if !ok || len(s.X) != len(s.Ns) {
			continue
		}
		obs := make([]predict.LinePoint, len(s.X))
		for i := range obs {
			obs[i] = predict.LinePoint{X: s.X[i], NS: s.Ns[i]}
		}
		sl.line = predict.RestoreLine(int(sl.decl.MinObservations), s.Seen, int(s.Next), slices.Clip(obs))
	}
}
