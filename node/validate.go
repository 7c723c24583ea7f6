package node

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
)

// Limits on what a client may submit. Every one is named in the error that
// enforces it.
const (
	MaxInputBytes          = 64 << 10
	MaxIdempotencyKeyBytes = 256
	MaxLabels              = 64
	MaxLabelKeyBytes       = 63
	MaxLabelValueBytes     = 256
	MaxPriority            = 9
	MaxAttemptsLimit       = 20
	MaxGPUs                = 64
	MaxGPUMemoryMB         = 1 << 20
	MaxQueueTimeout        = 7 * 24 * time.Hour
	MaxRunTimeout          = 24 * time.Hour
	MaxNotBeforeAhead      = 30 * 24 * time.Hour
	// MaxRequestBytes bounds any request body; the input limit is checked
	// separately so that it gets its own clear error.
	MaxRequestBytes = 1 << 20
)

// fieldError is an invalid_argument naming one field.
func fieldError(field, format string, args ...any) *connect.Error {
	msg := fmt.Sprintf(format, args...)
	err := connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s: %s", field, msg))
	if d, derr := connect.NewErrorDetail(&errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: msg}},
	}); derr == nil {
		err.AddDetail(d)
	}
	return err
}

// ValidateSpec checks a job spec at the edge, before it reaches the log.
// models is the set of known model names; now bounds not_before.
func ValidateSpec(spec *sluicev1.JobSpec, models map[string]bool, now time.Time) *connect.Error {
	if spec == nil {
		return fieldError("spec", "required")
	}
	if spec.Model == "" {
		return fieldError("spec.model", "required")
	}
	if !models[spec.Model] {
		known := make([]string, 0, len(models))
		for m := range models {
			known = append(known, m)
		}
		sort.Strings(known)
		return fieldError("spec.model", "%q is not a known model (known: %s)", truncate(spec.Model, 64), strings.Join(known, ", "))
	}
	if n := proto.Size(spec.Input); n > MaxInputBytes {
		return fieldError("spec.input", "%d bytes exceeds the %d-byte limit", n, MaxInputBytes)
	}
	if spec.Priority < 0 || spec.Priority > MaxPriority {
		return fieldError("spec.priority", "%d is outside the range 0–%d", spec.Priority, MaxPriority)
	}
	if n := len(spec.IdempotencyKey); n > MaxIdempotencyKeyBytes {
		return fieldError("spec.idempotency_key", "%d bytes exceeds the %d-byte limit", n, MaxIdempotencyKeyBytes)
	}
	if err := noControl("spec.idempotency_key", spec.IdempotencyKey); err != nil {
		return err
	}
	if nb := spec.NotBefore; nb != nil {
		if err := nb.CheckValid(); err != nil {
			return fieldError("spec.not_before", "not a valid timestamp: %v", err)
		}
		if ahead := nb.AsTime().Sub(now); ahead > MaxNotBeforeAhead {
			return fieldError("spec.not_before", "%v ahead exceeds the limit of %v", ahead.Round(time.Second), MaxNotBeforeAhead)
		}
	}
	for _, d := range []struct {
		field string
		v     interface {
			CheckValid() error
			AsDuration() time.Duration
		}
		set bool
		max time.Duration
	}{
		{"spec.queue_timeout", spec.QueueTimeout, spec.QueueTimeout != nil, MaxQueueTimeout},
		{"spec.run_timeout", spec.RunTimeout, spec.RunTimeout != nil, MaxRunTimeout},
	} {
		if !d.set {
			continue
		}
		if err := d.v.CheckValid(); err != nil {
			return fieldError(d.field, "not a valid duration: %v", err)
		}
		if v := d.v.AsDuration(); v < 0 || v > d.max {
			return fieldError(d.field, "%v is outside the range 0–%v", v, d.max)
		}
	}
	if spec.MaxAttempts < 0 || spec.MaxAttempts > MaxAttemptsLimit {
		return fieldError("spec.max_attempts", "%d is outside the range 0–%d", spec.MaxAttempts, MaxAttemptsLimit)
	}
	if spec.Gpus < 0 || spec.Gpus > MaxGPUs {
		return fieldError("spec.gpus", "%d is outside the range 0–%d", spec.Gpus, MaxGPUs)
	}
	if spec.GpuMemoryMb < 0 || spec.GpuMemoryMb > MaxGPUMemoryMB {
		return fieldError("spec.gpu_memory_mb", "%d is outside the range 0–%d", spec.GpuMemoryMb, MaxGPUMemoryMB)
	}
	if n := len(spec.Labels); n > MaxLabels {
		return fieldError("spec.labels", "%d labels exceed the limit of %d", n, MaxLabels)
	}
	for k, v := range spec.Labels {
		if k == "" || len(k) > MaxLabelKeyBytes {
			return fieldError("spec.labels", "key %q must be 1–%d bytes", truncate(k, 80), MaxLabelKeyBytes)
		}
		if err := noControl("spec.labels", k); err != nil {
			return err
		}
		if len(v) > MaxLabelValueBytes {
			return fieldError("spec.labels["+truncate(k, 80)+"]", "%d bytes exceeds the %d-byte limit", len(v), MaxLabelValueBytes)
		}
		if err := noControl("spec.labels["+truncate(k, 80)+"]", v); err != nil {
			return err
		}
	}
	return nil
}

// noControl refuses a string with a control character (NUL, newline, DEL, …):
// keys and labels end up in logs, metrics and terminals, where such bytes
// truncate or forge what an operator reads.
func noControl(field, s string) *connect.Error {
	for _, r := range s {
		if unicode.IsControl(r) {
			return fieldError(field, "contains a control character (%#02x); use printable characters", r)
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// errInvalidID is returned for a malformed job id.
var errInvalidID = errors.New("must be a job id such as \"42\"")
