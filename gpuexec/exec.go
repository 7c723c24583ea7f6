package gpuexec

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ExecRunner runs each attempt as a child process, speaking a small protocol
// any language can follow:
//
//   - stdin: the job's input, one JSON object;
//   - stdout: the output, one JSON object (at most MaxOutputBytes);
//   - stderr: lines "progress FRACTION TEXT" report progress; any other line
//     is kept (the last few KiB) for the error message;
//   - exit 0 succeeds, exit 75 (EX_TEMPFAIL) is a retryable failure, any other
//     exit a failure for good;
//   - environment: CUDA_VISIBLE_DEVICES (the assigned GPUs, comma-joined),
//     SLUICE_JOB_ID, SLUICE_ATTEMPT and SLUICE_MODEL, on top of the
//     executor's own;
//   - on cancel or run timeout its whole process group gets SIGTERM, then
//     SIGKILL after Grace.
type ExecRunner struct {
	// Command is the program and its arguments (no shell; ParseRunner wraps
	// "exec:COMMAND" in /bin/sh -c).
	Command []string
	// MaxOutputBytes bounds stdout; 0 means DefaultMaxOutputBytes.
	MaxOutputBytes int64
	// Grace is how long a stopped runner has between SIGTERM and SIGKILL;
	// 0 means DefaultGrace.
	Grace time.Duration
}

// DefaultGrace is ExecRunner's grace period when it sets none: long enough
// for a model server's client to close its connection and flush a log.
const DefaultGrace = 5 * time.Second

// ExitTempFail is the exit status (EX_TEMPFAIL from sysexits.h) by which an
// exec runner asks for its attempt to be retried.
const ExitTempFail = 75

// stderrTailBytes bounds the non-progress stderr kept for an error message,
// and stderrLineBytes one line of it: a runner printing without newlines must
// not grow the executor's memory.
const (
	stderrTailBytes = 4 << 10
	stderrLineBytes = 4 << 10
)

// Run starts Command with the input on stdin and waits for it to exit, or
// stops its process group when ctx is done or the run timeout passes.
func (r *ExecRunner) Run(ctx context.Context, a Assignment, progress Progress) Result {
	if len(r.Command) == 0 {
		return Result{Err: &RunError{Code: "runner_config", Message: "exec runner: Command: empty; want a program to run"}}
	}
	in, rerr := inputJSON(a)
	if rerr != nil {
		return Result{Err: rerr}
	}
	ctx, cancel := withRunTimeout(ctx, a)
	defer cancel()
	if ctx.Err() != nil {
		return Result{Err: stopped(ctx, a)}
	}

	cmd := exec.Command(r.Command[0], r.Command[1:]...)
	cmd.Stdin = bytes.NewReader(in)
	stdout := &cappedBuffer{limit: r.maxOutput()}
	stderr := &stderrLines{progress: progress}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.Env = append(os.Environ(), assignmentEnv(a)...)
	// Its own process group, so that a stop reaches the children a shell
	// script starts (the python under `sh -c`), not just the shell.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A child that outlives the runner keeps stdout open; bound how long
	// Wait waits for it once the runner itself has exited.
	cmd.WaitDelay = r.grace()
	if err := cmd.Start(); err != nil {
		return Result{Err: &RunError{Code: "runner_start", Message: fmt.Sprintf("exec runner: cannot start %q: %v", r.Command[0], err)}}
	}
	pgid := cmd.Process.Pid
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait() // the outcome is read from cmd.ProcessState below
		close(exited)
	}()

	canceled := false
	select {
	case <-exited:
	case <-ctx.Done():
		canceled = true
		r.stop(pgid, exited)
	}
	// Whatever the runner left running in its group would go on holding GPU
	// memory after the attempt ended. The group id cannot have been reused:
	// Linux keeps a pgid while any member lives, and allocates pids in order.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	stderr.flush()
	if canceled {
		return Result{Err: stopped(ctx, a)}
	}
	return r.outcome(cmd.ProcessState, stdout, stderr)
}

// stop sends the group SIGTERM, then SIGKILL if it has not exited after the
// grace period, and returns once Wait has.
func (r *ExecRunner) stop(pgid int, exited <-chan struct{}) {
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	t := time.NewTimer(r.grace())
	defer t.Stop()
	select {
	case <-exited:
	case <-t.C:
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-exited
	}
}

