package gpuexec

import (
	"context"
	"fmt"
	"hash/fnv"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
)

// Synthetic pretends to run models: it waits for the input's duration_ms
// (or the model's default), then echoes the input with the executor's name.
// It needs no GPU, which makes it the executor of `sluice dev` and tests.
type Synthetic struct {
	// Name is echoed in every output.
	Name string
	// Durations are per-model defaults when the input has no duration_ms.
	Durations map[string]time.Duration
	// FailureRate in [0, 1]: that share of attempts fail (retryably),
	// chosen deterministically from the job id and attempt.
	FailureRate float64
}

// MaxSyntheticDuration bounds input.duration_ms.
const MaxSyntheticDuration = time.Hour

// Run waits, reporting progress every tenth of the way, then echoes.
func (s *Synthetic) Run(ctx context.Context, a Assignment, progress Progress) Result {
	d, ok := s.Durations[a.Model]
	if !ok {
		d = a.Expected
	}
	if v, ok := a.Input.GetFields()["duration_ms"]; ok {
		ms, isNum := v.GetKind().(*structpb.Value_NumberValue)
		if !isNum || ms.NumberValue < 0 || time.Duration(ms.NumberValue)*time.Millisecond > MaxSyntheticDuration {
			return Result{Err: &RunError{Code: "bad_input", Message: fmt.Sprintf("input.duration_ms: must be a number of milliseconds in 0–%d", MaxSyntheticDuration.Milliseconds())}}
		}
		d = time.Duration(ms.NumberValue * float64(time.Millisecond))
	}
	if s.FailureRate > 0 && s.fails(a) {
		d /= 2
	}
	const steps = 10
	t := time.NewTimer(d / steps)
	defer t.Stop()
	for i := 1; i <= steps; i++ {
		select {
		case <-ctx.Done():
			return Result{Err: &RunError{Code: "canceled", Message: "attempt stopped: " + context.Cause(ctx).Error(), Retryable: true}}
		case <-t.C:
		}
		if progress != nil {
			progress(float64(i)/steps, fmt.Sprintf("step %d/%d", i, steps))
		}
		t.Reset(d / steps)
	}
	if s.FailureRate > 0 && s.fails(a) {
		return Result{Err: &RunError{Code: "synthetic_failure", Message: fmt.Sprintf("%s failed attempt %d on purpose (failure rate %.2f)", s.Name, a.Attempt, s.FailureRate), Retryable: true}}
	}
	out := map[string]any{
		"executor": s.Name,
		"model":    a.Model,
		"attempt":  float64(a.Attempt),
	}
	fields := map[string]*structpb.Value{}
	for k, v := range out {
		fields[k], _ = structpb.NewValue(v)
	}
	if a.Input != nil {
		fields["input"] = structpb.NewStructValue(a.Input)
	}
	return Result{Output: &structpb.Struct{Fields: fields}}
}

func (s *Synthetic) fails(a Assignment) bool {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%d", a.JobID, a.Attempt)
	return float64(h.Sum64()%10000)/10000 < s.FailureRate
}
