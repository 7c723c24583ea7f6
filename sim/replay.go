package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/sluicehq/sluice/fsm"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// Replay (issue 22): a workload built from what a cluster's raft log says
// happened, its arrivals, service times and executors, to run again under
// another policy or executor count, beside what really happened.

// Recording is what a raft log (after a snapshot) says happened: the
// entries applied to a state machine in order, as a replica applies them.
type Recording struct {
	Policy     *sluicev1.Policy // as of the last entry
	Start, End int64            // the first and last entries' times (unix ns)
	Entries    int

	arrivals  map[string][]recArrival // by tenant, in log order
	service   map[string][]int64      // attempts' run times by model
	executors map[string]*recExecutor
	jobs      map[uint64]*recJob
	running   map[uint64]*recJob // assigned and not yet seen to stop
	tiers     map[string]*recTier
}

type recArrival struct {
	at    int64
	model string
}

type recExecutor struct {
	gpus, inUse    int32 // most GPUs in use at once; in use now
	memMB          int64
	slots, running int
}

type recJob struct {
	tier, model, exec string
	gpus              int32
	submitted         int64
	started           bool
}

type recTier struct {
	submitted, admitted, rejected int64
	waits                         []int64
}

// Record applies a node's snapshot (nil for none) and then every entry
// that entries hands its callback, and keeps what happened.
func Record(snapshot []byte, entries func(each func(index uint64, data []byte) error) error) (*Recording, error) {
	f := fsm.New()
	if snapshot != nil {
		if err := f.Restore(snapshot); err != nil {
			return nil, err
		}
	}
	r := &Recording{arrivals: map[string][]recArrival{}, service: map[string][]int64{}, executors: map[string]*recExecutor{},
		jobs: map[uint64]*recJob{}, running: map[uint64]*recJob{}, tiers: map[string]*recTier{}}
	err := entries(func(index uint64, data []byte) error {
		res := f.Apply(index, data)
		cmds, err := fsm.Split(data)
		if err != nil {
			return fmt.Errorf("log entry %d: %w", index, err)
		}
		results := []fsm.Result{res}
		if len(cmds) > 1 || (len(data) > 0 && fsm.CommandType(data[0]) == fsm.CmdBatch) {
			results = res.Batch
		}
		for i, c := range cmds {
			if i >= len(results) {
				break
			}
			t, now, msg, err := fsm.Decode(c)
			if err != nil {
				continue // a command this build does not know: a replica would refuse it too
			}
			r.note(f, t, now, msg, results[i])
		}
		r.settle(f)
		r.Entries++
		return nil
	})
	if err != nil {
		return nil, err
	}
	if r.Entries == 0 {
		return nil, errors.New("the log holds no entries after its snapshot")
	}
	r.Policy = f.Reads().Policy()
	return r, nil
}

func (r *Recording) note(f *fsm.FSM, t fsm.CommandType, now int64, msg any, res fsm.Result) {
	if r.Start == 0 || now < r.Start {
		r.Start = now
	}
	r.End = max(r.End, now)
	switch m := msg.(type) {
	case *raftv1.Submit:
		tn, ok := f.Reads().Tenant(m.Tenant)
		if !ok || m.Spec == nil {
			return
		}
		tier := r.tier(tn.Tier)
		tier.submitted++
		r.arrivals[m.Tenant] = append(r.arrivals[m.Tenant], recArrival{at: now, model: m.Spec.GetModel()})
		var le *fsm.LimitError
		switch {
		case res.Err == nil && !res.Deduplicated:
			tier.admitted++
			model := m.Spec.GetModel()
			if j, ok := f.Reads().Job(res.JobID); ok {
				model = j.Spec.GetModel() // after a degrade
			}
			r.jobs[res.JobID] = &recJob{tier: tn.Tier, model: model, submitted: now}
		case errors.As(res.Err, &le):
			tier.rejected++
		}
	case *raftv1.Assign:
		j := r.jobs[m.JobId]
		if res.Err != nil || j == nil {
			return // refused, or submitted before the snapshot (its executor is not sized on it)
		}
		x := r.executors[m.Executor]
		if x == nil {
			x = &recExecutor{}
			r.executors[m.Executor] = x
		}
		j.exec, j.gpus = m.Executor, max(int32(len(m.Gpus)), 1)
		x.running++
		x.inUse += j.gpus
		x.slots, x.gpus = max(x.slots, x.running), max(x.gpus, x.inUse)
		if rec, ok := f.Reads().Job(m.JobId); ok {
			if model, ok := f.Reads().Model(rec.Spec.GetModel()); ok {
				x.memMB = max(x.memMB, fsm.JobGPUMemory(rec.Spec, model))
			}
		}
		r.running[m.JobId] = j
		if !j.started {
			j.started = true
			r.tier(j.tier).waits = append(r.tier(j.tier).waits, now-j.submitted)
		}
	case *raftv1.Complete:
		if j := r.jobs[m.JobId]; j != nil && res.Err == nil && m.RunNs > 0 {
			r.service[j.model] = append(r.service[j.model], m.RunNs)
		}
	}
}

