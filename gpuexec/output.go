package gpuexec

import (
	"bytes"
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
)

// DefaultMaxOutputBytes bounds a runner's output (exec stdout, http response
// body) when the runner sets no limit of its own. The output is committed to
// the raft log as the job's result, so it must stay small.
const DefaultMaxOutputBytes = 1 << 20

// inputJSON is what a runner hands the model: the job's input as one JSON
// object ("{}" when the job has none). encoding/json rather than protojson,
// whose output is deliberately unstable, so that scripts see the same bytes
// every attempt.
func inputJSON(a Assignment) ([]byte, *RunError) {
	if a.Input == nil {
		return []byte("{}"), nil
	}
	b, err := json.Marshal(a.Input.AsMap())
	if err != nil {
		return nil, &RunError{Code: "bad_input", Message: "input: cannot be written as JSON: " + err.Error()}
	}
	return b, nil
}

// decodeOutput validates a runner's output: at most limit bytes, and one
// JSON object. total is how many bytes the runner produced, which may be
// more than len(b), or -1 when unknown (then len(b) is a lower bound). what
// names the source in errors ("runner stdout", "http runner response"). An
// invalid output fails the attempt for good: running the same program on the
// same input again would give the same output.
func decodeOutput(what string, b []byte, total, limit int64) (*structpb.Struct, *RunError) {
	size := fmt.Sprintf("%d bytes", total)
	if total < 0 {
		total = int64(len(b))
		size = fmt.Sprintf("at least %d bytes", total)
	}
	if total > limit {
		return nil, &RunError{Code: "bad_output", Message: fmt.Sprintf("%s: %s exceeds the %d-byte limit", what, size, limit)}
	}
	trimmed := bytes.TrimSpace(b)
	if len(trimmed) == 0 {
		return nil, &RunError{Code: "bad_output", Message: what + ": empty; want one JSON object"}
	}
	if !json.Valid(trimmed) {
		return nil, &RunError{Code: "bad_output", Message: fmt.Sprintf("%s: not JSON (starts %q); want one JSON object", what, clip(trimmed, 40))}
	}
	if trimmed[0] != '{' {
		return nil, &RunError{Code: "bad_output", Message: fmt.Sprintf("%s: a JSON %s, want an object", what, jsonKind(trimmed[0]))}
	}
	out := &structpb.Struct{}
	if err := protojson.Unmarshal(trimmed, out); err != nil {
		return nil, &RunError{Code: "bad_output", Message: what + ": " + err.Error()}
	}
	return out, nil
}

func jsonKind(first byte) string {
	switch first {
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	default:
		return "number"
	}
}

// clip returns at most n bytes of b, for quoting in an error.
func clip(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// cappedBuffer keeps the first limit+1 bytes written to it and counts the
// rest, so that an oversize output can be reported with its real size
// without being held in memory. It never fails a write: a runner blocked
// on a full pipe could not be told why.
type cappedBuffer struct {
	limit int64
	buf   bytes.Buffer
	total int64
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	c.total += int64(len(p))
	if room := c.limit + 1 - int64(c.buf.Len()); room > 0 {
		c.buf.Write(clip(p, int(room)))
	}
	return len(p), nil
}
