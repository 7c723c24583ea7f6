// Command goclient is a Sluice client in Go: it submits one job with an
// idempotency key, submits it again to show that the retry is deduplicated,
// watches the job until it ends, and prints the caller's usage of each rate
// limit. It uses only the generated packages sluicev1 and sluicev1connect.
//
//	go run ./examples/goclient --addr http://127.0.0.1:7700 --key dev-bob
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

func main() {
	addr := flag.String("addr", envOr("SLUICE_ADDR", "http://127.0.0.1:7700"), "base URL of any Sluice server (env SLUICE_ADDR)")
	key := flag.String("key", os.Getenv("SLUICE_API_KEY"), "the tenant's API key, sent as Authorization: Bearer (env SLUICE_API_KEY)")
	timeout := flag.Duration("timeout", 5*time.Minute, "give up if the job has not ended after this long")
	flag.Parse()
	if *key == "" {
		fmt.Fprintln(os.Stderr, "goclient: --key: missing; pass the tenant's API key (or set SLUICE_API_KEY)")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := run(ctx, *addr, *key, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "goclient:", err)
		os.Exit(1)
	}
}

// run is the whole client; main only reads the flags.
func run(ctx context.Context, addr, key string, out io.Writer) error {
	jobs := sluicev1connect.NewJobServiceClient(http.DefaultClient, addr,
		connect.WithInterceptors(bearer(key)))

	input, err := structpb.NewStruct(map[string]any{"prompt": "write a haiku about queues"})
	if err != nil {
		return err
	}
	// The idempotency key names this request, not this attempt: a Submit
	// retried after a timeout or a lost connection returns the first job
	// instead of queueing a second one. Keep it with the work it stands for.
	spec := &sluicev1.JobSpec{Model: "llama-8b", Input: input, IdempotencyKey: newKey()}

	sub, err := jobs.Submit(ctx, connect.NewRequest(&sluicev1.SubmitRequest{Spec: spec}))
	if err != nil {
		return fmt.Errorf("submit: %w", err)
	}
	job := sub.Msg.Job
	fmt.Fprintf(out, "submitted job %s: %s, position %d, eta %s\n", job.Id, state(job.State), job.QueuePosition, eta(job))

	again, err := jobs.Submit(ctx, connect.NewRequest(&sluicev1.SubmitRequest{Spec: spec}))
	if err != nil {
		return fmt.Errorf("submit again: %w", err)
	}
	fmt.Fprintf(out, "submitted again with the same key: job %s, deduplicated %t\n", again.Msg.Job.Id, again.Msg.Deduplicated)

	last, err := watch(ctx, jobs, job.Id, out)
	if err != nil {
		return err
	}
	if last.State == sluicev1.JobState_JOB_STATE_SUCCEEDED {
		// encoding/json over the map, for one spacing every time
		// (protojson varies its spaces from build to build on purpose).
		b, err := json.Marshal(last.Output.AsMap())
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "output: %s\n", b)
	}

	usage, err := jobs.GetUsage(ctx, connect.NewRequest(&sluicev1.GetUsageRequest{}))
	if err != nil {
		return fmt.Errorf("usage: %w", err)
	}
	fmt.Fprintf(out, "usage of tenant %s (tier %s):\n", usage.Msg.Tenant, usage.Msg.Tier)
	for _, r := range usage.Msg.Rules {
		fmt.Fprintf(out, "  %-14s %d/%d %s  (%s)\n", r.Rule, r.Used, r.Limit, r.Unit, r.Description)
	}
	if last.State != sluicev1.JobState_JOB_STATE_SUCCEEDED {
		return fmt.Errorf("job %s ended %s: %s: %s", last.Id, state(last.State), last.GetError().GetCode(), last.GetError().GetMessage())
	}
	return nil
}

// eta is the job's ETA with its p10–p90 band where it has one: "3s (1–6s)",
// seconds until a queued job starts or a running one ends; or why a queued
// job cannot start now, when the server says ("unknown (waiting: no
// executor is connected)").
func eta(j *sluicev1.Job) string {
	switch {
	case j.WaitingReason != "":
		return "unknown (waiting: " + j.WaitingReason + ")"
	case j.EtaUnknown:
		return "unknown"
	}
	if j.EtaP90Seconds > j.EtaP10Seconds {
		return fmt.Sprintf("%ds (%d–%ds)", j.EtaSeconds, j.EtaP10Seconds, j.EtaP90Seconds)
	}
	return fmt.Sprintf("%ds", j.EtaSeconds)
}

// watch prints each change of the job until it ends and returns its last
// state. A stream can end before the job does (the node it reached shut
// down, or the leader changed: unavailable); then it watches again, until
// ctx is done.
func watch(ctx context.Context, jobs sluicev1connect.JobServiceClient, id string, out io.Writer) (*sluicev1.Job, error) {
	for {
		// Consistent reads through the leader: the stream shows the place in
		// line and progress as the leader has them, not a lagging replica's.
		stream, err := jobs.WatchJob(ctx, connect.NewRequest(&sluicev1.WatchJobRequest{Id: id, Consistent: true}))
		if err != nil {
			return nil, fmt.Errorf("watch job %s: %w", id, err)
		}
		var last *sluicev1.Job
		for stream.Receive() {
			last = stream.Msg().Job
			switch last.State {
			case sluicev1.JobState_JOB_STATE_QUEUED:
				fmt.Fprintf(out, "  job %s QUEUED, position %d, eta %s\n", last.Id, last.QueuePosition, eta(last))
			case sluicev1.JobState_JOB_STATE_RUNNING:
				fmt.Fprintf(out, "  job %s RUNNING, attempt %d on %s, %.0f%% done, eta %s\n",
					last.Id, last.Attempt, last.Executor, 100*last.Progress, eta(last))
			default:
				fmt.Fprintf(out, "  job %s %s, attempt %d on %s\n", last.Id, state(last.State), last.Attempt, last.Executor)
			}
		}
		err = errors.Join(stream.Err(), stream.Close())
		if last != nil && ended(last.State) {
			return last, nil
		}
		if err != nil && connect.CodeOf(err) != connect.CodeUnavailable {
			return nil, fmt.Errorf("watch job %s: %w", id, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("watch job %s: %w", id, context.Cause(ctx))
		case <-time.After(time.Second):
		}
	}
}

// ended reports whether a job in state s will not change again.
func ended(s sluicev1.JobState) bool {
	return s != sluicev1.JobState_JOB_STATE_QUEUED && s != sluicev1.JobState_JOB_STATE_RUNNING &&
		s != sluicev1.JobState_JOB_STATE_UNSPECIFIED
}

func state(s sluicev1.JobState) string { return strings.TrimPrefix(s.String(), "JOB_STATE_") }

// newKey is a random idempotency key.
func newKey() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// bearer sets Authorization: Bearer key on every call. A Connect interceptor
// covers unary calls and streams alike (connect.UnaryInterceptorFunc would
// miss WatchJob).
type bearer string

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+string(b))
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+string(b))
		return conn
	}
}

func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}
