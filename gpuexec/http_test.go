package gpuexec

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
)

// fakeModelServer answers each request with the next of its replies (the
// last one repeats) and records what it was sent.
type fakeModelServer struct {
	mu       sync.Mutex
	replies  []func(w http.ResponseWriter)
	requests []*http.Request
	bodies   []string
}

func (f *fakeModelServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	n := len(f.requests)
	f.requests = append(f.requests, r)
	f.bodies = append(f.bodies, string(body))
	reply := f.replies[min(n, len(f.replies)-1)]
	f.mu.Unlock()
	reply(w)
}

func (f *fakeModelServer) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.requests)
}

func status(code int, headers map[string]string, body string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		for k, v := range headers {
			w.Header().Set(k, v)
		}
		w.WriteHeader(code)
		io.WriteString(w, body)
	}
}

// startFake serves f and returns an HTTPRunner for it whose retry waits
// are recorded instead of slept.
func startFake(t *testing.T, f *fakeModelServer) (*HTTPRunner, *[]time.Duration) {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	var waits []time.Duration
	r := &HTTPRunner{URL: srv.URL + "/generate", wait: func(ctx context.Context, d time.Duration) error {
		waits = append(waits, d)
		return ctx.Err()
	}}
	return r, &waits
}

func TestHTTPRunnerRetriesA503ThenSucceeds(t *testing.T) {
	f := &fakeModelServer{replies: []func(http.ResponseWriter){
		status(503, nil, "warming up"),
		status(200, map[string]string{"Content-Type": "application/json"}, `{"image": "s3://out/1.png"}`),
	}}
	r, waits := startFake(t, f)
	in, _ := structpb.NewStruct(map[string]any{"prompt": "a fox"})
	var p progressLog
	res := r.Run(context.Background(), Assignment{JobID: "17", Attempt: 2, Model: "sdxl", Input: in}, p.report)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if got := res.Output.AsMap()["image"]; got != "s3://out/1.png" {
		t.Fatalf("output %v", res.Output.AsMap())
	}
	if len(*waits) != 1 || (*waits)[0] != 500*time.Millisecond {
		t.Fatalf("waited %v before the retry, want the 500ms first backoff", *waits)
	}
	req := f.requests[1]
	if req.Method != http.MethodPost || req.URL.Path != "/generate" || req.Header.Get("Content-Type") != "application/json" ||
		req.Header.Get("X-Sluice-Job-Id") != "17" || req.Header.Get("X-Sluice-Attempt") != "2" || req.Header.Get("X-Sluice-Model") != "sdxl" {
		t.Fatalf("request %s %s %v", req.Method, req.URL.Path, req.Header)
	}
	var sent map[string]any
	if err := json.Unmarshal([]byte(f.bodies[1]), &sent); err != nil || sent["prompt"] != "a fox" {
		t.Fatalf("sent body %q", f.bodies[1])
	}
	if steps := p.all(); len(steps) != 1 || !strings.Contains(steps[0], "503 Service Unavailable") {
		t.Fatalf("progress %q should tell a watcher why the job waits", steps)
	}
}

func TestHTTPRunnerHonoursRetryAfter(t *testing.T) {
	f := &fakeModelServer{replies: []func(http.ResponseWriter){
		status(429, map[string]string{"Retry-After": "1"}, `{"error": "slow down"}`),
		status(200, nil, `{"ok": true}`),
	}}
	r, waits := startFake(t, f)
	res := r.Run(context.Background(), Assignment{JobID: "1", Attempt: 1}, nil)
	if res.Err != nil || res.Output.AsMap()["ok"] != true {
		t.Fatalf("%+v", res)
	}
	if len(*waits) != 1 || (*waits)[0] != time.Second {
		t.Fatalf("waited %v, want Retry-After's 1s", *waits)
	}
}

func TestHTTPRunnerGivesUpRetryably(t *testing.T) {
	f := &fakeModelServer{replies: []func(http.ResponseWriter){status(502, nil, "bad gateway")}}
	r, waits := startFake(t, f)
	r.MaxRetries = 2
	res := r.Run(context.Background(), Assignment{JobID: "1", Attempt: 1}, nil)
	if res.Err == nil || res.Err.Code != "http_502" || !res.Err.Retryable || !strings.Contains(res.Err.Message, "gave up after 3 tries") {
		t.Fatalf("%+v", res.Err)
	}
	if f.count() != 3 || len(*waits) != 2 || (*waits)[1] != time.Second {
		t.Fatalf("%d requests, waits %v: want 3 requests and backoffs 500ms, 1s", f.count(), *waits)
	}
}

func TestHTTPRunnerDoesNotWaitPastItsLimits(t *testing.T) {
	f := &fakeModelServer{replies: []func(http.ResponseWriter){status(503, map[string]string{"Retry-After": "120"}, "")}}
	r, waits := startFake(t, f)
	res := r.Run(context.Background(), Assignment{JobID: "1", Attempt: 1}, nil)
	if res.Err == nil || !res.Err.Retryable || !strings.Contains(res.Err.Message, "Retry-After 2m0s is longer than the 30s retry wait limit") {
		t.Fatalf("%+v", res.Err)
	}
	r.MaxRetryWait = 5 * time.Minute
	res = r.Run(context.Background(), Assignment{JobID: "1", Attempt: 1, RunTimeout: time.Minute}, nil)
	if res.Err == nil || !res.Err.Retryable || !strings.Contains(res.Err.Message, "past the run timeout") {
		t.Fatalf("%+v", res.Err)
	}
	if len(*waits) != 0 || f.count() != 2 {
		t.Fatalf("waited %v over %d requests", *waits, f.count())
	}
}

