package main

import (
	"bytes"
	"strings"
	"testing"

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
