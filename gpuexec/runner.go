package gpuexec

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
)

// Assignment is one attempt of one job, as handed to a runner.
type Assignment struct {
	JobID   string
	Attempt int32
	Model   string
	Input   *structpb.Struct
	// GPUs are the identifiers of the GPUs pinned for this attempt.
	GPUs []string
	// RunTimeout bounds the attempt; the runner stops at it.
	RunTimeout time.Duration
}

// Result is how an attempt ended. Exactly one of Output or Err is set.
type Result struct {
	Output *structpb.Struct
	Err    *RunError
}

// RunError is a failed attempt.
type RunError struct {
	Code    string
	Message string
	// Retryable failures are retried (up to the job's max_attempts);
	// others fail the job for good.
	Retryable bool
}

func (e *RunError) Error() string { return e.Code + ": " + e.Message }

// Progress reports how far an attempt has come: fraction in [0, 1] and a
// short text.
type Progress func(fraction float64, text string)

// Runner runs job attempts. Run returns when the attempt ends or ctx is
// canceled (then promptly, with a "canceled" error).
type Runner interface {
	Run(ctx context.Context, a Assignment, progress Progress) Result
}
