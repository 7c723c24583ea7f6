package gpuexec

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// HTTPRunner runs each attempt as one POST of the job's input (a JSON object)
// to a model server; a 2xx response's body, a JSON object, is the output.
// Busy answers (429, 5xx) and connection failures are retried within the
// attempt, honouring Retry-After, until MaxRetries or the run timeout; then
// the attempt fails retryably and goes back to the queue. Any other status
// fails the job for good, with the server's message.
type HTTPRunner struct {
	// URL receives the POST, with headers X-Sluice-Job-Id,
	// X-Sluice-Attempt and X-Sluice-Model.
	URL string
	// Client sends the requests; nil means one with no timeout of its own,
	// since the run timeout already bounds each attempt.
	Client *http.Client
	// MaxOutputBytes bounds the response body; 0 means
	// DefaultMaxOutputBytes.
	MaxOutputBytes int64
	// MaxRetries is how many times one attempt retries a busy server; 0
	// means DefaultHTTPRetries, negative means never.
	MaxRetries int
	// Backoff is the first wait before a retry when the server gives no
	// Retry-After; it doubles each time. 0 means 500ms.
	Backoff time.Duration
	// MaxRetryWait caps any one wait. A server asking for a longer one
	// (Retry-After) is not waited for: the attempt fails retryably at once,
	// so that the job can run elsewhere. 0 means 30s.
	MaxRetryWait time.Duration

	// wait sleeps between tries; tests replace it to run without delays.
	wait func(ctx context.Context, d time.Duration) error
}

// DefaultHTTPRetries is HTTPRunner's retry count when it sets none.
const DefaultHTTPRetries = 3

// errorBodyBytes bounds how much of a failed response is read for its
// message, and errorMessageBytes the message itself.
const (
	errorBodyBytes    = 64 << 10
	errorMessageBytes = 1 << 10
)

// defaultHTTPClient has no Timeout: the run timeout is the attempt's bound.
var defaultHTTPClient = &http.Client{}

// Run POSTs the input, retrying busy answers, and decodes the response.
func (r *HTTPRunner) Run(ctx context.Context, a Assignment, progress Progress) Result {
	if r.URL == "" {
		// Not retryable: every executor configured like this one would fail it.
		return Result{Err: &RunError{Code: "runner_config", Message: "http runner: URL: empty; want http://HOST/PATH"}}
	}
	in, rerr := inputJSON(a)
	if rerr != nil {
		return Result{Err: rerr}
	}
	ctx, cancel := withRunTimeout(ctx, a)
	defer cancel()
	for try := 1; ; try++ {
		res, retryAfter, busy := r.try(ctx, a, in)
		if ctx.Err() != nil {
			return Result{Err: stopped(ctx, a)}
		}
		if busy == nil {
			return res
		}
		if try > r.maxRetries() {
			busy.Message += fmt.Sprintf(" (gave up after %d tries)", try)
			return Result{Err: busy}
		}
		d, giveUp := r.retryWait(ctx, try, retryAfter)
		if giveUp != "" {
			busy.Message += " (" + giveUp + ")"
			return Result{Err: busy}
		}
		if progress != nil {
			progress(0, fmt.Sprintf("%s; retry %d in %v", busy.Message, try, d))
		}
		wait := r.wait
		if wait == nil {
			wait = sleep
		}
		if wait(ctx, d) != nil {
			return Result{Err: stopped(ctx, a)}
		}
	}
}

