package gpuexec

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
)

// progressLog records progress reports; the exec runner calls it from
// os/exec's stderr goroutine.
type progressLog struct {
	mu    sync.Mutex
	steps []string
}

func (p *progressLog) report(f float64, text string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.steps = append(p.steps, fmt.Sprintf("%g %s", f, text))
}

func (p *progressLog) all() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.steps...)
}

func script(name string, args ...string) []string {
	return append([]string{"/bin/sh", filepath.Join("testdata", name)}, args...)
}

// outlives says whether pid is still running a second after the attempt
// ended: SIGKILL is delivered asynchronously, so a killed process may show for
// a moment. A zombie counts as dead (PID 1 in a container may never reap it).
func outlives(pid int) bool {
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return false
		}
		// The state follows the parenthesised command name.
		s := string(stat)
		if strings.HasPrefix(strings.TrimSpace(s[strings.LastIndexByte(s, ')')+1:]), "Z") {
			return false
		}
	}
	return true
}

func readPID(t *testing.T, file string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("the runner wrote no child pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("child pid file: %v", err)
	}
	return pid
}

func TestExecRunnerPassesInputEnvAndProgress(t *testing.T) {
	in, _ := structpb.NewStruct(map[string]any{"prompt": "a fox", "steps": 30})
	r := &ExecRunner{Command: script("echo-env.sh")}
	var p progressLog
	res := r.Run(context.Background(), Assignment{JobID: "42", Attempt: 3, Model: "sdxl", Input: in,
		GPUs: []string{"GPU-aaaa", "MIG-bbbb"}}, p.report)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	out := res.Output.AsMap()
	if out["cuda"] != "GPU-aaaa,MIG-bbbb" || out["job"] != "42" || out["attempt"] != "3" || out["model"] != "sdxl" {
		t.Fatalf("runner saw env %v", out)
	}
	if got := out["input"].(map[string]any); got["prompt"] != "a fox" || got["steps"] != 30.0 {
		t.Fatalf("runner saw input %v", got)
	}
	if got := p.all(); strings.Join(got, "|") != "0.5 read the input|1 done" {
		t.Fatalf("progress %q", got)
	}
}

func TestExecRunnerEmptyGPUListHidesEveryGPU(t *testing.T) {
	t.Setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3") // the executor's own must not leak through
	r := &ExecRunner{Command: script("echo-env.sh")}
	res := r.Run(context.Background(), Assignment{JobID: "1", Attempt: 1}, nil)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if got := res.Output.AsMap()["cuda"]; got != "" {
		t.Fatalf("CUDA_VISIBLE_DEVICES=%q with no GPUs assigned", got)
	}
}

func TestExecRunnerExitStatusDecidesRetry(t *testing.T) {
	for _, tc := range []struct {
		status    string
		code      string
		retryable bool
	}{
		{"75", "runner_tempfail", true},
		{"1", "runner_failed", false},
		{"3", "runner_failed", false},
	} {
		var p progressLog
		res := (&ExecRunner{Command: script("fail.sh", tc.status)}).Run(context.Background(), Assignment{JobID: "1", Attempt: 1}, p.report)
		if res.Err == nil || res.Err.Code != tc.code || res.Err.Retryable != tc.retryable {
			t.Fatalf("exit %s: %+v", tc.status, res.Err)
		}
		msg := res.Err.Message
		if !strings.Contains(msg, "status "+tc.status) || !strings.Contains(msg, "loading weights\nCUDA out of memory") || strings.Contains(msg, "warming up") {
			t.Fatalf("exit %s: message %q should name the status and carry stderr without progress lines", tc.status, msg)
		}
		if got := p.all(); len(got) != 1 || got[0] != "0.3 warming up" {
			t.Fatalf("exit %s: progress %q", tc.status, got)
		}
	}
}

func TestExecRunnerRejectsBadOutput(t *testing.T) {
	for _, tc := range []struct {
		name, cmd string
		limit     int64
		want      string
	}{
		{"not json", `echo "hello there"`, 0, `runner stdout: not JSON (starts "hello there"); want one JSON object`},
		{"array", `echo '[1, 2]'`, 0, "runner stdout: a JSON array, want an object"},
		{"empty", `true`, 0, "runner stdout: empty; want one JSON object"},
		{"oversize", `head -c 1048577 /dev/zero | tr '\0' ' '`, 0, "runner stdout: 1048577 bytes exceeds the 1048576-byte limit"},
		{"own limit", `echo '{"text": "more than ten bytes"}'`, 10, "runner stdout: 32 bytes exceeds the 10-byte limit"},
	} {
		r := &ExecRunner{Command: []string{"/bin/sh", "-c", tc.cmd}, MaxOutputBytes: tc.limit}
		res := r.Run(context.Background(), Assignment{JobID: "1", Attempt: 1}, nil)
		if res.Err == nil || res.Err.Code != "bad_output" || res.Err.Retryable || res.Err.Message != tc.want {
			t.Fatalf("%s: %+v, want %q", tc.name, res.Err, tc.want)
		}
	}
}

func TestExecRunnerCancelKillsTheWholeGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	r := &ExecRunner{Command: script("stubborn.sh", pidFile), Grace: 100 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	var once sync.Once
	progress := func(float64, string) { once.Do(func() { close(started) }) }
	done := make(chan Result)
	go func() { done <- r.Run(ctx, Assignment{JobID: "1", Attempt: 1}, progress) }()
	select {
	case <-started:
	case res := <-done:
		t.Fatalf("runner ended before it started its child: %+v", res.Err)
	}
	child := readPID(t, pidFile)
	canceledAt := time.Now()
	cancel()
	res := <-done
	// SIGTERM is ignored, so this bound holds only if SIGKILL followed
	// the 100ms grace period.
	if took := time.Since(canceledAt); took > 2*time.Second {
		t.Fatalf("runner took %v to stop after cancel", took)
	}
	if res.Err == nil || res.Err.Code != "canceled" || !res.Err.Retryable {
		t.Fatalf("canceled run: %+v", res.Err)
	}
	if outlives(child) {
		t.Fatalf("the runner's child %d outlived the attempt", child)
	}
}

func TestExecRunnerTimeoutIsRunTimeout(t *testing.T) {
	r := &ExecRunner{Command: []string{"/bin/sh", "-c", "sleep 30"}, Grace: 100 * time.Millisecond}
	res := r.Run(context.Background(), Assignment{JobID: "1", Attempt: 2, RunTimeout: 50 * time.Millisecond}, nil)
	if res.Err == nil || res.Err.Code != "run_timeout" || !res.Err.Retryable || !strings.Contains(res.Err.Message, "attempt 2") {
		t.Fatalf("timed-out run: %+v", res.Err)
	}
}

func TestExecRunnerKillsWhatTheRunnerLeftBehind(t *testing.T) {
	for _, tc := range []struct {
		name string
		cmd  []string
	}{
		// The orphan has let go of stdout: Wait returns at once.
		{"detached", script("orphan.sh")},
		// The orphan holds stdout open: Wait gives up after the grace.
		{"holding stdout", []string{"/bin/sh", "-c", `sleep 60 & echo $! > "$0"; echo '{"done": true}'`}},
	} {
		pidFile := filepath.Join(t.TempDir(), "child.pid")
		r := &ExecRunner{Command: append(tc.cmd, pidFile), Grace: 200 * time.Millisecond}
		res := r.Run(context.Background(), Assignment{JobID: "1", Attempt: 1}, nil)
		if res.Err != nil || res.Output.AsMap()["done"] != true {
			t.Fatalf("%s: %+v", tc.name, res)
		}
		if child := readPID(t, pidFile); outlives(child) {
			t.Fatalf("%s: background child %d outlived the attempt", tc.name, child)
		}
	}
}

func TestExecRunnerReportsStartFailure(t *testing.T) {
	res := (&ExecRunner{Command: []string{"testdata/no-such-runner"}}).Run(context.Background(), Assignment{JobID: "1", Attempt: 1}, nil)
	if res.Err == nil || res.Err.Code != "runner_start" || !strings.Contains(res.Err.Message, "no-such-runner") {
		t.Fatalf("missing program: %+v", res.Err)
	}
}

func TestStderrLinesBoundsWhatItKeeps(t *testing.T) {
	s := &stderrLines{}
	// One endless line, then many short ones: neither may grow memory.
	s.Write([]byte(strings.Repeat("x", 100_000)))
	s.Write([]byte("\n"))
	for i := range 2000 {
		fmt.Fprintf(s, "line %d\n", i)
	}
	s.Write([]byte("last words without newline"))
	s.flush()
	if len(s.line) != 0 || len(s.kept) > stderrTailBytes {
		t.Fatalf("holding %d bytes of line and %d of tail", len(s.line), len(s.kept))
	}
	tail := s.tail()
	if !strings.HasPrefix(tail, "…") || !strings.HasSuffix(tail, "line 1999\nlast words without newline") {
		t.Fatalf("tail %q", tail)
	}
}

func TestParseProgress(t *testing.T) {
	for _, tc := range []struct {
		line string
		f    float64
		text string
		ok   bool
	}{
		{"progress 0.42 denoising step 21/50", 0.42, "denoising step 21/50", true},
		{"progress 1", 1, "", true},
		{"progress 1.7 too far", 1, "too far", true},
		{"progress -3 before start", 0, "before start", true},
		{"progress NaN x", 0, "", false},
		{"progress half way", 0, "", false},
		{"Progress 0.5 x", 0, "", false},
		{"progressive 0.5", 0, "", false},
	} {
		f, text, ok := parseProgress(tc.line)
		if f != tc.f || text != tc.text || ok != tc.ok {
			t.Errorf("%q: got %v %q %v", tc.line, f, text, ok)
		}
	}
}