// settle frees the executors of the jobs that stopped running in the last
// entry: completed, failed, canceled, requeued, or timed out (which the
// state machine decides with no command of its own).
func (r *Recording) settle(f *fsm.FSM) {
	for id, j := range r.running {
		if rec, ok := f.Reads().Job(id); ok && rec.State == sluicev1.JobState_JOB_STATE_RUNNING && rec.Executor == j.exec {
			continue
		}
		if x := r.executors[j.exec]; x != nil {
			x.running--
			x.inUse -= j.gpus
		}
		j.exec = ""
		delete(r.running, id)
	}
}

func (r *Recording) tier(name string) *recTier {
	t := r.tiers[name]
	if t == nil {
		t = &recTier{}
		r.tiers[name] = t
	}
	return t
}

// Workload writes the recording into dir as a workload to simulate: one
// trace per tenant (its Submits' times and models), each model's service
// time (lognormal with the recorded mean and deviation; constant from one
// sample; the policy's default_duration when none finished), one executor
// per recorded executor (its most GPUs and jobs at once), and the policy
// of the log's end (policy.json); workload.json names them all. It returns
// the workload, loaded as `sluice sim run` would.
func (r *Recording) Workload(dir string) (*Workload, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	w := &Workload{Name: "replay", Seed: 1, Start: time.Unix(0, r.Start).UTC().Format(time.RFC3339Nano),
		Duration: Duration(r.End - r.Start + int64(time.Second)), PolicyFile: "policy.json"}
	pj, err := protojson.MarshalOptions{Multiline: true}.Marshal(r.Policy)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.json"), pj, 0o644); err != nil {
		return nil, err
	}
	tenants := sortedNames(r.arrivals)
	for _, name := range tenants {
		var b strings.Builder
		for _, a := range r.arrivals[name] {
			fmt.Fprintf(&b, "%.9f %s\n", float64(a.at-r.Start)/1e9, a.model)
		}
		file := "trace-" + safeName(name) + ".txt"
		if err := os.WriteFile(filepath.Join(dir, file), []byte(b.String()), 0o644); err != nil {
			return nil, err
		}
		// The trace names each arrival's model; the mix is its shares (the
		// loader asks for one).
		counts := map[string]int{}
		for _, a := range r.arrivals[name] {
			counts[a.model]++
		}
		var mix []ModelMix
		for _, m := range sortedNames(counts) {
			mix = append(mix, ModelMix{Model: m, Share: float64(counts[m])})
		}
		w.Tenants = append(w.Tenants, TenantSpec{Name: name, Arrivals: Arrivals{Trace: file}, Mix: mix})
	}
	for _, m := range r.Policy.GetModels() {
		runs := r.service[m.Name]
		s := Service{Dist: "constant", Mean: Duration(m.GetDefaultDuration().AsDuration())}
		if s.Mean <= 0 {
			s.Mean = Duration(time.Second)
		}
		if len(runs) > 0 {
			mean, sd := meanSD(runs)
			s.Mean = Duration(mean)
			if len(runs) > 1 && sd > 0 {
				s.Dist, s.Stddev = "lognormal", Duration(sd)
			}
		}
		w.Models = append(w.Models, ModelSpec{Name: m.Name, Service: s})
	}
	// Executors alike (GPUs, jobs at once, memory) make one group, in
	// the order of their first name: --executors N sets a group's count.
	for _, name := range sortedNames(r.executors) {
		x := r.executors[name]
		spec := ExecutorSpec{GPUs: max(x.gpus, 1), Slots: int32(max(x.slots, 1)), GPUMemoryMB: x.memMB}
		i := slices.IndexFunc(w.Executors, func(e ExecutorSpec) bool {
			return e.GPUs == spec.GPUs && e.Slots == spec.Slots && e.GPUMemoryMB == spec.GPUMemoryMB
		})
		if i < 0 {
			spec.Name = fmt.Sprintf("recorded-%d", len(w.Executors)+1)
			w.Executors = append(w.Executors, spec)
			i = len(w.Executors) - 1
		}
		w.Executors[i].Count++
	}
	if len(w.Executors) == 0 {
		return nil, errors.New("the log assigns no job to an executor: nothing to size the executors on")
	}
	data, err := marshalWorkload(w)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "workload.json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return nil, err
	}
	return Load(path)
}