// try sends one request. A busy answer comes back as busy (a retryable
// error) with the server's Retry-After, if any; any other outcome as res.
func (r *HTTPRunner) try(ctx context.Context, a Assignment, in []byte) (res Result, retryAfter string, busy *RunError) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.URL, bytes.NewReader(in))
	if err != nil {
		return Result{Err: &RunError{Code: "runner_config", Message: "http runner: URL: " + err.Error()}}, "", nil
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("X-Sluice-Job-Id", a.JobID)
	req.Header.Set("X-Sluice-Attempt", strconv.Itoa(int(a.Attempt)))
	req.Header.Set("X-Sluice-Model", a.Model)
	client := r.Client
	if client == nil {
		client = defaultHTTPClient
	}
	resp, err := client.Do(req)
	if err != nil {
		// Connection refused or reset: the server is restarting or
		// overloaded, as good as a 503.
		return Result{}, "", &RunError{Code: "http_unreachable", Message: "http runner: " + err.Error(), Retryable: true}
	}
	defer resp.Body.Close()

	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		limit := r.maxOutput()
		body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
		if err != nil {
			return Result{}, "", &RunError{Code: "http_unreachable", Message: "http runner: reading the response: " + err.Error(), Retryable: true}
		}
		total := resp.ContentLength // -1 when the server streams it
		if total < 0 && int64(len(body)) <= limit {
			total = int64(len(body))
		}
		out, rerr := decodeOutput("http runner response", body, total, limit)
		if rerr != nil {
			return Result{Err: rerr}, "", nil
		}
		return Result{Output: out}, "", nil
	case code == http.StatusTooManyRequests || code >= 500:
		return Result{}, resp.Header.Get("Retry-After"), &RunError{Code: "http_" + strconv.Itoa(code),
			Message: fmt.Sprintf("http runner: %s from %s: %s", resp.Status, r.URL, errorMessage(resp.Body)), Retryable: true}
	default:
		return Result{Err: &RunError{Code: "http_" + strconv.Itoa(code),
			Message: fmt.Sprintf("http runner: %s from %s: %s", resp.Status, r.URL, errorMessage(resp.Body))}}, "", nil
	}
}

// retryWait is how long to wait before retry number try: the server's
// Retry-After when it gives one, else an exponential backoff. giveUp says
// why not to wait at all: the wait is longer than MaxRetryWait or than
// what is left of the run timeout.
func (r *HTTPRunner) retryWait(ctx context.Context, try int, retryAfter string) (d time.Duration, giveUp string) {
	maxWait := r.MaxRetryWait
	if maxWait <= 0 {
		maxWait = 30 * time.Second
	}
	if d, ok := parseRetryAfter(retryAfter, time.Now()); ok {
		if d > maxWait {
			return 0, fmt.Sprintf("Retry-After %v is longer than the %v retry wait limit", d, maxWait)
		}
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < d {
			return 0, fmt.Sprintf("Retry-After %v is past the run timeout", d)
		}
		return d, ""
	}
	d = r.Backoff
	if d <= 0 {
		d = 500 * time.Millisecond
	}
	for i := 1; i < try && d < maxWait; i++ {
		d *= 2
	}
	return min(d, maxWait), ""
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP
// date (RFC 9110 §10.2.3).
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 || secs > int64(24*time.Hour/time.Second) {
			return 0, false
		}
		return time.Duration(secs) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// errorMessage is what a failed response says: its JSON "error" (a string,
// or an object with a "message", as OpenAI-style servers send) or
// "message" field, else the start of the body.
func errorMessage(body io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(body, errorBodyBytes))
	var doc struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
	}
	msg := ""
	if json.Unmarshal(b, &doc) == nil {
		var nested struct {
			Message string `json:"message"`
		}
		switch {
		case json.Unmarshal(doc.Error, &msg) == nil && msg != "":
		case json.Unmarshal(doc.Error, &nested) == nil && nested.Message != "":
			msg = nested.Message
		default:
			msg = doc.Message
		}
	}
	if msg == "" {
		msg = strings.TrimSpace(string(b))
	}
	if msg == "" {
		return "(empty body)"
	}
	if len(msg) > errorMessageBytes {
		msg = strings.ToValidUTF8(msg[:errorMessageBytes], "") + "…"
	}
	return msg
}

func (r *HTTPRunner) maxOutput() int64 {
	if r.MaxOutputBytes > 0 {
		return r.MaxOutputBytes
	}
	return DefaultMaxOutputBytes
}

func (r *HTTPRunner) maxRetries() int {
	switch {
	case r.MaxRetries < 0:
		return 0
	case r.MaxRetries == 0:
		return DefaultHTTPRetries
	}
	return r.MaxRetries
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
