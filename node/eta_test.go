package node

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluicehq/sluice/fsm"
	"github.com/sluicehq/sluice/policy"
	raftv1 "github.com/sluicehq/sluice/proto/gen/sluice/raft/v1"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/scheduler"
)

// A queued job's ETA comes with its p10–p90 band (issue 22): around the
// ETA, wider for a job further back in line.
func TestQueuedJobsETAHasABand(t *testing.T) {
	n := startNodeWith(t, 1, DemoPolicy())
	bob := jobClient(n, DemoBobKey)
	long, _ := structpb.NewStruct(map[string]any{"duration_ms": 30000})
	var jobs []*sluicev1.Job
	for range 5 {
		res, err := bob.Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "sdxl", Input: long}}))
		if err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, res.Msg.Job)
	}
	var widths []int64
	for _, j := range jobs[2:] {
		res, err := bob.GetJob(context.Background(), connect.NewRequest(&sluicev1.GetJobRequest{Id: j.Id}))
		if err != nil {
			t.Fatal(err)
		}
		g := res.Msg.Job
		if g.State != sluicev1.JobState_JOB_STATE_QUEUED || !(g.EtaP10Seconds <= g.EtaSeconds && g.EtaSeconds <= g.EtaP90Seconds && g.EtaP10Seconds < g.EtaP90Seconds) {
			t.Fatalf("job %s: %v at %d, eta %d (%d–%d)", g.Id, g.State, g.QueuePosition, g.EtaSeconds, g.EtaP10Seconds, g.EtaP90Seconds)
		}
		widths = append(widths, g.EtaP90Seconds-g.EtaP10Seconds)
	}
	if widths[len(widths)-1] <= widths[0] {
		t.Fatalf("band widths %v: the last in line is no less sure than the first", widths)
	}
}

// The leader calibrates its ETAs by how they fared (issue 22): it follows
// some queued jobs from their ETA to their first start, and once a tier's
// ETAs of a magnitude have turned out three times too short, it tells the
// next job three times the model's ETA.
func TestETAIsCalibratedByHowETAsFared(t *testing.T) {
	n := startNode(t, 1)
	bob := jobClient(n, DemoBobKey)
	ctx := context.Background()
	submit := func(ms int) *sluicev1.Job { return submitRun(t, bob, ms) }
	// Short jobs queued behind a long one: the followed ones start, and teach.
	submit(1500)
	var last *sluicev1.Job
	for range 3 * scheduler.CalibrationEvery {
		last = submit(10)
	}
	waitFor(t, "the short jobs to finish", func() bool {
		res, err := bob.GetJob(ctx, connect.NewRequest(&sluicev1.GetJobRequest{Id: last.Id}))
		return err == nil && res.Msg.Job.State == sluicev1.JobState_JOB_STATE_SUCCEEDED
	})
	n.etaCal.mu.Lock()
	learned := n.etaCal.cal.Learned()
	n.etaCal.mu.Unlock()
	if learned == 0 {
		t.Fatal("no followed job taught the calibration")
	}
	// A queued job, and a history of ETAs like its own that were 3× short.
	submit(30000)
	queued := submit(10)
	id, _ := ParseJobID(queued.Id)
	v, ok := n.fsm.View(id)
	if !ok {
		t.Fatal("the queued job is gone")
	}
	model := n.desk.eta(v).model
	if model.P90 <= 0 {
		t.Fatalf("the queued job's model band %v says it starts at once", model)
	}
	n.etaCal.mu.Lock()
	now := time.Now().UnixNano()
	for i := range uint64(300) {
		fid := (1_000_000 + i) * scheduler.CalibrationEvery
		n.etaCal.cal.Told(fid, v.Job.Tier, model, 0, now)
		n.etaCal.cal.Started(fid, now+3*int64(model.P50))
	}
	n.etaCal.mu.Unlock()
	got := n.desk.eta(v)
	if r := float64(got.P50) / float64(model.P50); r < 2.9 || r > 3.1 {
		t.Fatalf("calibrated p50 %v is %.2f× the model's %v, want 3×", got.P50, r, model.P50)
	}
	// (GetJob tells n.eta's band, in whole seconds: the model's ETA here is
	// milliseconds, learned from the 10 ms jobs.)
}