func meanSD(xs []int64) (mean, sd float64) {
	for _, x := range xs {
		mean += float64(x)
	}
	mean /= float64(len(xs))
	for _, x := range xs {
		d := float64(x) - mean
		sd += d * d
	}
	return mean, math.Sqrt(sd / float64(len(xs)))
}

// safeName keeps letters, digits, '-' and '_' of a tenant's name for a file name.
func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '-' || r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			return r
		}
		return '_'
	}, s)
}

// ReplayRow is one tier's figures, recorded or simulated.
type ReplayRow struct {
	Tier      string  `json:"tier"`
	Submitted int64   `json:"submitted"`
	Admitted  int64   `json:"admitted"`
	Rejected  int64   `json:"rejected"`
	WaitP50   float64 `json:"wait_p50"` // seconds
	WaitP95   float64 `json:"wait_p95"`
}

// Recorded is what the log says of each tier: Submits that reached the
// log (the leader's pre-check refuses clear over-limit requests without an
// entry: those are not in it), admitted, refused by a limit there, and the
// wait from the Submit's entry to its first Assign's.
func (r *Recording) Recorded() []ReplayRow {
	var out []ReplayRow
	for _, name := range sortedNames(r.tiers) {
		t := r.tiers[name]
		ws := slices.Clone(t.waits)
		slices.Sort(ws)
		out = append(out, ReplayRow{Tier: name, Submitted: t.submitted, Admitted: t.admitted, Rejected: t.rejected,
			WaitP50: secs(quantile(ws, 0.5)), WaitP95: secs(quantile(ws, 0.95))})
	}
	return out
}

// Simulated is a replay's report in the same rows.
func Simulated(rep *Report) []ReplayRow {
	var out []ReplayRow
	for _, g := range rep.Tiers {
		out = append(out, ReplayRow{Tier: g.Name, Submitted: g.Submitted, Admitted: g.Admitted, Rejected: g.Rejected,
			WaitP50: g.Wait.P50, WaitP95: g.Wait.P95})
	}
	return out
}

// WriteReplayTable writes the recorded and simulated rows side by side.
func WriteReplayTable(w io.Writer, recorded, simulated []ReplayRow) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "tier\t\tsubmitted\tadmitted\trejected\twait p50\tp95\t")
	find := func(rows []ReplayRow, tier string) *ReplayRow {
		for i := range rows {
			if rows[i].Tier == tier {
				return &rows[i]
			}
		}
		return nil
	}
	var tiers []string
	for _, rows := range [][]ReplayRow{recorded, simulated} {
		for _, r := range rows {
			if !slices.Contains(tiers, r.Tier) {
				tiers = append(tiers, r.Tier)
			}
		}
	}
	for _, tier := range tiers {
		for i, side := range []struct {
			name string
			rows []ReplayRow
		}{{"recorded", recorded}, {"simulated", simulated}} {
			label := ""
			if i == 0 {
				label = tier
			}
			if r := find(side.rows, tier); r != nil {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%s\t\n", label, side.name, r.Submitted, r.Admitted, r.Rejected, fmtSecs(r.WaitP50), fmtSecs(r.WaitP95))
			} else {
				fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t\n", label, side.name)
			}
		}
	}
	return tw.Flush()
}

// marshalWorkload is w as a workload file (JSON, which the loader reads as YAML's subset).
func marshalWorkload(w *Workload) ([]byte, error) { return json.MarshalIndent(w, "", "  ") }

// sortedNames is m's keys in order.
func sortedNames[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
