package gpuexec

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
)

// The example runners in examples/runners, run as an executor would run
// them: through ExecRunner.

const (
	progressExample = "../examples/runners/progress.sh"
	openAIExample   = "../examples/runners/openai-completions.py"
)

func TestProgressExampleReportsTenStepsAndEchoes(t *testing.T) {
	in, _ := structpb.NewStruct(map[string]any{"duration_ms": 100, "prompt": `a "quoted" fox`})
	var p progressLog
	res := (&ExecRunner{Command: []string{progressExample}}).Run(context.Background(),
		Assignment{JobID: "9", Attempt: 2, Model: "sdxl", Input: in}, p.report)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	out := res.Output.AsMap()
	if out["ok"] != true || out["job_id"] != "9" || out["attempt"] != 2.0 || out["model"] != "sdxl" ||
		out["input"].(map[string]any)["prompt"] != `a "quoted" fox` {
		t.Fatalf("output %v", out)
	}
	steps := p.all()
	if len(steps) != 10 || steps[0] != "0.1 step 1/10" || steps[9] != "1 step 10/10" {
		t.Fatalf("progress %q", steps)
	}
}

func TestProgressExampleStopsOnSIGTERM(t *testing.T) {
	in, _ := structpb.NewStruct(map[string]any{"duration_ms": 600_000})
	// A grace far longer than the test's bound: only the script's own exit
	// on SIGTERM, not SIGKILL, can end the run in time.
	r := &ExecRunner{Command: []string{progressExample}, Grace: time.Minute}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	done := make(chan Result, 1)
	go func() { done <- r.Run(ctx, Assignment{JobID: "1", Attempt: 1, Input: in}, nil) }()
	select {
	case res := <-done:
		if res.Err == nil || res.Err.Code != "canceled" {
			t.Fatalf("%+v", res.Err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("progress.sh did not exit on SIGTERM")
	}
}

func TestProgressExampleRejectsTooLongADuration(t *testing.T) {
	in, _ := structpb.NewStruct(map[string]any{"duration_ms": 99_999_999})
	res := (&ExecRunner{Command: []string{progressExample}}).Run(context.Background(), Assignment{JobID: "1", Attempt: 1, Input: in}, nil)
	if res.Err == nil || res.Err.Retryable || !strings.Contains(res.Err.Message, "input.duration_ms: 99999999 exceeds the 3600000 ms (one hour) limit") {
		t.Fatalf("%+v", res.Err)
	}
}

// fakeCompletions is an OpenAI-compatible /v1/completions endpoint that
// answers with status (and, for 200, a completion).
func fakeCompletions(t *testing.T, status int) (*httptest.Server, *[]map[string]any) {
	t.Helper()
	var mu sync.Mutex
	var got []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req map[string]any
		body, _ := io.ReadAll(r.Body)
		json.Unmarshal(body, &req)
		req["_path"], req["_auth"] = r.URL.Path, r.Header.Get("Authorization")
		mu.Lock()
		got = append(got, req)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		if status != http.StatusOK {
			io.WriteString(w, `{"error": {"message": "server says no", "type": "invalid_request_error"}}`)
			return
		}
		io.WriteString(w, `{"id": "cmpl-1", "object": "text_completion", "model": "llama-8b",
			"choices": [{"index": 0, "text": " a quick brown fox", "finish_reason": "length"}],
			"usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}`)
	}))
	t.Cleanup(srv.Close)
	return srv, &got
}

func needPython(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not on PATH: openai-completions.py cannot run here")
	}
}

func TestOpenAIExampleCallsCompletions(t *testing.T) {
	needPython(t)
	srv, got := fakeCompletions(t, http.StatusOK)
	t.Setenv("OPENAI_BASE_URL", srv.URL+"/v1") // the SDKs' form; the script drops the /v1
	t.Setenv("OPENAI_API_KEY", "sk-test")
	t.Setenv("OPENAI_MODEL", "")
	in, _ := structpb.NewStruct(map[string]any{"prompt": "Once upon a time", "max_tokens": 5, "temperature": 0.2})
	var p progressLog
	res := (&ExecRunner{Command: []string{openAIExample}}).Run(context.Background(),
		Assignment{JobID: "3", Attempt: 1, Model: "llama-8b", Input: in}, p.report)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	choices := res.Output.AsMap()["choices"].([]any)
	if choices[0].(map[string]any)["text"] != " a quick brown fox" {
		t.Fatalf("output %v", res.Output.AsMap())
	}
	req := (*got)[0]
	if req["_path"] != "/v1/completions" || req["_auth"] != "Bearer sk-test" || req["model"] != "llama-8b" ||
		req["prompt"] != "Once upon a time" || req["max_tokens"] != 5.0 || req["temperature"] != 0.2 {
		t.Fatalf("server got %v", req)
	}
	steps := p.all()
	if len(steps) != 2 || !strings.HasPrefix(steps[0], "0.05 POST "+srv.URL+"/v1/completions") || steps[1] != "1 done: 5 tokens" {
		t.Fatalf("progress %q", steps)
	}
}

func TestOpenAIExampleExitStatusSaysWhetherToRetry(t *testing.T) {
	needPython(t)
	busy, _ := fakeCompletions(t, http.StatusServiceUnavailable)
	limited, _ := fakeCompletions(t, http.StatusTooManyRequests)
	bad, _ := fakeCompletions(t, http.StatusBadRequest)
	// Closed after the others are listening, so that none of them is given
	// its port (which made the "refused" case reach the 503 server).
	refused := httptest.NewServer(http.NotFoundHandler())
	refused.Close()
	in, _ := structpb.NewStruct(map[string]any{"prompt": "hi"})
	for _, tc := range []struct {
		name, url, code, says string
		retryable             bool
	}{
		{"503", busy.URL, "runner_tempfail", "HTTP 503", true},
		{"429", limited.URL, "runner_tempfail", "HTTP 429", true},
		{"refused", refused.URL, "runner_tempfail", "Connection refused", true},
		{"400", bad.URL, "runner_failed", "server says no", false},
	} {
		t.Setenv("OPENAI_BASE_URL", tc.url)
		res := (&ExecRunner{Command: []string{openAIExample}}).Run(context.Background(), Assignment{JobID: "1", Attempt: 1, Input: in}, nil)
		if res.Err == nil || res.Err.Code != tc.code || res.Err.Retryable != tc.retryable || !strings.Contains(res.Err.Message, tc.says) {
			t.Errorf("%s: %+v", tc.name, res.Err)
		}
	}
	noPrompt := (&ExecRunner{Command: []string{openAIExample}}).Run(context.Background(), Assignment{JobID: "1", Attempt: 1}, nil)
	if noPrompt.Err == nil || noPrompt.Err.Retryable || !strings.Contains(noPrompt.Err.Message, "input.prompt: missing") {
		t.Errorf("no prompt: %+v", noPrompt.Err)
	}
}
