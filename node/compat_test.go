package node

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sluicehq/sluice/fsm"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

// compatDir is a data dir written by an older version (TestWriteCompatDataDir
// on that commit; node/testdata/compat-c33c591/README.md says how), with the
// jobs as that version showed them (jobs.json).
const compatDir = "testdata/compat-c33c591"

// compatPolicy delays alice's second job (a token bucket of one an hour) and
// degrades bob's sdxl jobs past one in flight to llama-8b.
func compatPolicy() *sluicev1.Policy {
	p := DemoPolicy()
	p.Rules = []*sluicev1.Rule{
		{Name: "alice-hourly", Match: &sluicev1.RuleMatch{Tenant: "alice"},
			Action: sluicev1.OverLimitAction_OVER_LIMIT_ACTION_DELAY, MaxWait: durationpb.New(3 * time.Hour),
			Limit: &sluicev1.Rule_TokenBucket{TokenBucket: &sluicev1.TokenBucketLimit{Count: 1, Burst: 1, Per: durationpb.New(time.Hour)}}},
		{Name: "bob-sdxl", Match: &sluicev1.RuleMatch{Tenant: "bob", Model: "sdxl"},
			Action: sluicev1.OverLimitAction_OVER_LIMIT_ACTION_DEGRADE, FallbackModel: "llama-8b",
			Limit: &sluicev1.Rule_Concurrency{Concurrency: &sluicev1.ConcurrencyLimit{Limit: 1}}},
	}
	return p
}

// compatView is a job as the API shows it, without what depends on the
// moment it is read (the ETA) or on the executors connected now.
func compatView(t *testing.T, f interface {
	View(uint64) (fsm.JobView, bool)
}, id uint64) string {
	t.Helper()
	v, ok := f.View(id)
	if !ok {
		t.Fatalf("job %d is not in the state", id)
	}
	// The replicated state only: an ETA of 0, known (the leader's soft state,
	// and eta_unknown, a field newer than some data dirs, are not the test's).
	b, err := protojson.MarshalOptions{Multiline: true}.Marshal(publicJob(v, jobETA{known: true}))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil { // protojson's spacing varies
		t.Fatal(err)
	}
	return out.String()
}

