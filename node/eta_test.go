package node

import (
	"context"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
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