func TestHTTPRunnerClientErrorFailsForGood(t *testing.T) {
	for _, tc := range []struct {
		code       int
		body, want string
	}{
		{400, `{"error": {"message": "prompt: 9000 tokens exceeds the 4096-token context", "type": "invalid_request_error"}}`, "400 Bad Request from "},
		{422, `{"error": "steps: must be at most 150"}`, "steps: must be at most 150"},
		{404, `{"message": "no such model"}`, "no such model"},
		{403, strings.Repeat("denied ", 1000), strings.Repeat("denied ", 146) + "de…"},
	} {
		f := &fakeModelServer{replies: []func(http.ResponseWriter){status(tc.code, nil, tc.body)}}
		r, _ := startFake(t, f)
		res := r.Run(context.Background(), Assignment{JobID: "1", Attempt: 1}, nil)
		if res.Err == nil || res.Err.Retryable || res.Err.Code != "http_"+strconv.Itoa(tc.code) || !strings.Contains(res.Err.Message, tc.want) {
			t.Fatalf("%d: %+v", tc.code, res.Err)
		}
		if tc.code == 400 && !strings.HasSuffix(res.Err.Message, ": prompt: 9000 tokens exceeds the 4096-token context") {
			t.Fatalf("400: message %q should end with the server's own", res.Err.Message)
		}
		if f.count() != 1 {
			t.Fatalf("%d: retried a client error %d times", tc.code, f.count()-1)
		}
	}
}

func TestHTTPRunnerRejectsBadBodies(t *testing.T) {
	streamed := func(w http.ResponseWriter) {
		w.WriteHeader(200)
		for range 20 {
			io.WriteString(w, "          ")
			w.(http.Flusher).Flush() // no Content-Length: the size is unknown
		}
	}
	for _, tc := range []struct {
		name  string
		reply func(http.ResponseWriter)
		want  string
	}{
		{"oversize", status(200, nil, `{"text": "`+strings.Repeat("a", 200)+`"}`), "http runner response: 212 bytes exceeds the 100-byte limit"},
		{"oversize streamed", streamed, "http runner response: at least 101 bytes exceeds the 100-byte limit"},
		{"array", status(200, nil, `[{"text": "a"}]`), "http runner response: a JSON array, want an object"},
		{"not json", status(200, nil, `<html>`), `http runner response: not JSON (starts "<html>"); want one JSON object`},
	} {
		f := &fakeModelServer{replies: []func(http.ResponseWriter){tc.reply}}
		r, _ := startFake(t, f)
		r.MaxOutputBytes = 100
		res := r.Run(context.Background(), Assignment{JobID: "1", Attempt: 1}, nil)
		if res.Err == nil || res.Err.Code != "bad_output" || res.Err.Retryable || res.Err.Message != tc.want {
			t.Fatalf("%s: %+v, want %q", tc.name, res.Err, tc.want)
		}
	}
}

func TestHTTPRunnerWithoutURLFailsForGood(t *testing.T) {
	res := (&HTTPRunner{}).Run(context.Background(), Assignment{JobID: "1", Attempt: 1}, nil)
	if res.Err == nil || res.Err.Code != "runner_config" || res.Err.Retryable {
		t.Fatalf("%+v", res.Err)
	}
}

func TestHTTPRunnerRetriesRefusedConnections(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there now
	var waits []time.Duration
	r := &HTTPRunner{URL: url, MaxRetries: 1, wait: func(context.Context, time.Duration) error { waits = append(waits, 0); return nil }}
	res := r.Run(context.Background(), Assignment{JobID: "1", Attempt: 1}, nil)
	if res.Err == nil || res.Err.Code != "http_unreachable" || !res.Err.Retryable || len(waits) != 1 {
		t.Fatalf("%+v after %d waits", res.Err, len(waits))
	}
}

func TestHTTPRunnerStopsOnCancelAndTimeout(t *testing.T) {
	block := make(chan struct{})
	f := &fakeModelServer{replies: []func(http.ResponseWriter){func(http.ResponseWriter) { <-block }}}
	r, _ := startFake(t, f)
	t.Cleanup(func() { close(block) }) // runs before the server's Close

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	res := r.Run(ctx, Assignment{JobID: "1", Attempt: 1}, nil)
	if res.Err == nil || res.Err.Code != "canceled" || !res.Err.Retryable {
		t.Fatalf("canceled: %+v", res.Err)
	}
	res = r.Run(context.Background(), Assignment{JobID: "1", Attempt: 1, RunTimeout: 20 * time.Millisecond}, nil)
	if res.Err == nil || res.Err.Code != "run_timeout" || !res.Err.Retryable {
		t.Fatalf("timed out: %+v", res.Err)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		v  string
		d  time.Duration
		ok bool
	}{
		{"1", time.Second, true},
		{" 30 ", 30 * time.Second, true},
		{"Sun, 01 Mar 2026 12:00:05 GMT", 5 * time.Second, true},
		{"Sun, 01 Mar 2026 11:00:00 GMT", 0, true}, // in the past: retry now
		{"-1", 0, false},
		{"soon", 0, false},
		{"", 0, false},
	} {
		d, ok := parseRetryAfter(tc.v, now)
		if d != tc.d || ok != tc.ok {
			t.Errorf("%q: %v %v, want %v %v", tc.v, d, ok, tc.d, tc.ok)
		}
	}
}
