package gpuexec

import (
	"context"
	"errors"
	"fmt"
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
	// Expected is how long the model usually takes (the policy's
	// default_duration); 0 when unknown.
	Expected time.Duration
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

// errRunTimeout is the cause a runner gives its own context when the
// assignment's RunTimeout passes, so that a stop can be told apart from a
// cancel by the caller.
var errRunTimeout = errors.New("run timeout")

// withRunTimeout bounds ctx by a.RunTimeout (when set).
func withRunTimeout(ctx context.Context, a Assignment) (context.Context, context.CancelFunc) {
	if a.RunTimeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeoutCause(ctx, a.RunTimeout, errRunTimeout)
}

// stopped is the error of an attempt cut short by ctx (from withRunTimeout):
// "run_timeout" when the run timeout passed, "canceled" otherwise. Both are
// retryable: the work itself did not fail, and the leader decides whether to
// try again.
func stopped(ctx context.Context, a Assignment) *RunError {
	cause := context.Cause(ctx)
	if errors.Is(cause, errRunTimeout) {
		return &RunError{Code: "run_timeout", Message: fmt.Sprintf("attempt %d ran longer than the run timeout of %v", a.Attempt, a.RunTimeout), Retryable: true}
	}
	return &RunError{Code: "canceled", Message: "attempt stopped: " + cause.Error(), Retryable: true}
}
