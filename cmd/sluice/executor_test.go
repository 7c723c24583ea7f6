package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sluicehq/sluice/policy"
	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

const executorPolicy = `
tiers: [{name: pro, weight: 1}]
tenants: [{name: bob, tier: pro, api_key_sha256: ["%s"]}]
models:
  - {name: sdxl, default_duration: 2s}
  - {name: llm-http, default_duration: 1s}
admin_token_sha256: "%s"
executor_token_sha256: "%s"
defaults: {max_attempts: 5, retry_backoff: 100ms}
`

// runnerProcesses counts live processes running the example runner script.
func runnerProcesses(t *testing.T) int {
	t.Helper()
	n := 0
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err == nil && strings.Contains(string(b), "progress.sh") && !strings.Contains(string(b), "--runner") {
			n++
		}
	}
	return n
}

// TestExecutorProcessesRunCancelAndSurviveAKill runs a server and three
// `sluice executor` processes that find it through gossip: two run jobs
// with the exec runner script shipped in examples/, one with the http
// runner against a model server that answers 503 first. A watcher sees
// progress; a cancel stops the script (before it would end); kill -9 of the
// executor running a job makes the job finish on the other as attempt 2.
func TestExecutorProcessesRunCancelAndSurviveAKill(t *testing.T) {
	if testing.Short() {
		t.Skip("runs server and executor processes")
	}
	bin := buildSluice(t)
	dir := t.TempDir()
	polFile := filepath.Join(dir, "policy.yaml")
	os.WriteFile(polFile, []byte(fmt.Sprintf(executorPolicy, policy.HashKey("bob-key"), policy.HashKey("admin"), policy.HashKey("exec"))), 0o644)
	script, err := filepath.Abs("../../examples/runners/progress.sh")
	if err != nil {
		t.Fatal(err)
	}
	srv := &server{id: "n1", data: filepath.Join(dir, "n1")}
	srv.args = []string{"--bootstrap", "--policy", polFile, "--gossip", "127.0.0.1:0", "--lease-grace", "1s"}
	srv.start(t, bin)
	gossip := srv.p.waitFor(t, `gossip pool at (\S+) `)
	url := srv.url()
	waitReady(t, url)

	var calls atomic.Int32
	model := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.Header().Set("Retry-After", "0")
			http.Error(w, "warming up", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"text":"a haiku about queues"}`)
	}))
	defer model.Close()

	execs := map[string]*server{}
	for _, e := range []struct{ name, runner, models string }{
		{"e1", "exec:" + script, "sdxl"}, {"e2", "exec:" + script, "sdxl"}, {"e3", "http:" + model.URL, "llm-http"},
	} {
		p := &server{id: e.name}
		execs[e.name] = p
		startExecutor(t, bin, p, gossip, e.runner, e.models)
	}
	admin := sluicev1connect.NewAdminServiceClient(http.DefaultClient, url, connect.WithInterceptors(bearerAuth("admin")))
	waitFor(t, "three executors to lease", func() bool {
		st, err := admin.GetClusterStatus(context.Background(), connect.NewRequest(&sluicev1.GetClusterStatusRequest{}))
		return err == nil && len(st.Msg.Executors) == 3
	})
	jobs := sluicev1connect.NewJobServiceClient(http.DefaultClient, url, connect.WithInterceptors(bearerAuth("bob-key")))
	submit := func(model string, in map[string]any) string {
		s, _ := structpb.NewStruct(in)
		res, err := jobs.Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: model, Input: s}}))
		if err != nil {
			t.Fatal(err)
		}
		return res.Msg.Job.Id
	}

	// Progress reaches a watcher; a cancel stops the script.
	id := submit("sdxl", map[string]any{"duration_ms": 20000})
	ctx, cancelWatch := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancelWatch()
	stream, err := jobs.WatchJob(ctx, connect.NewRequest(&sluicev1.WatchJobRequest{Id: id}))
	if err != nil {
		t.Fatal(err)
	}
	var progress *sluicev1.Job
	for stream.Receive() {
		if j := stream.Msg().Job; j.Progress > 0 {
			progress = j
			break
		}
	}
	stream.Close()
	if progress == nil || !strings.HasPrefix(progress.ProgressText, "step") {
		t.Fatalf("the watcher saw no progress from the script: %v %v", progress, stream.Err())
	}
	t.Logf("watcher saw %.0f%% %q", 100*progress.Progress, progress.ProgressText)
	if runnerProcesses(t) == 0 {
		t.Fatal("no runner script is running: the test would prove nothing")
	}
	canceled := time.Now()
	res, err := jobs.CancelJob(context.Background(), connect.NewRequest(&sluicev1.CancelJobRequest{Id: id}))
	if err != nil {
		t.Fatal(err)
	}
	if res.Msg.Job.State != sluicev1.JobState_JOB_STATE_CANCELED {
		t.Fatalf("job %s is %v after the cancel, want CANCELED", id, res.Msg.Job.State)
	}
	// The script stops when its executor learns of the cancel, at its next
	// heartbeat. It would end by itself 20 s after it started; stopping
	// before that shows the cancel stopped it, however slow the machine.
	ends := progress.StartedAt.AsTime().Add(20 * time.Second)
	if !waitUpTo(time.Until(ends)-time.Second, func() bool { return runnerProcesses(t) == 0 }) {
		t.Fatalf("the script still runs %v after the cancel, a second before it would end by itself", time.Since(canceled).Round(time.Millisecond))
	}
	t.Logf("script stopped %v after the cancel", time.Since(canceled).Round(time.Millisecond))

	// kill -9 of the executor running a job: the job finishes on the other.
	id = submit("sdxl", map[string]any{"duration_ms": 3000})
	var victim string
	waitFor(t, "the job to run", func() bool {
		j := getJob(t, jobs, id)
		victim = j.Executor
		return j.State == sluicev1.JobState_JOB_STATE_RUNNING
	})
	execs[victim].kill()
	waitFor(t, "the job to finish elsewhere", func() bool {
		return getJob(t, jobs, id).State == sluicev1.JobState_JOB_STATE_SUCCEEDED
	})
	j := getJob(t, jobs, id)
	if j.Attempt != 2 || j.Executor == victim {
		t.Fatalf("after killing %s the job ran attempt %d on %s, want attempt 2 elsewhere", victim, j.Attempt, j.Executor)
	}

	// The http runner retries the model server's 503 and returns its answer.
	id = submit("llm-http", map[string]any{"prompt": "a haiku about queues"})
	waitFor(t, "the http job", func() bool { return getJob(t, jobs, id).State == sluicev1.JobState_JOB_STATE_SUCCEEDED })
	if out := getJob(t, jobs, id).Output.AsMap(); out["text"] != "a haiku about queues" || calls.Load() != 2 {
		t.Fatalf("http job output %v after %d calls, want the second call's answer", out, calls.Load())
	}
}

func startExecutor(t *testing.T, bin string, p *server, gossip, runner, models string) {
	t.Helper()
	p.args = []string{"executor", "--name", p.id, "--join", gossip, "--runner", runner, "--models", models,
		"--token", "exec", "--grace", "500ms", "--refresh", "500ms"}
	p.startRaw(t, bin)
}