// outcome turns an exit into a Result: the exit status decides success and
// retry, stdout is the output, stderr's tail explains a failure.
func (r *ExecRunner) outcome(state *os.ProcessState, stdout *cappedBuffer, stderr *stderrLines) Result {
	if state == nil { // Wait failed before the process was reaped
		return Result{Err: &RunError{Code: "runner_failed", Message: "exec runner: lost track of the runner process"}}
	}
	status := state.ExitCode()
	if status == 0 {
		out, err := decodeOutput("runner stdout", stdout.buf.Bytes(), stdout.total, r.maxOutput())
		if err != nil {
			return Result{Err: err}
		}
		return Result{Output: out}
	}
	why := fmt.Sprintf("runner exited with status %d", status)
	if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		why = fmt.Sprintf("runner killed by signal %d (%v)", int(ws.Signal()), ws.Signal())
	}
	if tail := stderr.tail(); tail != "" {
		why += "; stderr ends:\n" + tail
	} else {
		why += " (stderr empty)"
	}
	if status == ExitTempFail {
		return Result{Err: &RunError{Code: "runner_tempfail", Message: why, Retryable: true}}
	}
	return Result{Err: &RunError{Code: "runner_failed", Message: why}}
}

func (r *ExecRunner) maxOutput() int64 {
	if r.MaxOutputBytes > 0 {
		return r.MaxOutputBytes
	}
	return DefaultMaxOutputBytes
}

func (r *ExecRunner) grace() time.Duration {
	if r.Grace > 0 {
		return r.Grace
	}
	return DefaultGrace
}

// assignmentEnv is what a runner process learns of its attempt. With no GPUs
// assigned CUDA_VISIBLE_DEVICES is empty, which hides every GPU: a runner
// never uses a GPU it was not given.
func assignmentEnv(a Assignment) []string {
	return []string{
		"CUDA_VISIBLE_DEVICES=" + strings.Join(a.GPUs, ","),
		"SLUICE_JOB_ID=" + a.JobID,
		"SLUICE_ATTEMPT=" + strconv.Itoa(int(a.Attempt)),
		"SLUICE_MODEL=" + a.Model,
	}
}

// stderrLines splits a runner's stderr into lines, reports the progress
// lines and keeps the tail of the rest. os/exec calls Write from one
// goroutine and Wait returns only after it is done, so it needs no lock.
type stderrLines struct {
	progress Progress
	line     []byte // the line being written, at most stderrLineBytes
	kept     []byte // the last stderrTailBytes of non-progress lines
	cut      bool   // kept has lost its beginning
}

func (s *stderrLines) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if room := stderrLineBytes - len(s.line); room > 0 {
			s.line = append(s.line, clip(chunk, room)...)
		}
		if i < 0 {
			break
		}
		s.end()
		p = p[i+1:]
	}
	return n, nil
}

// flush ends a last line written without a newline.
func (s *stderrLines) flush() {
	if len(s.line) > 0 {
		s.end()
	}
}

func (s *stderrLines) end() {
	line := bytes.TrimRight(s.line, "\r")
	s.line = s.line[:0]
	if fraction, text, ok := parseProgress(string(line)); ok {
		if s.progress != nil {
			s.progress(fraction, text)
		}
		return
	}
	s.kept = append(s.kept, line...)
	s.kept = append(s.kept, '\n')
	if over := len(s.kept) - stderrTailBytes; over > 0 {
		s.kept = append(s.kept[:0], s.kept[over:]...)
		s.cut = true
	}
}

func (s *stderrLines) tail() string {
	t := strings.TrimRight(string(s.kept), "\n")
	if s.cut && t != "" {
		t = "…" + t
	}
	return t
}

// parseProgress reads "progress FRACTION TEXT". A fraction outside [0, 1]
// is clamped; a line that does not parse is not progress, and is kept like
// any other stderr line.
func parseProgress(line string) (float64, string, bool) {
	rest, ok := strings.CutPrefix(line, "progress ")
	if !ok {
		return 0, "", false
	}
	num, text, _ := strings.Cut(strings.TrimLeft(rest, " "), " ")
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, "", false
	}
	return min(max(f, 0), 1), text, true
}