// TestWriteCompatDataDir writes a data dir for TestDataDirOfAnOlderVersion
// into $SLUICE_WRITE_COMPAT: jobs that ran and settled, jobs still queued
// (one delayed, one degraded), some in the snapshot and some only in the log
// after it, and jobs.json with each job as the API shows it. Run on the
// version whose data the next must read (see compatDir's README.md).
func TestWriteCompatDataDir(t *testing.T) {
	dir := os.Getenv("SLUICE_WRITE_COMPAT")
	if dir == "" {
		t.Skip("SLUICE_WRITE_COMPAT is not set")
	}
	n, err := Start(Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", Bootstrap: true, Policy: compatPolicy(),
		Logger: quietLogger(), RaftLog: io.Discard, RaftWALSegmentSize: 64 << 10,
		Raft: RaftTiming{SnapshotThreshold: 1 << 30, SnapshotInterval: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	waitFor(t, "leadership", n.Leading)
	alice, bob := jobClient(n, DemoAliceKey), jobClient(n, DemoBobKey)
	var ids []string
	add := func(c sluicev1connect.JobServiceClient, spec *sluicev1.JobSpec) {
		ids = append(ids, submit(t, c, spec).Id)
	}
	later := timestamppb.New(time.Now().Add(700 * time.Hour))
	// Jobs that run to the end (settled charges), then jobs that wait.
	startExecutors(t, 2, []string{baseURL(n)}, "old")
	waitExecutors(t, n, 2)
	add(alice, &sluicev1.JobSpec{Model: "llama-8b", Input: input(t, map[string]any{"duration_ms": 10})})
	for i := range 3 {
		add(bob, &sluicev1.JobSpec{Model: "llama-8b", Input: input(t, map[string]any{"duration_ms": 10 * i})})
	}
	waitFor(t, "the first jobs to finish", func() bool { return n.fsm.QueueLen() == 0 && len(n.fsm.Running()) == 0 })
	add(bob, &sluicev1.JobSpec{Model: "sdxl", NotBefore: later})                       // holds bob-sdxl's one slot
	add(bob, &sluicev1.JobSpec{Model: "sdxl", NotBefore: later, IdempotencyKey: "k1"}) // degraded to llama-8b
	add(alice, &sluicev1.JobSpec{Model: "sdxl", NotBefore: later})                     // delayed by alice-hourly
	if err := n.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	// After the snapshot, only in the log.
	add(bob, &sluicev1.JobSpec{Model: "sdxl", NotBefore: later, Priority: 3})
	add(alice, &sluicev1.JobSpec{Model: "llama-8b", NotBefore: later})
	views := map[string]string{}
	for _, id := range ids {
		jid, _ := ParseJobID(id)
		views[id] = compatView(t, n.fsm, jid)
	}
	b, _ := json.MarshalIndent(views, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "jobs.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestDataDirOfAnOlderVersion: the state an older version wrote (its last
// snapshot, then the log entries after it) restores and replays into a
// state machine of this version that shows every job exactly as the older
// one did (state, place in line, admission and costs, the whole history);
// and a node of this version started on that data dir serves on.
func TestDataDirOfAnOlderVersion(t *testing.T) {
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(compatDir)); err != nil {
		t.Fatal(err)
	}
	// The port that version's raft took is another process's now and then
	// (the test ran beside others: "in use by another process"): the node
	// below takes any, as one moved to another machine would.
	if err := os.Remove(filepath.Join(dir, raftAddrFile)); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "jobs.json"))
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]string
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	if len(want) < 9 {
		t.Fatalf("jobs.json holds %d jobs", len(want))
	}

	// The snapshot and the log as raft hands them to the state machine, with
	// no entry of today's clock after them.
	f := fsm.New()
	snaps, err := raft.NewFileSnapshotStore(dir, 1, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	metas, err := snaps.List()
	if err != nil || len(metas) != 1 {
		t.Fatalf("snapshots %v, %v; want one", metas, err)
	}
	_, rc, err := snaps.Open(metas[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := (raftFSM{f: newState(f)}).Restore(rc); err != nil {
		t.Fatalf("restore the older version's snapshot: %v", err)
	}
	st, err := openStores(osDisk{}, dir, "", 64<<10, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	last, err := st.log.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	replayed := 0
	for i := metas[0].Index + 1; i <= last; i++ {
		var l raft.Log
		if err := st.log.GetLog(i, &l); err != nil {
			t.Fatalf("log entry %d: %v", i, err)
		}
		if (raftFSM{f: newState(f)}).Apply(&l) != nil {
			replayed++
		}
	}
	st.Close()
	if replayed == 0 {
		t.Fatalf("no command in the log after the snapshot (entries %d..%d)", metas[0].Index+1, last)
	}
	for id, w := range want {
		jid, _ := ParseJobID(id)
		if got := compatView(t, f.Reads(), jid); got != w {
			t.Errorf("job %s reads differently from the version that wrote it:\n%s", id, firstLineDiff(w, got))
		}
	}

	// A node on that data dir leads, holds the jobs, and runs a new one.
	n, err := Start(Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", Logger: quietLogger(), RaftLog: io.Discard,
		RaftWALSegmentSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	waitFor(t, "leadership", n.Leading)
	for id := range want {
		if jid, _ := ParseJobID(id); !func() bool { _, ok := n.fsm.View(jid); return ok }() {
			t.Fatalf("the node lost job %s", id)
		}
	}
	startExecutors(t, 1, []string{baseURL(n)}, "new")
	waitExecutors(t, n, 1)
	job := submit(t, jobClient(n, DemoBobKey), &sluicev1.JobSpec{Model: "llama-8b", Input: input(t, map[string]any{"duration_ms": 10})})
	jid, _ := ParseJobID(job.Id)
	waitFor(t, "the new job to finish", func() bool {
		v, ok := n.fsm.View(jid)
		return ok && v.Job.State == sluicev1.JobState_JOB_STATE_SUCCEEDED
	})
	v, _ := n.fsm.View(jid)
	if ts := publicJob(v, jobETA{}).Transitions; len(ts) != 3 || ts[0].Reason != "submitted" {
		t.Fatalf("new job's history: %v", ts)
	}
}

// firstLineDiff shows the first line where two texts differ.
func firstLineDiff(a, b string) string {
	la, lb := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(la), len(lb)) {
		if la[i] != lb[i] {
			return "line " + la[i] + "\n   now " + lb[i]
		}
	}
	return "(one is longer)\n" + a + "\n---\n" + b
}
