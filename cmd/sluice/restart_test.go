package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	sluicev1 "github.com/sluicehq/sluice/proto/gen/sluice/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/v1/sluicev1connect"
)

// built is the binary the process tests run, built by the first that
// asks: go build links it anew each time, seconds on a small machine.
var built struct {
	once      sync.Once
	dir, path string
	err       error
}

// buildSluice compiles the binary once for the process tests.
func buildSluice(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "sluice-test-"); built.err != nil {
			return
		}
		built.path = filepath.Join(built.dir, "sluice")
		cmd := exec.Command("go", "build", "-o", built.path, ".")
		cmd.Stderr = os.Stderr
		built.err = cmd.Run()
	})
	if built.err != nil {
		t.Fatalf("go build: %v", built.err)
	}
	return built.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

var servingRE = regexp.MustCompile(`serving on (http://\S+)`)

// startDev starts `sluice dev` as a child process and returns its URL.
func startDev(t *testing.T, bin, data string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(bin, "dev", "--data", data, "--http", "127.0.0.1:0", "--executors", "2", "--lease-grace", "500ms", "--gossip", "127.0.0.1:0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("sluice dev stderr:\n%s", stderr.String())
		}
	})
	lines := bufio.NewScanner(out)
	urlc := make(chan string, 1)
	go func() {
		for lines.Scan() {
			if m := servingRE.FindStringSubmatch(lines.Text()); m != nil {
				urlc <- m[1]
			}
		}
	}()
	select {
	case u := <-urlc:
		waitReady(t, u)
		return cmd, u
	case <-time.After(30 * time.Second):
		t.Fatal("sluice dev did not print its address within 30s")
	}
	return nil, ""
}

func waitReady(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		res, err := http.Get(url + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s not ready within 20s", url)
}

func getJob(t *testing.T, c sluicev1connect.JobServiceClient, id string) *sluicev1.Job {
	t.Helper()
	res, err := c.GetJob(context.Background(), connect.NewRequest(&sluicev1.GetJobRequest{Id: id}))
	if err != nil {
		t.Fatalf("get %s: %v", id, err)
	}
	return res.Msg.Job
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestKill9RestartKeepsEveryJob is the durability promise: after kill -9 of
// a real `sluice dev` process and a restart on the same data dir, every
// admitted job is there, finished ones keep their output, and the ones that
// were running are requeued with the next attempt number and complete.
func TestKill9RestartKeepsEveryJob(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildSluice(t)
	data := t.TempDir()
	cmd, url := startDev(t, bin, data)
	c := sluicev1connect.NewJobServiceClient(http.DefaultClient, url, connect.WithInterceptors(bearerAuth("dev-bob")))

	submit := func(ms int) string {
		in, _ := structpb.NewStruct(map[string]any{"prompt": fmt.Sprintf("job of %d ms", ms), "duration_ms": ms})
		res, err := c.Submit(context.Background(), connect.NewRequest(&sluicev1.SubmitRequest{Spec: &sluicev1.JobSpec{Model: "sdxl", Input: in}}))
		if err != nil {
			t.Fatal(err)
		}
		return res.Msg.Job.Id
	}
	quick := []string{submit(50), submit(50)}
	waitFor(t, "the quick jobs to finish", func() bool {
		for _, id := range quick {
			if getJob(t, c, id).State != sluicev1.JobState_JOB_STATE_SUCCEEDED {
				return false
			}
		}
		return true
	})
	before := map[string]*sluicev1.Job{}
	for _, id := range quick {
		before[id] = getJob(t, c, id)
	}
	// Two long jobs take both executors; two more wait behind them.
	long := []string{submit(1500), submit(1500)}
	waiting := []string{submit(200), submit(200)}
	waitFor(t, "the long jobs to run", func() bool {
		for _, id := range long {
			if getJob(t, c, id).State != sluicev1.JobState_JOB_STATE_RUNNING {
				return false
			}
		}
		return true
	})
	for _, id := range waiting {
		if s := getJob(t, c, id).State; s != sluicev1.JobState_JOB_STATE_QUEUED {
			t.Fatalf("job %s is %v before the kill, want QUEUED", id, s)
		}
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	_, url = startDev(t, bin, data)
	c = sluicev1connect.NewJobServiceClient(http.DefaultClient, url, connect.WithInterceptors(bearerAuth("dev-bob")))
	for _, id := range quick {
		got := getJob(t, c, id)
		if got.State != sluicev1.JobState_JOB_STATE_SUCCEEDED || !proto.Equal(got.Output, before[id].Output) {
			t.Fatalf("finished job %s after restart: %v, output %v; want SUCCEEDED with %v", id, got.State, got.Output, before[id].Output)
		}
	}
	all := append(append([]string{}, long...), waiting...)
	waitFor(t, "every job to finish after the restart", func() bool {
		for _, id := range all {
			if getJob(t, c, id).State != sluicev1.JobState_JOB_STATE_SUCCEEDED {
				return false
			}
		}
		return true
	})
	for _, id := range long {
		j := getJob(t, c, id)
		if j.Attempt != 2 {
			t.Errorf("interrupted job %s finished with attempt %d, want 2", id, j.Attempt)
		}
		var requeued bool
		for _, tr := range j.Transitions {
			if tr.State == sluicev1.JobState_JOB_STATE_QUEUED && strings.Contains(tr.Reason, "executor_lost") {
				requeued = true
			}
		}
		if !requeued {
			t.Errorf("job %s has no requeue transition: %v", id, j.Transitions)
		}
	}
	for _, id := range waiting {
		if j := getJob(t, c, id); j.Attempt != 1 {
			t.Errorf("queued job %s ran %d attempts, want 1", id, j.Attempt)
		}
	}
	res, err := c.ListJobs(context.Background(), connect.NewRequest(&sluicev1.ListJobsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Msg.Jobs) != 6 {
		t.Fatalf("after restart bob has %d jobs, want 6", len(res.Msg.Jobs))
	}
}