// TestETAHonestyIsInTheMetrics: the leader counts how the ETAs it told
// fared (one admitted job in 16): each followed job's first start, by where
// it fell against its band, and its error, in /metrics.
func TestETAHonestyIsInTheMetrics(t *testing.T) {
	n := startNode(t, 1)
	bob := jobClient(n, DemoBobKey)
	ctx := context.Background()
	submitRun(t, bob, 1000) // the rest wait behind it
	var last *sluicev1.Job
	for range 2 * scheduler.CalibrationEvery {
		last = submitRun(t, bob, 10)
	}
	waitFor(t, "the short jobs to finish", func() bool {
		res, err := bob.GetJob(ctx, connect.NewRequest(&sluicev1.GetJobRequest{Id: last.Id}))
		return err == nil && res.Msg.Job.State == sluicev1.JobState_JOB_STATE_SUCCEEDED
	})
	res, err := http.Get(baseURL(n) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	starts, count := 0.0, -1.0
	for _, line := range strings.Split(string(body), "\n") {
		fields := strings.Fields(line)
		if len(fields) != 2 {
			continue
		}
		v, err := strconv.ParseFloat(fields[1], 64)
		switch {
		case err != nil:
		case strings.HasPrefix(line, "sluice_eta_starts_total{") && strings.Contains(line, `tier="pro"`):
			starts += v
		case strings.HasPrefix(line, `sluice_eta_error_ratio_count{scope="leader",tier="pro"}`):
			count = v
		}
	}
	// Ids 16 and 32 at least are among the 33 jobs.
	if starts < 2 || count != starts {
		t.Fatalf("%v followed starts and %v errors counted, want at least 2 and as many:\n%s", starts, count, body)
	}
}

// A queued job's place in line is the order its ETA counts, the order
// the fair queue's tiers dispatch its model's jobs in (admission.QueuedPlace):
// with nothing arriving, the queued jobs start in the order of the places
// they were told, and the admin queue shows them so. Found by hand on
// `sluice dev`; after this test's history queue order (the state
// machine's Position, what every answer told before) puts a free
// tenant's job third, and it starts fifth, after two pro jobs that queue
// order puts behind it.
func TestPlaceInLineIsTheOrderJobsStartIn(t *testing.T) {
	p := DemoPolicy()
	p.Rules = nil
	keys := map[string]string{"bob": DemoBobKey}
	for _, tn := range []*sluicev1.Tenant{{Name: "f1", Tier: "free"}, {Name: "f2", Tier: "free"}, {Name: "f3", Tier: "free"}, {Name: "idle", Tier: "free"}, {Name: "pro2", Tier: "pro"}} {
		keys[tn.Name] = "key-" + tn.Name
		tn.ApiKeySha256 = []string{policy.HashKey(keys[tn.Name])}
		p.Tenants = append(p.Tenants, tn)
	}
	n := startNodeWith(t, 2, p)
	type sent struct{ key, id string }
	submit := func(name string, ms int) sent {
		in, _ := structpb.NewStruct(map[string]any{"duration_ms": ms})
		res, err := jobClient(n, keys[name]).Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "sdxl", Input: in}}))
		if err != nil {
			t.Fatal(err)
		}
		return sent{keys[name], res.Msg.Job.Id}
	}
	rounds := func(ms int) (all []sent) {
		for range 6 {
			for _, name := range []string{"f1", "f2", "f3", "bob"} {
				all = append(all, submit(name, ms))
			}
		}
		return all
	}
	for _, s := range rounds(20) { // a history for the tiers' virtual times
		waitState(t, jobClient(n, s.key), s.id, sluicev1.JobState_JOB_STATE_SUCCEEDED)
	}
	const ms = 300
	jobs := append(rounds(ms), submit("idle", ms), submit("pro2", ms))
	// Every place told, at once: the admin queue's rows (as GetJob's).
	place := map[string]int64{}
	res, err := adminClient(n).ListQueue(context.Background(), connect.NewRequest(&sluicev1.ListQueueRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	for k, j := range res.Msg.Jobs { // one model: in the order of their places
		if j.QueuePosition != int64(k+1) {
			t.Fatalf("the admin queue's row %d is %s's job %s at place %d", k+1, j.Tenant, j.Id, j.QueuePosition)
		}
		place[j.Id] = j.QueuePosition
	}
	type start struct {
		id     string
		tenant string
		at     time.Time
	}
	var starts []start
	for _, s := range jobs {
		g := waitState(t, jobClient(n, s.key), s.id, sluicev1.JobState_JOB_STATE_SUCCEEDED)
		if _, ok := place[s.id]; ok {
			starts = append(starts, start{s.id, g.Tenant, g.StartedAt.AsTime()})
		}
	}
	// Assignments in one log entry share its time: those may go either way.
	slices.SortFunc(starts, func(a, b start) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return int(place[a.id] - place[b.id])
	})
	if len(starts) < len(jobs)-4 {
		t.Fatalf("%d of %d jobs were queued when the places were read", len(starts), len(jobs))
	}
	for k, s := range starts {
		if place[s.id] != int64(k+1) {
			for k, s := range starts {
				t.Logf("started %d: %s's job %s, told place %d", k+1, s.tenant, s.id, place[s.id])
			}
			t.Fatalf("%s's job %s started %d of %d queued, told place %d", s.tenant, s.id, k+1, len(starts), place[s.id])
		}
	}
}

