package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// TestBlockedJobsSayWhy: a queued job no executor can run shows its reason
// in the one-line summary (get, watch, submit) and as a footnote under the
// list and queue tables.
func TestBlockedJobsSayWhy(t *testing.T) {
	j := &sluicev1.Job{Id: "7", State: sluicev1.JobState_JOB_STATE_QUEUED, QueuePosition: 1,
		Spec: &sluicev1.JobSpec{Model: "sdxl", Gpus: 2}, WaitingReason: "needs 2 GPUs; the largest executor has 1"}
	if s := summary(j); !strings.Contains(s, "eta blocked*  waiting: needs 2 GPUs; the largest executor has 1") {
		t.Fatalf("summary %q", s)
	}
	var b bytes.Buffer
	table(&b, &sluicev1.ListJobsResponse{Jobs: []*sluicev1.Job{j}})
	queueTable(&b, &sluicev1.ListQueueResponse{Jobs: []*sluicev1.Job{j}, Total: 1})
	if n := strings.Count(b.String(), "* job 7 is waiting: needs 2 GPUs; the largest executor has 1"); n != 2 {
		t.Fatalf("%d footnotes in\n%s", n, b.String())
	}
}

// TestBlockedFootnotesGroupByReason: jobs held for the same reason (every
// queued job while no executor is connected) share one footnote.
func TestBlockedFootnotesGroupByReason(t *testing.T) {
	q := func(id, why string) *sluicev1.Job {
		return &sluicev1.Job{Id: id, State: sluicev1.JobState_JOB_STATE_QUEUED, QueuePosition: 1, WaitingReason: why}
	}
	var b bytes.Buffer
	blocked(&b, []*sluicev1.Job{q("3", "no executor is connected"), q("4", "needs 2 GPUs; the largest executor has 1"), q("5", "no executor is connected"), q("6", "")})
	want := "* jobs 3, 5 are waiting: no executor is connected\n* job 4 is waiting: needs 2 GPUs; the largest executor has 1\n"
	if b.String() != want {
		t.Fatalf("footnotes:\n%s\nwant:\n%s", b.String(), want)
	}
}

// TestUnknownETAIsAQuestionMark: a follower's plain read cannot tell a
// queued job's ETA; the CLI shows "?" and one footnote saying why, not 0s.
func TestUnknownETAIsAQuestionMark(t *testing.T) {
	j := &sluicev1.Job{Id: "9", State: sluicev1.JobState_JOB_STATE_QUEUED, QueuePosition: 3, EtaUnknown: true}
	if s := summary(j); !strings.Contains(s, "position 3  eta ?") {
		t.Fatalf("summary %q", s)
	}
	k := &sluicev1.Job{Id: "10", State: sluicev1.JobState_JOB_STATE_QUEUED, QueuePosition: 4, EtaUnknown: true}
	var b bytes.Buffer
	table(&b, &sluicev1.ListJobsResponse{Jobs: []*sluicev1.Job{j, k}})
	if n := strings.Count(b.String(), "? this server cannot tell"); n != 1 || !strings.Contains(b.String(), "sluice list --consistent") {
		t.Fatalf("%d footnotes in\n%s", n, b.String())
	}
}

// TestSummaryShowsThePredictedRun: a queued or running job's summary says
// how long its run is predicted to take, and on what basis.
func TestSummaryShowsThePredictedRun(t *testing.T) {
	j := &sluicev1.Job{Id: "8", State: sluicev1.JobState_JOB_STATE_RUNNING, Attempt: 1, Executor: "a100-1", EtaSeconds: 2, EtaP10Seconds: 1, EtaP90Seconds: 3,
		Prediction: &sluicev1.RunPrediction{Run: durationpb.New(3 * time.Second), P10: durationpb.New(2100 * time.Millisecond), P90: durationpb.New(3900 * time.Millisecond), Sized: true}}
	if s := summary(j); !strings.Contains(s, "eta 2s (1–3s)  runs 3s (2.1s–3.9s, by its size)") {
		t.Fatalf("summary %q", s)
	}
	// Runs that have not varied: "2s (2s–2s, …)" says nothing more than 2s.
	j.Prediction = &sluicev1.RunPrediction{Run: durationpb.New(2 * time.Second), P10: durationpb.New(1990 * time.Millisecond), P90: durationpb.New(2010 * time.Millisecond)}
	if s := summary(j); !strings.Contains(s, "runs 2s (the model's average)") {
		t.Fatalf("summary %q", s)
	}
}

// TestOutputIsCompact: a job's input and output print on one line with no
// spaces between fields, whatever spacing protojson picks for this build.
func TestOutputIsCompact(t *testing.T) {
	s, err := structpb.NewStruct(map[string]any{"model": "sdxl", "attempt": 1, "input": map[string]any{"prompt": "a cat"}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := compactJSON(s), `{"attempt":1,"input":{"prompt":"a cat"},"model":"sdxl"}`; got != want {
		t.Errorf("compactJSON = %s, want %s", got, want)
	}
	if got := compactJSON(nil); got != "{}" {
		t.Errorf("compactJSON(nil) = %s, want {}", got)
	}
}
