package main

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

const sizedPolicy = `
tiers: [{name: pro, weight: 1}]
tenants: [{name: bob, tier: pro, api_key_sha256: ["%s"]}]
models: [{name: llama-8b, default_duration: 100ms, size: {terms: [{fields: [steps]}], min_observations: 4}}]
admin_token_sha256: "%s"
executor_token_sha256: "%s"
`

// TestSizedPredictionsOfARealServer (issue 28), a server process and a
// synthetic executor process: after four warm-up jobs a 60-step job is predicted at
// least 3× a 10-step one, and a job behind ten 60-step jobs is told a wait
// within 20 % of what it then waits.
func TestSizedPredictionsOfARealServer(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a server process")
	}
	bin := buildSluice(t)
	c := startProcClusterWith(t, bin, 1, sizedPolicy, func(int) []string { return []string{"--executors", "0"} })
	e := &server{id: "e1"}
	e.args = []string{"executor", "--name", e.id, "--servers", c.urls[0], "--token", "exec", "--gossip", "127.0.0.1:0"}
	e.startRaw(t, bin)
	jobs := c.jobs(c.urls[0])
	ctx := context.Background()
	const msPerStep = 25
	submit := func(steps int) *sluicev1.Job {
		in, _ := structpb.NewStruct(map[string]any{"steps": steps, "duration_ms": msPerStep * steps})
		res, err := jobs.Submit(ctx, connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "llama-8b", Input: in}}))
		if err != nil {
			t.Fatal(err)
		}
		return res.Msg.Job
	}
	get := func(id string) *sluicev1.Job {
		res, err := jobs.GetJob(ctx, connect.NewRequest(&sluicev1.GetJobRequest{Id: id}))
		if err != nil {
			t.Fatal(err)
		}
		return res.Msg.Job
	}
	until := func(id string, st sluicev1.JobState) *sluicev1.Job {
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if j := get(id); j.State == st {
				return j
			}
		}
		t.Fatalf("job %s never reached %v", id, st)
		return nil
	}
	for _, steps := range []int{4, 12, 8, 20} {
		until(submit(steps).Id, sluicev1.JobState_JOB_STATE_SUCCEEDED)
	}
	long, short := submit(60), submit(10)
	pl, ps := get(long.Id).GetPrediction(), get(short.Id).GetPrediction()
	if !pl.GetSized() || !ps.GetSized() || pl.Run.AsDuration() < 3*ps.Run.AsDuration() {
		t.Fatalf("predicted 60 steps %v, 10 steps %v: want both by size, at least 3×", pl, ps)
	}
	until(short.Id, sluicev1.JobState_JOB_STATE_SUCCEEDED)
	for range 10 {
		submit(60)
	}
	j := submit(5)
	told := time.Duration(j.EtaSeconds) * time.Second
	started := until(j.Id, sluicev1.JobState_JOB_STATE_RUNNING)
	waited := started.StartedAt.AsTime().Sub(started.CreatedAt.AsTime())
	t.Logf("predicted 60 steps %v, 10 steps %v; behind ten 60-step jobs told %v, waited %v", pl.Run.AsDuration(), ps.Run.AsDuration(), told, waited)
	if d := told - waited; d < -waited/5 || d > waited/5 {
		t.Fatalf("told %v, waited %v: more than 20 %% off", told, waited)
	}
}