// A watcher reuses the ETA of a queued job far from its start for up to a
// second, as it was, and reads it afresh once the job moves up in line,
// starts, is retried, comes within etaReuseFrom, or the second is up.
func TestWatchersReuseAFarETA(t *testing.T) {
	at := time.Unix(1000, 0)
	view := func(state sluicev1.JobState, attempt int32, position int) fsm.JobView {
		return fsm.JobView{Job: &raftv1.JobRecord{State: state, Attempt: attempt}, Position: position}
	}
	queued := view(sluicev1.JobState_JOB_STATE_QUEUED, 1, 7)
	far := watchETA{eta: jobETA{Band: scheduler.Band{P10: 20 * time.Second, P50: 30 * time.Second, P90: 40 * time.Second}, known: true, place: 7}, at: at, attempt: 1, position: 7, queued: true}
	e, ok := far.reuse(queued, at.Add(300*time.Millisecond))
	if !ok || e != far.eta {
		t.Fatalf("0.3 s later: %+v (reused %v), want %+v", e, ok, far.eta)
	}
	near := far
	near.eta.Band = scheduler.Band{P10: 5 * time.Second, P50: 9 * time.Second, P90: 12 * time.Second}
	unknown := far
	unknown.eta.known = false
	soon := at.Add(100 * time.Millisecond)
	for name, c := range map[string]struct {
		w   watchETA
		v   fsm.JobView
		now time.Time
	}{
		"a second later":      {far, queued, at.Add(time.Second)},
		"moved up":            {far, view(sluicev1.JobState_JOB_STATE_QUEUED, 1, 6), soon},
		"started":             {far, view(sluicev1.JobState_JOB_STATE_RUNNING, 2, 0), soon},
		"queued again":        {far, view(sluicev1.JobState_JOB_STATE_QUEUED, 2, 7), soon},
		"under 10 s":          {near, queued, soon},
		"unknown":             {unknown, queued, soon},
		"never read":          {watchETA{}, queued, at},
		"the clock went back": {far, queued, at.Add(-time.Millisecond)},
	} {
		if e, ok := c.w.reuse(c.v, c.now); ok {
			t.Errorf("%s: reused %+v", name, e)
		}
	}
}
